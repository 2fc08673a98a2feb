"""Viewers that reconnect, on a bare asyncio protocol: the client side of the reconnect storm.

A reconnect storm is thousands of handshakes in one second, on the same 2 cores as the server.
``bench/viewers.py`` (the ``websockets`` client) is fine for idle viewers, but a connect +
subscribe costs its process ~0.55 ms of CPU against the relay, this client's ~0.22 ms (measured,
2,000 viewers, start-up excluded; a reset + reconnect ~0.3 ms). Here a viewer is one
``asyncio.Protocol`` that writes the HTTP upgrade itself, reads RFC 6455 frames from the server
(never masked, never fragmented by either server under test) and sends masked text frames:

    GET /socket.io/?EIO=4&transport=websocket  -> 101, then Engine.IO OPEN "0{...}"
    "40{token}" -> "40{sid}";  '420["subscribe",{instance}]' -> "430[{ok:true,snapshot}]"
    "42[\"update\",{...}]" updates; "2" ping -> "3" pong

Each viewer behaves like a browser's socket.io-client: when its connection is lost (or an
attempt fails) it reconnects after a uniformly random delay in [0, backoff) s, forever, until the
process closes. ``Client.drop_all`` cuts every connection abruptly (SO_LINGER 0: the server gets
a TCP RST) and schedules each reconnect at a uniformly random moment of the next ``window`` s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import cast

from eio_record import Record

WS_REQUEST = ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
              "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: {key}\r\n\r\n")
_LINGER0 = struct.pack("ii", 1, 0)


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked, final websocket frame (clients must mask; RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    key = random.randbytes(4)
    mask = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


@dataclass(eq=False)
class Viewer:
    """One viewer of this process; ``slot`` indexes the process's per-viewer arrays."""

    slot: int
    index: int  # global index (instance = index % instances)
    port: int
    instance: str
    gen: int = 0  # attempt generation: callbacks of an older attempt are ignored
    conn: _Conn | None = None
    subscribed: bool = False
    started_ns: int = 0  # when the current attempt began
    tcp_ns: int = 0  # when its TCP connection was made
    timer: asyncio.TimerHandle | None = None  # next attempt, or the current attempt's deadline
    task: asyncio.Task[None] | None = None


