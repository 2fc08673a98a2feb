"""What the reconnect storm measures besides the viewers: a webhook load that runs until told
to stop, the servers' own event-loop stalls, and CPU of process trees whose members die and
are replaced during the measurement."""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from webhooks import SendResult, WebhookLoad

from tests.support.proctree import cpu_seconds, process_tree

LAG_GAUGE = "relay_loop_lag_max_seconds"
NODE_LAG_PROBE = Path(__file__).resolve().parent / "node_lag.js"
_GC_BUCKET = re.compile(r'^relay_gc_pause_seconds_bucket\{generation="(\w+)",le="([^"]+)"\} ([\d.e+-]+)$',
                        re.MULTILINE)
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
_NODE_LAG_LINE = re.compile(r"^node-loop-lag (\d+) ([\d.]+)(?: ([\d.]+))?$", re.MULTILINE)


class ConnTrace:
    """Which webhooks needed a new connection: during a storm a new one waits in the server's
    (overflowing) accept queue, a kept-alive one only for the server itself."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, float, bool]] = []  # (wall ns sent, ms to answer, new conn)

    def config(self) -> aiohttp.TraceConfig:
        async def start(_: object, ctx: Any, __: object) -> None:
            ctx.ns, ctx.t0, ctx.new = time.time_ns(), time.perf_counter(), False

        async def created(_: object, ctx: Any, __: object) -> None:
            ctx.new = True

        async def end(_: object, ctx: Any, __: object) -> None:
            self.requests.append((ctx.ns, (time.perf_counter() - ctx.t0) * 1e3, ctx.new))

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(start)
        trace.on_connection_create_end.append(created)
        trace.on_request_end.append(end)
        return trace

    def note(self, t0_ns: int, t1_ns: int) -> str:
        kept = [ms for t, ms, new in self.requests if t0_ns <= t <= t1_ns and not new]
        fresh = [ms for t, ms, new in self.requests if t0_ns <= t <= t1_ns and new]
        return (f"webhooks answered during the storm: on kept-alive connections {len(kept)}, slowest "
                f"{max(kept, default=0):.0f} ms; on new connections {len(fresh)}, slowest "
                f"{max(fresh, default=0):.0f} ms")


class SteadyLoad(WebhookLoad):
    """bench/webhooks.py's open-loop load, for as long as a storm lasts rather than a fixed time."""

    async def run_until(self, first_eid: int, rate: float, stop: asyncio.Event,
                        max_seconds: float) -> SendResult:
        """Post at ``rate`` from event id ``first_eid`` until ``stop`` is set (at most
        ``max_seconds``); wait for the answers (each bounded by the client timeout)."""
        n_max = max(1, int(rate * max_seconds))
        res = SendResult(first_eid=first_eid, count=n_max, send_ns=array("q", bytes(8 * n_max)),
                         status=array("h", bytes(2 * n_max)), done_ns=array("q", bytes(8 * n_max)),
                         max_schedule_lag_ms=0.0, errors={})
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter() + 0.02
        k = 0
        while k < n_max and not stop.is_set():
            now = time.perf_counter()
            due = min(n_max, int((now - t0) * rate) + 1)
            if k < due:
                res.max_schedule_lag_ms = max(res.max_schedule_lag_ms, (now - (t0 + k / rate)) * 1e3)
            while k < due:
                task = asyncio.create_task(self._post(res, k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
            await asyncio.sleep(max(0.001, t0 + k / rate - time.perf_counter()))
        if tasks:
            await asyncio.wait(list(tasks), timeout=self.timeout_s + 5)
        res.count = k
        for arr in (res.send_ns, res.status, res.done_ns):
            del arr[k:]
        return res


@dataclass
class StallSamples:
    """Server-side stalls: (wall-clock ns, seconds) samples of the relay's gauge (max since that
    worker's previous scrape) or of the Node probe (each late timer)."""

    values: list[tuple[int, float]] = field(default_factory=list)
    scrape_ms: list[float] = field(default_factory=list)  # how long each /metrics took to answer
    ran: dict[int, float] = field(default_factory=dict)  # Node: sample time -> CPU s in its window

    def add_logged(self, stalls: list[tuple[int, float, float | None]]) -> None:
        """Stalls a server logged (``restarts.relay_stalls``): (end ns, seconds, CPU s or None)."""
        for at, seconds, ran in stalls:
            self.values.append((at, seconds))
            if ran is not None:
                self.ran[at] = ran

    def noted(self, t0_ns: int, t1_ns: int, at_least: float = 0.05) -> str:
        """The stalls of ``at_least`` s or more between the two times, with the CPU time the
        process used in each one's window (Node's probe; the relay logs its own)."""
        worst = sorted(((v, t) for t, v in self.values if t0_ns <= t <= t1_ns and v >= at_least),
                       reverse=True)[:10]
        return ", ".join(f"{v * 1e3:.0f} ms (ran {self.ran[t] * 1e3:.0f} ms) at {(t - t0_ns) / 1e9:+.2f} s"
                         if t in self.ran else f"{v * 1e3:.0f} ms at {(t - t0_ns) / 1e9:+.2f} s"
                         for v, t in worst)

    def max_between(self, t0_ns: int, t1_ns: int) -> float | None:
        inside = [v for t, v in self.values if t0_ns <= t <= t1_ns]
        return max(inside) if inside else None


async def sample_relay_lag(load: WebhookLoad, port: int, out: StallSamples, every: float,
                           stop: asyncio.Event) -> None:
    """Scrape the relay's /metrics every ``every`` s (fresh connection each time, so both workers
    get scraped: each scrape resets that worker's peak) until ``stop``."""
    while not stop.is_set():
        t0 = time.perf_counter()
        values = await load.scrape_metric(port, LAG_GAUGE, samples=1)
        now = time.time_ns()
        out.scrape_ms.append((time.perf_counter() - t0) * 1e3)
        for v in values or []:
            out.values.append((now, v))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


Owner = Callable[[int, int], "int | None"]  # (server port, client port) -> server process


class HealthProbe:
    """The client-side stall measure, the same for both servers: ``per_process`` kept-alive
    connections to each server process (the relay's workers share a port: ``owner`` tells which
    worker accepted a connection), each sending ``GET /healthz`` every ``every`` s and timing
    the answer. Only connections made before the storm count, so the figure is the servers'
    responsiveness, not their accept queue (a probe whose process dies reconnects, uncounted)."""

    def __init__(self, ports: list[int], per_process: int, every: float, owner: Owner | None = None,
                 workers: list[int] | None = None) -> None:
        self.ports, self.per, self.every = ports, per_process, every
        self.owner, self.workers = owner, workers or []
        self.conns: list[tuple[int, asyncio.StreamReader, asyncio.StreamWriter, int]] = []
        self.samples: list[tuple[int, float, int]] = []  # (ns sent, ms to answer, ns connected)
        self.errors = 0

    async def open(self) -> str:
        """Open the connections (before the storm); a note on how they are spread."""
        spread: dict[str, int] = {}
        for port in self.ports:
            kept: dict[int, int] = {}
            for _ in range(60 if self.owner else self.per):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await self._ask(port, reader, writer)  # answered: accepted by a server process
                pid = port
                if self.owner is not None:
                    found = await asyncio.to_thread(self.owner, port, writer.get_extra_info("sockname")[1])
                    pid = found if found is not None else -1
                if pid != -1 and kept.get(pid, 0) < self.per:
                    kept[pid] = kept.get(pid, 0) + 1
                    self.conns.append((port, reader, writer, time.time_ns()))
                else:
                    writer.close()
                if len(kept) >= max(1, len(self.workers)) and min(kept.values()) >= self.per:
                    break
            spread.update({f"{'pid' if self.owner else 'port'} {k}": n for k, n in kept.items()})
        return f"/healthz probe connections: {spread}"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._loop(*conn, stop) for conn in self.conns))

    def max_between(self, t0_ns: int, t1_ns: int, made_before: int) -> float | None:
        """Longest answer to a request sent in [t0, t1] on a connection made before ``made_before``."""
        inside = [ms for t, ms, since in self.samples if t0_ns <= t <= t1_ns and since < made_before]
        return max(inside) if inside else None

    @staticmethod
    async def _ask(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        m = _LENGTH.search(head)
        if m is not None:
            await reader.readexactly(int(m.group(1)))
        else:  # chunked
            await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 30)

    async def _loop(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    since: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while not stop.is_set():
                    sent, t0 = time.time_ns(), time.perf_counter()
                    await self._ask(port, reader, writer)
                    took = time.perf_counter() - t0
                    self.samples.append((sent, took * 1e3, since))
                    await asyncio.sleep(max(0.0, self.every - took))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                self.errors += 1
            writer.close()
            while not stop.is_set():  # reconnect: its answers no longer count (see above)
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
                    since = time.time_ns()
                    break
                except (OSError, TimeoutError):
                    self.errors += 1
                    await asyncio.sleep(self.every)
        writer.close()


async def relay_gc_pauses(port: int) -> dict[tuple[str, float], float] | None:
    """The relay's ``relay_gc_pause_seconds`` histogram, summed over its workers (one scrape:
    multiprocess mode merges them): (generation, bucket bound) -> cumulative count."""
    try:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                  timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (TimeoutError, aiohttp.ClientError):
        return None
    out: dict[tuple[str, float], float] = {}
    for gen, le, count in _GC_BUCKET.findall(text):
        out[(gen, float(le))] = out.get((gen, float(le)), 0.0) + float(count)
    return out


def gc_note(before: dict[tuple[str, float], float] | None,
            after: dict[tuple[str, float], float] | None) -> str:
    """Collections during a scenario per generation: how many, how many over 50 and 100 ms, and
    the bucket of the longest (a killed worker's counts are kept by the merge, a new one's added)."""
    if before is None or after is None:
        return "relay GC pauses: /metrics not read"
    parts = []
    for gen in sorted({g for g, _ in after}):
        delta = {le: after[(gen, le)] - before.get((gen, le), 0.0) for g, le in after if g == gen}
        total = delta.get(float("inf"), 0.0)
        if not total:
            continue
        under = {le: n for le, n in delta.items()}
        over50, over100 = total - under.get(0.05, total), total - under.get(0.1, total)
        longest = min((le for le, n in sorted(under.items()) if n >= total), default=float("inf"))
        parts.append(f"gen{gen}: {total:.0f} ({over50:.0f} > 50 ms, {over100:.0f} > 100 ms, "
                     f"longest <= {longest * 1e3:g} ms)")
    return "relay GC pauses during the scenario (all workers): " + ("; ".join(parts) or "none")


def node_lag_env() -> dict[str, str]:
    """Environment that loads bench/node_lag.js into each Node peer process (no change to the
    peer itself): the same definition of a stall as relay/metrics.py's watch_loop_lag."""
    return {"NODE_OPTIONS": f'--require "{NODE_LAG_PROBE}"'}


def read_node_lag(logs: list[Path], out: StallSamples) -> None:
    """Every stall the Node probe printed (≥ its 5 ms threshold) into the peers' logs."""
    out.values.clear()
    out.ran.clear()
    for path in logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for ms, lag, ran in _NODE_LAG_LINE.findall(text):
            out.values.append((int(ms) * 1_000_000, float(lag) / 1e3))
            if ran:
                out.ran[int(ms) * 1_000_000] = float(ran) / 1e3


class TreeCpu:
    """CPU seconds of process trees over a window in which members may die (their CPU up to the
    last sample counts) or be born (all their CPU counts: a restarted worker's start-up is part of
    the restart's cost). Call ``sample`` often (every ~0.2 s)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        for pid in process_tree(roots):
            self.base[pid] = self.last[pid] = cpu_seconds([pid])

    def sample(self, roots: list[int] | None = None) -> None:
        if roots is not None:
            self.roots = roots
        for pid in process_tree(self.roots):
            cpu = cpu_seconds([pid])
            self.base.setdefault(pid, 0.0)
            if cpu >= self.last.get(pid, 0.0):
                self.last[pid] = cpu

    def seconds(self) -> float:
        return sum(self.last[pid] - self.base[pid] for pid in self.last)
