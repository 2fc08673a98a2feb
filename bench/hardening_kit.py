"""What every row of bench/hardening.py needs: the relays and redis-servers of one run (started
as real ``relay serve`` processes, stopped at the end and on Ctrl-C), their CPU, RSS, open files
and logs from /proc and their log files, and a few timed HTTP calls."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.procs import ManagedProcess, free_port
from tests.support.proctree import cpu_seconds, process_tree, rss_bytes
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess, process_env

# `relay serve`'s own default log level: the lines an operator would see (tests run at warning).
BASE_ENV = {"RELAY_LOG_LEVEL": "info"}
HOOK_SECRET = "bench-hook-secret-0123456789-abcdef"  # RELAY_WEBHOOK_SECRET where a row needs one


@dataclass
class Finding:
    """One row as measured by this run."""

    num: int
    how: str  # reproduced by (this run: sizes, counts, and what was scaled down)
    now: str  # seen now (measured)
    problems: list[str] = field(default_factory=list)  # what did not hold, with evidence
    seconds: float = 0.0


class Lab:
    """Everything one run starts, under one log folder; ``stop`` ends it all (tests.support's
    atexit sweep catches what an error path leaves)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.relays: list[RelayProcess] = []
        self.redises: list[RedisServer] = []

    def relay(self, name: str, env: dict[str, str] | None = None, args: list[str] | None = None,
              preexec: Callable[[], None] | None = None) -> RelayProcess:
        """``relay serve`` on 127.0.0.1 on a free port, healthy; its log in the run's folder."""
        port = free_port()
        relay = RelayProcess({**BASE_ENV, **(env or {})}, args,
                             log_path=self.log_dir / f"relay-{name}-{port}.log", port=port)
        relay.preexec = preexec
        self.relays.append(relay)
        relay.start(60)
        return relay

    def redis(self) -> RedisServer:
        redis = RedisServer(log_dir=self.log_dir)
        self.redises.append(redis)
        redis.start()
        return redis

    def pair(self, name: str, env: dict[str, str] | None = None
             ) -> tuple[RedisServer, RelayProcess, RelayProcess]:
        """A private redis-server and two relay workers on it (two ``relay serve`` processes, one
        port each, so that each worker can be addressed, measured and probed on its own)."""
        redis = self.redis()
        both = {"RELAY_REDIS_URL": redis.url, **(env or {})}
        return redis, self.relay(f"{name}-w1", both), self.relay(f"{name}-w2", both)

    def done(self, *procs: RelayProcess | RedisServer) -> None:
        """Stop some of them now (a row's relays, before the next row measures CPU)."""
        for proc in procs:
            proc.stop()
            if isinstance(proc, RelayProcess) and proc in self.relays:
                self.relays.remove(proc)
            elif isinstance(proc, RedisServer) and proc in self.redises:
                self.redises.remove(proc)

    def stop(self) -> None:
        for relay in self.relays:
            with contextlib.suppress(Exception):
                relay.stop()
        for redis in self.redises:
            with contextlib.suppress(Exception):
                redis.stop()
        self.relays.clear()
        self.redises.clear()


def refusal(env: dict[str, str], args: list[str], log_dir: Path, name: str,
            wait: float = 15.0) -> tuple[int | None, str]:
    """Start ``relay serve`` expecting it to refuse: (exit code, its last output line); exit code
    None when it was still running after ``wait`` s (it started: stopped here)."""
    proc = ManagedProcess(f"refusal-{name}", [sys.executable, "-m", "relay", "serve", *args],
                          env=process_env({**BASE_ENV, **env}), log_path=log_dir / f"refusal-{name}.log")
    deadline = time.monotonic() + wait
    while proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    code = proc.popen.returncode if not proc.alive() else None
    lines = [line for line in proc.output(4000).splitlines() if line.strip()]
    proc.stop(grace=2.0)
    return code, lines[-1] if lines else ""


# -- /proc and logs ---------------------------------------------------------------------------
def tree(relay: RelayProcess) -> list[int]:
    return process_tree([relay.pid])


def cpu(relay: RelayProcess) -> float:
    return cpu_seconds(tree(relay))


def rss_mb(relay: RelayProcess) -> float:
    return rss_bytes(tree(relay)) / 2**20


def open_files(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return -1


def log_size(relay: RelayProcess) -> int:
    assert relay.log_path is not None
    return relay.log_path.stat().st_size


def log_since(relay: RelayProcess, offset: int = 0) -> str:
    assert relay.log_path is not None
    with relay.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def levels(text: str) -> dict[str, int]:
    """Lines per level in a stretch of the relay's log (LOG_FORMAT: time LEVEL logger: text)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(" ", 3)
        kind = parts[2] if len(parts) > 2 and parts[2].isupper() else "other"
        out[kind] = out.get(kind, 0) + 1
    return out


def quote(text: str, limit: int = 160) -> str:
    """A log line for a table cell: no pipes, bounded."""
    text = text.strip().replace("|", "/")
    return text if len(text) <= limit else text[:limit] + "…"


# -- HTTP ---------------------------------------------------------------------------------------
async def timed(method: str, url: str, *, timeout: float = 10.0, **kw: Any) -> tuple[int, float, Any]:
    """(status, seconds, body) of one request on a fresh connection (as a balancer's probe);
    status 0 when it failed or timed out."""
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.request(method, url, **kw) as resp:
                raw = await resp.read()
                try:
                    body: Any = await resp.json(content_type=None)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                return resp.status, time.monotonic() - start, body
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        return 0, time.monotonic() - start, repr(err)


async def status_of(url: str, timeout: float = 5.0) -> int:
    """The status of a GET as soon as its headers arrive (an SSE stream never ends); 0: none."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url) as resp:
                return resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return 0


class Prober:
    """GET ``url`` every ``every`` s in the background, each on a fresh connection; keeps
    (start offset, status, seconds). Probes overlap when one is slow, as a balancer's do."""

    def __init__(self, url: str, every: float = 0.1, timeout: float = 15.0) -> None:
        self.url, self.every, self.timeout = url, every, timeout
        self.samples: list[tuple[float, int, float]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self.t0 = time.monotonic()

    async def _one(self) -> None:
        at = time.monotonic() - self.t0
        status, took, _ = await timed("GET", self.url, timeout=self.timeout)
        self.samples.append((at, status, took))

    async def _run(self) -> None:
        while True:
            task = asyncio.create_task(self._one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(self.every)

    def start(self) -> "Prober":
        self.t0 = time.monotonic()
        self._loop = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def summary(self) -> str:
        if not self.samples:
            return "no probe answered"
        took = [s[2] for s in self.samples]
        ok = sum(1 for s in self.samples if s[1] == 200)
        return (f"{ok}/{len(took)} answered 200, median {ms(statistics.median(took))}, "
                f"max {ms(max(took))}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
