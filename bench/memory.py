"""Server memory per idle Socket.IO viewer, reproducibly.

    .venv/bin/python bench/memory.py [--n 1000] [--instances 200] [--workers 1] [--redis]
        [--client-deflate] [--server-cmd "CMD {port}"] [--env K=V ...] [--label NAME]

Starts the relay (`relay serve`, or --server-cmd with `{port}` in it, run from the repo root) as
its own process group, then opens N idle viewers over --instances instances from separate client
processes (bench/viewers.py: the raw Engine.IO/Socket.IO handshake of tests/support/rawsio.py over
`websockets`, pings answered for as long as they run).

Server RSS = VmRSS summed over the server's process tree (uvicorn supervisor + workers), sampled
once it has stayed within --tolerance KiB for --settle seconds: before any viewer, after N/2 and
after N. Prints KB per viewer: total ((all - before) / N) and marginal ((all - half) / (N - N/2)),
the latter free of one-time growth (first-connection imports, pools, arena warm-up).

--client-deflate makes the clients offer permessage-deflate like every browser does (the default,
like bench/run.py, offers none). --json appends one result line to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, sys.path[0] is bench/ (its sibling modules); the repo root makes the helpers
# shared with the test suite importable as `tests.support`.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from viewers import ViewerPool, ViewerSpec  # noqa: E402

from tests.support.clients import token  # noqa: E402
from tests.support.fixtures import REPO  # noqa: E402
from tests.support.procs import ManagedProcess, free_port, wait_healthy  # noqa: E402
from tests.support.proctree import process_tree, rss_bytes, settled_rss  # noqa: E402
from tests.support.redis import RedisServer  # noqa: E402
from tests.support.relay import RelayProcess, process_env  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="viewers (default 1000)")
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--workers", type=int, default=1, help="relay workers (>1 implies --redis)")
    p.add_argument("--redis", action="store_true",
                   help="start a redis-server and set RELAY_REDIS_URL")
    p.add_argument("--server-cmd",
                   help="server command instead of `relay serve`; {port} is replaced")
    p.add_argument("--env", action="append", default=[], help="extra server env K=V (repeatable)")
    p.add_argument("--client-deflate", action="store_true",
                   help="offer permessage-deflate, as browsers do")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    p.add_argument("--settle", type=float, default=3.0, help="seconds RSS must stay flat")
    p.add_argument("--tolerance", type=int, default=256, help="KiB of RSS spread still 'flat'")
    p.add_argument("--settle-timeout", type=float, default=30.0)
    p.add_argument("--label", default="")
    p.add_argument("--json", help="append one JSON result line to this file")
    p.add_argument("--sigusr1", action="store_true",
                   help="send SIGUSR1 to the server tree after each settled sample (e.g. for a "
                        "tracemalloc snapshot in a scratch launcher)")
    a = p.parse_args()
    if a.n < 2 or a.instances < 1 or a.workers < 1:
        p.error("--n must be >= 2, --instances and --workers >= 1")
    a.redis = a.redis or a.workers > 1
    return a


class Measurement:
    """The server's idle RSS as viewers join, in two halves."""

    def __init__(self, a: argparse.Namespace, port: int, root: int) -> None:
        self.a = a
        self.port = port
        self.root = root
        self.pool = ViewerPool(token("*"), "MEMORY", a.concurrency, a.client_deflate)
        self.next_index = 0

    async def connect(self, count: int) -> int:
        """Open ``count`` more viewers in a new client process; returns how many subscribed."""
        first, self.next_index = self.next_index, self.next_index + count
        specs = [ViewerSpec(index=k, port=self.port, instance=f"i{k % self.a.instances}")
                 for k in range(first, first + count)]
        self.pool.add(specs, 1)
        ok, errors = await self.pool.wait_ready(timeout=60 + count / 20)
        if len(ok) < count:
            print(f"  {count - len(ok)} viewers failed: {errors[:1]}", file=sys.stderr)
        return len(ok)

    async def rss_kib(self) -> int:
        """The tree's settled RSS (then SIGUSR1 to the tree when asked)."""
        a = self.a
        rss, settled = await asyncio.to_thread(settled_rss, [self.root], a.settle,
                                               a.tolerance * 1024, a.settle_timeout)
        if not settled:
            print(f"  (RSS did not settle within {a.settle_timeout:.0f}s)", file=sys.stderr)
        if a.sigusr1:
            for pid in process_tree([self.root]):
                os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(5)
        return rss // 1024

    async def run(self) -> dict[str, Any]:
        a = self.a
        try:
            # A warm-up viewer on a throwaway instance would skew "before"; instead the first
            # half absorbs one-time costs and the marginal figure excludes them.
            rss0 = await self.rss_kib()
            ok1 = await self.connect(a.n // 2)
            rss_half = await self.rss_kib()
            ok2 = await self.connect(a.n - a.n // 2)
            rss1 = await self.rss_kib()
            procs = {pid: rss_bytes([pid]) // 1024 for pid in process_tree([self.root])}
        finally:
            await self.pool.close()
        label = a.label or "relay serve" + (f" --workers {a.workers}" if a.workers > 1 else "")
        return {"label": label, "workers": a.workers, "redis": a.redis,
                "deflate_offered": a.client_deflate, "n": ok1 + ok2, "failed": a.n - ok1 - ok2,
                "rss_before_mib": rss0 / 1024, "rss_half_mib": rss_half / 1024,
                "rss_all_mib": rss1 / 1024, "kib_per_viewer": (rss1 - rss0) / max(1, ok1 + ok2),
                "kib_marginal": (rss1 - rss_half) / max(1, ok2), "per_process_kib": procs}


def start_server(a: argparse.Namespace, env: dict[str, str]) -> tuple[int, ManagedProcess]:
    """The server under test on a free port, healthy, with all its workers up."""
    port = free_port()
    if a.server_cmd:
        cmd = shlex.split(a.server_cmd.replace("{port}", str(port)))
        proc = ManagedProcess(f"server-{port}", cmd, env=process_env(env), cwd=REPO)
        wait_healthy(f"http://127.0.0.1:{port}/healthz", [proc], 30)
    else:
        relay = RelayProcess(env, ["--workers", str(a.workers)] if a.workers > 1 else [], port=port)
        relay.start(30)
        assert relay.proc is not None
        proc = relay.proc
    deadline = time.monotonic() + 30  # supervisor + every worker
    while a.workers > 1 and len(process_tree([proc.pid])) < a.workers + 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{a.workers} workers did not all start")
        time.sleep(0.2)
    return port, proc


def main() -> int:
    """Measure, print one Markdown row (and append JSON when asked)."""
    a = parse_args()
    env = {k: v for k, _, v in (kv.partition("=") for kv in a.env)}
    redis = RedisServer() if a.redis else None
    server: ManagedProcess | None = None
    try:
        if redis is not None:
            redis.start()
            env.setdefault("RELAY_REDIS_URL", redis.url)
        port, server = start_server(a, env)
        res = asyncio.run(Measurement(a, port, server.pid).run())
    finally:
        if server is not None:
            server.stop()
        if redis is not None:
            redis.stop()
    deflate = " (client offers deflate)" if a.client_deflate else ""
    print()
    print("| configuration | viewers | RSS before / N/2 / N (MiB) | KiB/viewer total "
          "| KiB/viewer marginal |")
    print("|---|---:|---|---:|---:|")
    print(f"| {res['label']}{deflate} | {res['n']} | {res['rss_before_mib']:.1f} / "
          f"{res['rss_half_mib']:.1f} / {res['rss_all_mib']:.1f} | {res['kib_per_viewer']:.1f} "
          f"| {res['kib_marginal']:.1f} |")
    print(f"per-process VmRSS KiB at N: {res['per_process_kib']}")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
