"""The lean websocket front for browsers: takes over a websocket upgrade to ``/socket.io/``
from uvicorn (relay/internals/http.py), answers the handshake, and keeps every connection's
timers in one sweep (Engine.IO pings and their deadline, a connect within 10 s, a token's
expiry) instead of a task per viewer.

Long-polling clients (and upgrades from polling) are left to python-socketio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..logs import Throttle
from ..tasks import Tasks
from ..viewers import Sessions
from .connection import ViewerConnection
from .frames import accept_key, frame
from .gate import Gate
from .pacer import Pacer
from .rooms import SLOW_BYTES, Rooms

log = logging.getLogger("relay.viewers")
SWEEP_SLICE = 256  # connections looked at between two turns of the event loop


class Front:
    """Every lean viewer connection of this worker."""

    def __init__(self, rooms: Rooms, sessions: Sessions, *, origins: tuple[str, ...],
                 ping_interval: float = 20.0, ping_timeout: float = 20.0,
                 connect_within: float = 10.0, max_payload: int = 64 * 1024,
                 slow_bytes: int = SLOW_BYTES, on_churn: Callable[[], None] = lambda: None):
        self.rooms = rooms
        self.sessions = sessions
        self.origins = origins
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_within = connect_within
        self.max_payload = max_payload
        self.slow_bytes = slow_bytes
        self.connections: set[ViewerConnection] = set()
        self.tasks = Tasks()
        self.pacer = Pacer()
        self.on_churn = on_churn  # told of every connection opened or closed
        self.gate = Gate()
        self._gone: deque[ViewerConnection] = deque()
        self._reaper: asyncio.Task[None] | None = None
        self._throttle = Throttle(60.0)
        self._open = ("0" + json.dumps({
            "upgrades": [], "pingInterval": int(ping_interval * 1000),
            "pingTimeout": int(ping_timeout * 1000), "maxPayload": max_payload,
        }, separators=(",", ":")))

    # -- taking a connection over ------------------------------------------------------------
    @staticmethod
    def wants(path: str, query: str) -> bool:
        """A websocket-only Engine.IO v4 connection (not an upgrade of a polling session)."""
        if path.rstrip("/") != "/socket.io":
            return False
        q = parse_qs(query)
        return q.get("EIO") == ["4"] and q.get("transport") == ["websocket"] and "sid" not in q

    def take(self, transport: asyncio.Transport, headers: list[tuple[bytes, bytes]],
             server_connections: set[Any]) -> None:
        """Answer the handshake on ``transport`` (whose request uvicorn parsed) and drive it
        from now on, paced (see :mod:`.pacer`; nothing is read from it meanwhile). It joins
        ``server_connections`` (uvicorn's: the connection cap and the graceful shutdown count
        it) until it closes."""
        transport.pause_reading()
        self.pacer.run(lambda: self._take(transport, headers, server_connections))

    def _take(self, transport: asyncio.Transport, headers: list[tuple[bytes, bytes]],
              server_connections: set[Any]) -> None:
        if transport.is_closing():
            return  # the client went away while it waited
        h = {name: value for name, value in headers}
        key = h.get(b"sec-websocket-key")
        if h.get(b"sec-websocket-version") != b"13" or not key:
            self._refuse(transport, 400, "websocket version 13 and a key are required")
            return
        origin = h.get(b"origin")
        if origin is not None and not self._origin_ok(origin.decode("latin-1"),
                                                      h.get(b"host", b"").decode("latin-1")):
            self._refuse(transport, 403, "origin not allowed")
            return
        sid = secrets.token_urlsafe(15)
        loop = asyncio.get_running_loop()
        conn = ViewerConnection(self, transport, sid, loop.time(), server_connections)
        opened = self._open[:2] + f'"sid":"{sid}",' + self._open[2:]
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) +
                        b"\r\n\r\n" + frame(opened.encode()))
        transport.set_protocol(conn)
        self.connections.add(conn)
        server_connections.add(conn)
        conn.hold()  # read through the gate from now on
        self.on_churn()

    def _origin_ok(self, origin: str, host: str) -> bool:
        return "*" in self.origins or origin in self.origins or urlsplit(origin).netloc == host

    @staticmethod
    def _refuse(transport: asyncio.Transport, status: int, why: str) -> None:
        body = why.encode()
        transport.write(f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Bad Request'}\r\n"
                        f"content-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                        "connection: close\r\n\r\n".encode() + body)
        transport.close()

    # -- the connections' life ---------------------------------------------------------------
    def lost(self, conn: ViewerConnection) -> None:
        """A connection closed (either side). It is forgotten, with what it watched, by one task
        a slice at a time: a network blip closes thousands of connections in one turn of the
        event loop, and this callback runs for each of them in that same turn."""
        self._gone.append(conn)
        self.on_churn()
        if self._reaper is None or self._reaper.done():
            self._reaper = self.tasks.spawn("viewers-gone", self._reap())

    async def _reap(self) -> None:
        gone = self._gone
        while gone:
            while gone and not self.pacer.spent():
                started = time.perf_counter()
                conn = gone.popleft()
                self.connections.discard(conn)
                conn.server_connections.discard(conn)
                session, conn.session = conn.session, None
                if session is not None:
                    for room in session.rooms:
                        self.rooms.leave(room, conn)
                    try:
                        await self.sessions.closed(session)
                    except Exception:  # one viewer's bookkeeping must not stop the others'
                        log.exception("forgetting a closed viewer failed")
                self.pacer.charge(time.perf_counter() - started)
            await asyncio.sleep(0)

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A connection's short job (a subscribe): owned, cancelled at shutdown."""
        return self.tasks.spawn(name, coro)

    def malformed(self) -> None:
        if self._throttle.ready("malformed") is not None:
            log.warning("ignored a malformed Socket.IO packet from a viewer")

    async def sweep(self, every: float = 1.0) -> None:
        """Forever: ping, close the silent and the anonymous, end expired sessions."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for n, conn in enumerate(list(self.connections)):
                if n % SWEEP_SLICE == SWEEP_SLICE - 1:
                    # Viewers who connected together (a reconnect storm) are due together:
                    # let the loop breathe between slices instead of writing every ping at once.
                    await asyncio.sleep(0)
                if conn.closing:
                    continue
                if conn.session is None:
                    if now - conn.opened_at > self.connect_within:
                        conn.close(1008)  # never connected with a valid token
                    continue
                if self.sessions.expired(conn.session):
                    conn.expire()
                elif conn.pong_due is not None:
                    if now > conn.pong_due:
                        conn.abort()  # no pong: the client is gone
                elif now >= conn.next_ping:
                    conn.send("2")
                    conn.pong_due = now + self.ping_timeout

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.close(1001)
        await self.tasks.close()
        self.gate.close()

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.connections),
                "viewers": sum(c.session is not None for c in self.connections)}
