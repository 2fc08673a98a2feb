"""Reconnecting viewers spread over a few processes (bench/eio_viewer.py in each), driven by the
harness over a Pipe with small command tuples, as bench/viewers.py does for idle viewers."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from eio_viewer import Client

Spec = tuple[int, int, str]  # global index, port, instance


async def _child(conn: Connection, specs: list[Spec], token: str, marker: str, backoff: float,
                 attempt_timeout: float, per_second: float) -> None:
    client = Client(specs, token, marker, backoff, attempt_timeout)
    client.start(per_second)
    rec = client.rec
    drop_ns = 0

    def drop(window: float) -> None:
        nonlocal drop_ns
        drop_ns = time.time_ns()
        client.drop_all(window)

    while True:
        try:
            # Blocking recv in a thread (see bench/viewers.py: add_reader breaks large replies).
            cmd = await asyncio.to_thread(conn.recv)
        except (EOFError, OSError):  # the harness died: stop
            cmd = ("close",)
        op = cmd[0]
        if op == "status":
            lost = [s for s in range(rec.n) if rec.lost_ns[s]]
            back = [s for s in lost if client.viewers[s].subscribed]
            conn.send(("status", client.n_subscribed, len(lost), len(back),
                       max((rec.back_ns[s] for s in back), default=0), sum(rec.attempts),
                       dict(rec.errors)))
        elif op == "mark":
            rec.mark()
            drop_ns = 0
            conn.send(("ok",))
        elif op == "drop":  # ("drop", wall-clock ns to cut at, window s)
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, (cmd[1] - time.time_ns()) / 1e9), drop, cmd[2])
            conn.send(("ok",))
        elif op == "collect":
            (ue, ut, ui), (se, st, si) = rec.upd, rec.snaps
            rec.upd = (array("q"), array("q"), array("i"))
            rec.snaps = (array("q"), array("q"), array("i"))
            conn.send(("data", [s[0] for s in specs], rec.lost_ns.tobytes(), rec.back_ns.tobytes(),
                       rec.back_start_ns.tobytes(), rec.back_tcp_ns.tobytes(),
                       rec.losses.tobytes(), rec.attempts.tobytes(),
                       rec.max_eid.tobytes(), bytes(v.subscribed for v in client.viewers),
                       (ue.tobytes(), ut.tobytes(), ui.tobytes()),
                       (se.tobytes(), st.tobytes(), si.tobytes()), dict(rec.errors), drop_ns))
        elif op == "close":
            await client.close()
            try:
                conn.send(("closed",))
            except OSError:
                pass
            return


def child_main(conn: Connection, specs: list[Spec], token: str, marker: str, backoff: float,
               attempt_timeout: float, per_second: float) -> None:
    """Entry point of a viewer process (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness handles Ctrl-C and closes us
    coro = _child(conn, specs, token, marker, backoff, attempt_timeout, per_second)
    try:
        import uvloop  # cheaper loop: less client CPU competing with the server

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


@dataclass
class Status:
    """The viewers at one poll: subscribed now; lost since the mark; of those, subscribed again
    (and the newest of their snapshot acks, wall-clock ns); attempts; failures by kind."""

    subscribed: int = 0
    lost: int = 0
    back: int = 0
    last_back_ns: int = 0
    attempts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Collected:
    """Per viewer (by global index) and per delivery, from every process."""

    index: list[int] = field(default_factory=list)
    lost_ns: array[int] = field(default_factory=lambda: array("q"))
    back_ns: array[int] = field(default_factory=lambda: array("q"))
    back_start_ns: array[int] = field(default_factory=lambda: array("q"))
    back_tcp_ns: array[int] = field(default_factory=lambda: array("q"))
    losses: array[int] = field(default_factory=lambda: array("i"))
    attempts: array[int] = field(default_factory=lambda: array("i"))
    max_eid: array[int] = field(default_factory=lambda: array("q"))
    subscribed: bytearray = field(default_factory=bytearray)
    upd: tuple[array[int], array[int], array[int]] = field(
        default_factory=lambda: (array("q"), array("q"), array("i")))
    snaps: tuple[array[int], array[int], array[int]] = field(
        default_factory=lambda: (array("q"), array("q"), array("i")))
    errors: dict[str, int] = field(default_factory=dict)
    drop_ns: list[int] = field(default_factory=list)  # when each process cut its connections


class ReconnectPool:
    """Parent-side handle on the viewer processes."""

    def __init__(self, token: str, marker: str, backoff: float, attempt_timeout: float) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")  # no fork of the parent's running event loop
        self._args = (token, marker, backoff, attempt_timeout)
        self._conns: list[Connection] = []
        self.processes: list[Any] = []
        self.total = 0

    def add(self, specs: list[Spec], procs: int, per_second: float) -> None:
        """Start ``procs`` processes sharing ``specs``; they connect at ``per_second`` in all."""
        procs = max(1, min(procs, len(specs)))
        self.total += len(specs)
        for p in range(procs):
            parent_end, child_end = self._ctx.Pipe()
            proc = self._ctx.Process(target=child_main, daemon=True, name=f"reconnect-viewers-{p}",
                                     args=(child_end, specs[p::procs], *self._args, per_second / procs))
            proc.start()
            child_end.close()
            self._conns.append(parent_end)
            self.processes.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def _all(self, cmd: tuple[Any, ...], timeout: float = 15.0) -> list[tuple[Any, ...]]:
        async def one(conn: Connection) -> tuple[Any, ...]:
            conn.send(cmd)
            if not await asyncio.to_thread(conn.poll, timeout):
                raise TimeoutError(f"viewer process did not answer {cmd[0]!r} in {timeout:g} s")
            return conn.recv()  # type: ignore[no-any-return]
        return list(await asyncio.gather(*(one(c) for c in self._conns)))

    async def status(self) -> Status:
        out = Status()
        for _, sub, lost, back, last, attempts, errors in await self._all(("status",)):
            out.subscribed += sub
            out.lost += lost
            out.back += back
            out.last_back_ns = max(out.last_back_ns, last)
            out.attempts += attempts
            for k, n in errors.items():
                out.errors[k] = out.errors.get(k, 0) + n
        return out

    async def wait_subscribed(self, timeout: float, poll: float = 0.2) -> Status:
        """Poll until every viewer is subscribed or ``timeout`` s have passed."""
        deadline = time.monotonic() + timeout
        st = await self.status()
        while st.subscribed < self.total and time.monotonic() < deadline:
            await asyncio.sleep(poll)
            st = await self.status()
        return st

    async def mark(self) -> None:
        await self._all(("mark",))

    async def drop(self, at_ns: int, window: float) -> None:
        await self._all(("drop", at_ns, window))

    async def collect(self) -> Collected:
        out = Collected()
        for reply in await self._all(("collect",), 60.0):
            (_, index, lost, back, start, tcp, losses, attempts, max_eid, sub, upd, snaps, errors,
             drop) = reply
            out.index += index
            for arr, raw in ((out.lost_ns, lost), (out.back_ns, back), (out.back_start_ns, start),
                             (out.back_tcp_ns, tcp),
                             (out.losses, losses), (out.attempts, attempts), (out.max_eid, max_eid)):
                arr.frombytes(raw)
            out.subscribed += sub
            for arrs, raws in ((out.upd, upd), (out.snaps, snaps)):
                for arr, raw in zip(arrs, raws):
                    arr.frombytes(raw)
            for k, n in errors.items():
                out.errors[k] = out.errors.get(k, 0) + n
            if drop:
                out.drop_ns.append(drop)
        return out

    async def close(self) -> None:
        """Ask the processes to reset their connections and exit, then make sure they are gone."""
        try:
            await self._all(("close",), 10.0)
        except (OSError, EOFError, TimeoutError) as err:
            print(f"viewer processes did not close cleanly: {err!r}", file=sys.stderr)
        for proc in self.processes:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for conn in self._conns:
            conn.close()
