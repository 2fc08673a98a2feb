"""Light Socket.IO viewers, many per process, for the load and memory benchmarks.

Why not python-socketio's client: at 1,000 connections and thousands of updates per second its
per-packet overhead would make the load client compete with the server for the same 2 cores.
Here a viewer is one websocket plus the hand-written handshake of ``tests.support.rawsio``.

Viewers are spread over a few processes (multiprocessing, spawn); each runs one asyncio loop and
talks to the parent over a Pipe with small command tuples. Deliveries are not JSON-decoded: the
event id is found by a string search for the run's marker inside ``qr.code``, which keeps the
client cost per delivery at a few microseconds.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from tests.support.rawsio import WS_PATH, SetupError, handshake

EID_DIGITS = 10


@dataclass
class ViewerSpec:
    """One viewer: global index, server port, watched instance name."""

    index: int
    port: int
    instance: str


@dataclass
class Recorder:
    """Deliveries seen by this process since the last ``take``."""

    marker: str
    min_eid: int = 0
    eids: array[int] = field(default_factory=lambda: array("q"))
    recv_ns: array[int] = field(default_factory=lambda: array("q"))
    conns: array[int] = field(default_factory=lambda: array("i"))
    counted: int = 0  # deliveries with eid >= min_eid (for the parent's early-exit poll)
    unmatched: int = 0  # update packets without our marker (e.g. snapshots of other shapes)
    disconnects: int = 0

    def __post_init__(self) -> None:
        self.marker_b = self.marker.encode()

    def record(self, conn_index: int, msg: str | bytes, now_ns: int) -> None:
        """Note one ``update`` (text, or the raw frame: the marker and digits are ASCII)."""
        marker: str | bytes = self.marker if isinstance(msg, str) else self.marker_b
        pos = msg.find(marker)  # type: ignore[arg-type]
        if pos < 0:
            self.unmatched += 1
            return
        start = pos + len(marker)
        try:
            eid = int(msg[start:start + EID_DIGITS])
        except ValueError:
            self.unmatched += 1
            return
        self.eids.append(eid)
        self.recv_ns.append(now_ns)
        self.conns.append(conn_index)
        if eid >= self.min_eid:
            self.counted += 1

    def take(self) -> tuple[bytes, bytes, bytes, int, int]:
        out = (self.eids.tobytes(), self.recv_ns.tobytes(), self.conns.tobytes(), self.unmatched,
               self.disconnects)
        self.eids, self.recv_ns, self.conns = array("q"), array("q"), array("i")
        self.unmatched = 0
        return out


@dataclass
class _Options:
    """What every viewer of a process shares."""

    token: str
    deflate: bool
    gate: asyncio.Semaphore
    closing: asyncio.Event


async def _viewer(spec: ViewerSpec, opts: _Options, rec: Recorder,
                  results: dict[int, str | None]) -> None:
    """Connect and subscribe (bounded concurrency, 3 attempts), then count updates until closed."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = f"ws://127.0.0.1:{spec.port}{WS_PATH}"
    ws = None
    error: str | None = None
    async with opts.gate:  # a connect storm of 1,000 sockets would overflow listen backlogs
        for attempt in range(3):
            try:
                # compression=None unless asked: socket.io servers default to no permessage-deflate
                # for websockets; keeping it off keeps both sides comparable and the client cheap
                # (browsers do offer it: --client-deflate in memory.py measures that case).
                # ping_interval=None: Engine.IO does its own pings at the application level.
                ws = await connect(url, compression="deflate" if opts.deflate else None,
                                   ping_interval=None, open_timeout=20, close_timeout=1,
                                   max_size=2**22)
                await asyncio.wait_for(handshake(
                    ws, opts.token, spec.instance,
                    lambda msg: rec.record(spec.index, msg, time.time_ns())), 20)
                error = None
                break
            # Any failure (refused, reset, timeout, bad packet) is reported, never raised:
            # one broken viewer must not take its 500 siblings down.
            except Exception as err:  # noqa: BLE001
                error = f"{type(err).__name__}: {err}"
                if ws is not None:
                    await ws.close()
                    ws = None
                if isinstance(err, SetupError):
                    break  # a protocol refusal will not change on retry
                await asyncio.sleep(0.5 * (attempt + 1))
    results[spec.index] = error
    if ws is None:
        return
    try:
        while True:
            # decode=False: skip UTF-8 decoding of every ~6 KB update; we only search bytes.
            msg = await ws.recv(decode=False)
            now = time.time_ns()
            if msg.startswith(b"42"):
                rec.record(spec.index, msg, now)
            elif msg == b"2":
                await ws.send("3")
            elif msg.startswith(b"41") or msg == b"1":  # socket.io DISCONNECT / engine.io CLOSE
                break
    except ConnectionClosed:
        pass
    finally:
        if not opts.closing.is_set():
            rec.disconnects += 1
        await ws.close()