class _Conn(asyncio.Protocol):
    """One attempt's connection: upgrade, Engine.IO/Socket.IO handshake, then updates."""

    __slots__ = ("client", "v", "gen", "transport", "buf", "upgraded", "phase")

    def __init__(self, client: Client, v: Viewer) -> None:
        self.client, self.v, self.gen = client, v, v.gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.phase = 0  # 0 open, 1 connect, 2 subscribe ack, 3 subscribed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        if self.gen != self.v.gen or self.client.closing:  # this attempt expired meanwhile
            self.abort()
            return
        self.v.conn = self  # before the first data_received, which may come before the await ends
        self.v.tcp_ns = time.time_ns()
        key = base64.b64encode(random.randbytes(16)).decode()
        self.transport.write(WS_REQUEST.format(port=self.v.port, key=key).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.lost(self, exc)

    def send(self, text: bytes) -> None:
        if self.transport is not None:
            self.transport.write(client_frame(text))

    def abort(self, rst: bool = True) -> None:
        """Close at once; with ``rst`` the peer gets a TCP reset, not a FIN."""
        if self.transport is None:
            return
        if rst:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                except OSError:
                    pass
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.client.fail(self, "http " + buf[9:12].decode("latin-1"))
                return
            del buf[:end + 4]
            self.upgraded = True
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, size, head = buf[pos], buf[pos + 1] & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head + size:
                break
            payload = bytes(buf[pos + head:pos + head + size])
            pos += head + size
            if not b0 & 0x80:
                self.client.fail(self, "fragmented frame")
                return
            self.frame(b0 & 0x0F, payload)
            if self.transport is None or self.v.conn is not self:
                return
        del buf[:pos]

    def frame(self, opcode: int, p: bytes) -> None:
        if opcode == 0x9:  # websocket ping
            if self.transport is not None:
                self.transport.write(client_frame(p, 0xA))
            return
        if opcode == 0x8:
            self.client.fail(self, "closed by server")
            return
        if opcode != 0x1:
            return
        if p == b"2":
            self.send(b"3")
        elif p.startswith(b"42"):
            self.client.rec.seen(self.client.rec.upd, self.v, self.client.rec.eid_in(p))
        elif self.phase == 0 and p.startswith(b"0"):
            self.phase = 1
            self.send(self.client.auth)
        elif self.phase == 1 and p.startswith(b"40"):
            self.phase = 2
            self.send(b'420["subscribe",' + json.dumps({"instance": self.v.instance}).encode() + b"]")
        elif self.phase == 1 and p.startswith(b"44"):
            self.client.fail(self, "connect refused")
        elif self.phase == 2 and p.startswith(b"430"):
            if b'"ok":true' not in p[:40]:
                self.client.fail(self, "subscribe refused")
                return
            self.phase = 3
            self.client.subscribed(self, self.client.rec.eid_in(p))
        elif p.startswith(b"41") or p == b"1":
            self.client.fail(self, "disconnected by server")


class Client:
    """Every viewer of one process, with the reconnect rules described above."""

    def __init__(self, specs: list[tuple[int, int, str]], token: str, marker: str,
                 backoff: float, attempt_timeout: float) -> None:
        self.viewers = [Viewer(slot, index, port, inst) for slot, (index, port, inst) in enumerate(specs)]
        self.rec = Record(len(specs), marker.encode())
        self.auth = b"40" + json.dumps({"token": token}).encode()
        self.backoff, self.attempt_timeout = backoff, attempt_timeout
        self.n_subscribed, self.closing = 0, False
        self.loop = asyncio.get_running_loop()

    # -- attempts ----------------------------------------------------------------------------
    def schedule(self, v: Viewer, delay: float) -> None:
        if v.timer is not None:
            v.timer.cancel()
        v.timer = self.loop.call_later(delay, self._begin, v)

    def _begin(self, v: Viewer) -> None:
        if self.closing:
            return
        v.gen += 1
        v.started_ns = time.time_ns()
        self.rec.attempts[v.slot] += 1
        v.timer = self.loop.call_later(self.attempt_timeout, self._expire, v, v.gen)
        v.task = self.loop.create_task(self._connect(v, v.gen))

    async def _connect(self, v: Viewer, gen: int) -> None:
        try:
            await self.loop.create_connection(lambda: _Conn(self, v), "127.0.0.1", v.port)
        except OSError as err:
            if v.gen == gen:
                self._retry(v, f"connect: {type(err).__name__}")

    def _expire(self, v: Viewer, gen: int) -> None:
        if v.gen == gen and not v.subscribed:
            if v.task is not None and not v.task.done():
                v.task.cancel()
            self._retry(v, "attempt timed out")

    def _retry(self, v: Viewer, why: str) -> None:
        """This attempt failed: forget it, try again after a random delay."""
        self.rec.error(why)
        v.gen += 1
        conn, v.conn = v.conn, None
        if conn is not None:
            conn.abort()
        self._down(v)
        if not self.closing:
            self.schedule(v, random.uniform(0, self.backoff))

    def _down(self, v: Viewer) -> None:
        if v.subscribed:
            v.subscribed = False
            self.n_subscribed -= 1
            if not self.rec.lost_ns[v.slot]:
                self.rec.lost_ns[v.slot] = time.time_ns()
            self.rec.losses[v.slot] += 1

    # -- what connections tell -----------------------------------------------------------------
    def fail(self, conn: _Conn, why: str) -> None:
        if conn.v.conn is conn or conn.gen == conn.v.gen:
            self._retry(conn.v, why)
        else:
            conn.abort()

    def lost(self, conn: _Conn, exc: Exception | None) -> None:
        v = conn.v
        if v.conn is conn or (v.conn is None and conn.gen == v.gen):
            how = "reset" if isinstance(exc, ConnectionResetError) else type(exc).__name__ if exc else "closed"
            if v.subscribed:
                self._retry(v, f"lost while subscribed ({how})")
            else:
                stage = ("waiting for open", "waiting for connect ack", "waiting for subscribe ack",
                         "subscribed")[conn.phase] if conn.upgraded else "before the 101"
                self._retry(v, f"{how} during handshake, {stage}")

    def subscribed(self, conn: _Conn, eid: int) -> None:
        v, now = conn.v, time.time_ns()
        if v.timer is not None:
            v.timer.cancel()
            v.timer = None
        v.subscribed = True
        self.n_subscribed += 1
        self.rec.seen(self.rec.snaps, v, eid)
        self.rec.back_ns[v.slot] = now
        self.rec.back_start_ns[v.slot] = v.started_ns
        self.rec.back_tcp_ns[v.slot] = v.tcp_ns

    # -- commands ------------------------------------------------------------------------------
    def start(self, per_second: float) -> None:
        """First connections, spread at ``per_second`` (a setup, not the storm)."""
        for k, v in enumerate(self.viewers):
            self.schedule(v, k / per_second)

    def drop_all(self, window: float) -> None:
        """Cut every connection with a reset; each viewer reconnects within ``window`` s."""
        for v in self.viewers:
            v.gen += 1
            conn, v.conn = v.conn, None
            if v.task is not None and not v.task.done():
                v.task.cancel()
            if conn is not None:
                conn.abort(rst=True)
            self._down(v)
            if not self.rec.lost_ns[v.slot]:
                self.rec.lost_ns[v.slot] = time.time_ns()
            self.schedule(v, random.uniform(0, window))

    async def close(self) -> None:
        """Stop reconnecting and reset every connection (no TIME_WAIT left on either side)."""
        self.closing = True
        for v in self.viewers:
            if v.timer is not None:
                v.timer.cancel()
            if v.task is not None and not v.task.done():
                v.task.cancel()
            if v.conn is not None:
                v.conn.abort(rst=True)
        await asyncio.sleep(0.1)
