"""One configuration of bench/storm.py: a private redis-server (Redis configuration) and
``relay serve`` started, viewers subscribed, an idle window measured, then the storm (a warm-up,
then the measured window), with the relay's process tree CPU, redis-server CPU, the load
generator's own CPU, the machine's busy time, the relay's log and Redis's commandstats read at
each edge. Everything it starts is stopped at the end, on errors and on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from hardening_clients import RawViewer
from storm_load import Storm

from tests.support.clients import token
from tests.support.proctree import cpu_seconds, machine_busy_seconds, process_tree, rss_bytes
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess

STALL_LINE = "no QR code for instance"  # relay.core.Relay._report_stall
DRAIN = 30.0  # seconds the answers still due after the storm are waited for


@dataclass
class Mark:
    """Counters at one instant."""

    t: float
    relay: dict[int, float]  # pid -> CPU seconds (the relay's process tree)
    redis: float  # redis-server CPU seconds
    client: float  # this process's CPU seconds (webhooks and viewers)
    busy: float  # CPU seconds of the whole machine
    log: int  # relay log size, bytes
    commands: dict[str, int]  # Redis command -> calls
    rss: int  # the relay's process tree, bytes
    redis_mem: tuple[int, int]  # Redis used_memory bytes, keys


@dataclass
class Window:
    """What changed between two marks."""

    seconds: float
    relay: float
    per_pid: dict[int, float]
    redis: float
    client: float
    other: float  # CPU of unrelated programs on the machine
    log_text: str
    commands: dict[str, int]
    rss: tuple[int, int]  # the relay's RSS at the start and the end
    redis_mem: tuple[int, int]  # growth of Redis used_memory (bytes) and of its keys


@dataclass
class Result:
    """One configuration's figures (see storm_report for how they are shown)."""

    name: str
    workers: int
    instances: int
    rate: float  # per instance
    qr_wait: float
    viewers: int
    storm: Storm | None = None
    idle: Window | None = None
    window: Window | None = None
    root_pid: int = 0
    updates_warm: dict[str, int] = field(default_factory=dict)  # "state/reason" -> count
    updates_storm: dict[str, int] = field(default_factory=dict)
    final_ok: int = 0  # viewers whose last snapshot is connecting + no_qr
    metrics: dict[str, float] = field(default_factory=dict)  # connection.update outcome -> count
    unanswered: int = 0
    error: str = ""


def redis_figures(port: int | None) -> tuple[dict[str, int], tuple[int, int]]:
    """(calls per command, (used_memory, keys)) of a redis-server."""
    if port is None:
        return {}, (0, 0)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        stats: dict[str, Any] = client.info("commandstats")
        memory = int(client.info("memory")["used_memory"])
        keys = int(client.dbsize())
    finally:
        client.close()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}
    return calls, (memory, keys)


class Lab:
    """The servers of one configuration, and the marks taken on them."""

    def __init__(self, relay: RelayProcess, redis_server: RedisServer | None) -> None:
        self.relay, self.redis_server = relay, redis_server

    def mark(self) -> Mark:
        pids = process_tree([self.relay.pid])
        redis_pid = self.redis_server.proc.pid if self.redis_server and self.redis_server.proc else None
        assert self.relay.log_path is not None
        calls, memory = redis_figures(self.redis_server.port if self.redis_server else None)
        return Mark(time.monotonic(), {pid: cpu_seconds([pid]) for pid in pids},
                    cpu_seconds([redis_pid]) if redis_pid else 0.0, time.process_time(),
                    machine_busy_seconds(), self.relay.log_path.stat().st_size, calls,
                    rss_bytes(pids), memory)

    def between(self, a: Mark, b: Mark) -> Window:
        per_pid = {pid: b.relay[pid] - a.relay.get(pid, 0.0) for pid in b.relay}
        relay = sum(per_pid.values())
        redis_cpu, client = b.redis - a.redis, b.client - a.client
        assert self.relay.log_path is not None
        with self.relay.log_path.open("rb") as f:
            f.seek(a.log)
            text = f.read(b.log - a.log).decode("utf-8", "replace")
        commands = {k: v - a.commands.get(k, 0) for k, v in b.commands.items()
                    if k != "info" and v - a.commands.get(k, 0) > 0}
        return Window(b.t - a.t, relay, per_pid, redis_cpu, client,
                      max(0.0, b.busy - a.busy - relay - redis_cpu - client), text, commands,
                      (a.rss, b.rss), (b.redis_mem[0] - a.redis_mem[0], b.redis_mem[1] - a.redis_mem[1]))