async def _child(conn: Connection, specs: list[ViewerSpec], token: str, marker: str,
                 concurrency: int, deflate: bool) -> None:
    async def next_command() -> tuple[Any, ...]:
        # Blocking recv in a thread, not loop.add_reader: add_reader switches the pipe to
        # non-blocking mode, and a multi-MB `collect` reply then fails with EAGAIN.
        try:
            return await asyncio.to_thread(conn.recv)
        except (EOFError, OSError):  # parent died: stop
            return ("close",)

    rec = Recorder(marker=marker)
    opts = _Options(token, deflate, asyncio.Semaphore(concurrency), asyncio.Event())
    results: dict[int, str | None] = {}
    tasks = [asyncio.create_task(_viewer(s, opts, rec, results)) for s in specs]

    # Setup phase: report once every viewer has either subscribed or failed.
    while len(results) < len(specs):
        await asyncio.sleep(0.05)
    ok = [i for i, err in results.items() if err is None]
    errors = sorted({err for err in results.values() if err is not None})[:5]
    conn.send(("ready", ok, errors))

    while True:
        cmd = await next_command()
        op = cmd[0]
        if op == "step":
            rec.min_eid = int(cmd[1])
            rec.counted = 0
            conn.send(("ok",))
        elif op == "count":
            conn.send(("count", rec.counted, rec.disconnects))
        elif op == "collect":
            conn.send(("data", *rec.take()))
        elif op == "close":
            opts.closing.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                conn.send(("closed",))
            except OSError:
                pass
            return


def child_main(conn: Connection, specs: list[ViewerSpec], token: str, marker: str,
               concurrency: int, deflate: bool) -> None:
    """Entry point of a viewer process (multiprocessing target)."""
    # The parent owns Ctrl-C handling and tells us to close; a SIGINT here would only
    # produce tracebacks and skew the last measurement.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    coro = _child(conn, specs, token, marker, concurrency, deflate)
    try:
        import uvloop  # cheaper loop = less client CPU competing with the server

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# ---------------------------------------------------------------------------- parent side


@dataclass
class Deliveries:
    """All deliveries collected from the viewer processes for one step."""

    eids: array[int]
    recv_ns: array[int]
    conns: array[int]
    unmatched: int
    disconnects: int


class ViewerPool:
    """Parent-side handle on the viewer processes. ``deflate``: offer permessage-deflate, as
    browsers do."""

    def __init__(self, token: str, marker: str, concurrency: int = 64, deflate: bool = False) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # no fork of the parent's running event loop
        self._token = token
        self._marker = marker
        self._concurrency = concurrency
        self._deflate = deflate
        self._conns: list[Connection] = []
        self._pending: list[Connection] = []  # started, "ready" not yet received
        self.processes: list[Any] = []

    def add(self, specs: list[ViewerSpec], procs: int) -> None:
        """Start ``procs`` more viewer processes sharing ``specs``; they connect at once."""
        procs = max(1, min(procs, len(specs)))
        for p in range(procs):
            parent_end, child_end = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=child_main, daemon=True, name=f"viewers-{len(self.processes)}",
                args=(child_end, specs[p::procs], self._token, self._marker,
                      max(1, self._concurrency // procs), self._deflate))
            proc.start()
            child_end.close()
            self._conns.append(parent_end)
            self._pending.append(parent_end)
            self.processes.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def _recv(self, conn: Connection, timeout: float) -> tuple[Any, ...]:
        ready = await asyncio.to_thread(conn.poll, timeout)
        if not ready:
            raise TimeoutError("viewer process did not answer in time")
        return conn.recv()  # type: ignore[no-any-return]

    async def _all(self, cmd: tuple[Any, ...], timeout: float) -> list[tuple[Any, ...]]:
        for conn in self._conns:
            conn.send(cmd)
        return list(await asyncio.gather(*(self._recv(c, timeout) for c in self._conns)))

    async def wait_ready(self, timeout: float) -> tuple[list[int], list[str]]:
        """Indices of viewers subscribed by the last ``add``, and a few distinct error messages."""
        pending, self._pending = self._pending, []
        replies = await asyncio.gather(*(self._recv(c, timeout) for c in pending))
        ok: list[int] = []
        errors: set[str] = set()
        for _, idx, errs in replies:
            ok.extend(idx)
            errors.update(errs)
        return sorted(ok), sorted(errors)[:5]

    async def start_step(self, min_eid: int) -> None:
        await self._all(("step", min_eid), 10)

    async def count(self) -> tuple[int, int]:
        replies = await self._all(("count",), 10)
        return sum(r[1] for r in replies), sum(r[2] for r in replies)

    async def collect(self) -> Deliveries:
        replies = await self._all(("collect",), 30)
        out = Deliveries(array("q"), array("q"), array("i"), 0, 0)
        for _, eids, recv, conns, unmatched, disconnects in replies:
            out.eids.frombytes(eids)
            out.recv_ns.frombytes(recv)
            out.conns.frombytes(conns)
            out.unmatched += unmatched
            out.disconnects += disconnects
        return out

    async def close(self) -> None:
        """Ask the processes to close their sockets, then make sure they are gone."""
        try:
            await self._all(("close",), 10)
        except (OSError, EOFError, TimeoutError) as err:
            # They may already be dead; terminate() below makes sure.
            print(f"viewer processes did not close cleanly: {err!r}", file=sys.stderr)
        self.terminate()

    def terminate(self) -> None:
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
        for proc in self.processes:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for conn in self._conns:
            conn.close()