def names(n: int) -> list[str]:
    width = len(str(max(0, n - 1)))
    return [f"storm-{i:0{width}d}" for i in range(n)]


def _kind(snapshot: dict[str, Any]) -> str:
    why = snapshot.get("reason")
    return f"{snapshot.get('state')}/{why.get('code') if isinstance(why, dict) else '-'}"


def _count(viewers: list[RawViewer], lo: float, hi: float) -> dict[str, int]:
    out: dict[str, int] = {}
    for viewer in viewers:
        for at, snapshot in viewer.updates[1:]:  # [0] is the subscribe ack's snapshot
            if lo <= at < hi:
                out[_kind(snapshot)] = out.get(_kind(snapshot), 0) + 1
    return out


def relay_counters(port: int) -> dict[str, float]:
    """``relay_webhooks_total`` for connection.update by outcome (summed over workers)."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("relay_webhooks_total{") and 'event="connection.update"' in line:
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def _workers_up(relay: RelayProcess, workers: int, timeout: float = 60.0) -> None:
    """With several workers, /healthz answers from the first: wait for the others' processes."""
    deadline = time.monotonic() + timeout
    while len(process_tree([relay.pid])) < 1 + workers and workers > 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers did not start within {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def run(res: Result, *, log_dir: Path, warmup: float, duration: float, idle: float,
              conns: int, settle: float) -> Result:
    redis_server = RedisServer(log_dir=log_dir) if res.name == "redis" else None
    env = {"RELAY_LOG_LEVEL": "info", "RELAY_QR_WAIT": f"{res.qr_wait:g}"}
    if redis_server is not None:
        redis_server.start()
        env["RELAY_REDIS_URL"] = redis_server.url
    relay = RelayProcess(env, ["--workers", str(res.workers)], log_path=log_dir / f"relay-{res.name}.log")
    viewers: list[RawViewer] = []
    storm: Storm | None = None
    try:
        relay.start(60)
        res.root_pid = relay.pid
        await _workers_up(relay, res.workers)
        lab = Lab(relay, redis_server)
        instances = names(res.instances)
        watched = [instances[i * res.instances // res.viewers] for i in range(res.viewers)]
        for start in range(0, len(watched), 25):  # a few at a time: a page load, not a storm
            batch = [RawViewer() for _ in watched[start:start + 25]]
            await asyncio.gather(*(v.open(relay.port, token(name), name)
                                   for v, name in zip(batch, watched[start:start + 25])))
            viewers += batch
        await asyncio.sleep(settle)

        a = lab.mark()
        await asyncio.sleep(idle)
        res.idle = lab.between(a, lab.mark())

        storm = res.storm = Storm(relay.port, instances, res.rate, conns)
        await storm.open()
        marks: dict[str, Mark] = {}
        t_begin = time.monotonic()
        await storm.run(warmup, duration, lambda edge: marks.__setitem__(edge, lab.mark()))
        res.window = lab.between(marks["start"], marks["end"])
        res.unanswered = await storm.drain(DRAIN)
        await asyncio.sleep(0.5)  # updates still on their way
        res.updates_warm = _count(viewers, t_begin, marks["start"].t)
        res.updates_storm = _count(viewers, marks["start"].t, time.monotonic())
        res.final_ok = sum(1 for v in viewers if v.latest is not None and _kind(v.latest) == "connecting/no_qr")
        res.metrics = relay_counters(relay.port)
    finally:
        if storm is not None:
            storm.close()
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        with contextlib.suppress(Exception):
            relay.stop()
        if redis_server is not None:
            with contextlib.suppress(Exception):
                redis_server.stop()
    return res
