"""One browser on a websocket: Engine.IO v4 and the root Socket.IO v5 namespace, as an asyncio
protocol with no task of its own (a viewer costs a few KB, and an update one ``write``).

    Engine.IO: 0 open, 1 close, 2 ping (server → client), 3 pong, 4 message
    Socket.IO (inside a message): 0 connect, 1 disconnect, 2 event, 3 ack, 4 connect error
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..auth import Viewer
from ..errors import AuthError
from ..viewers import Sessions
from ..wire import compact
from .frames import CLOSE, PING, TEXT, FrameError, FrameReader, close_frame, frame
from .gate import Gate, socket_number
from .pacer import TASK_COST, Pacer
from .rooms import Rooms

log = logging.getLogger("relay.viewers")


class Host(Protocol):
    """What a connection needs of the front that holds it (:class:`relay.eio.front.Front`)."""

    rooms: Rooms
    sessions: Sessions
    ping_interval: float
    slow_bytes: int

    pacer: Pacer
    gate: Gate

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def lost(self, conn: "ViewerConnection") -> None: ...

    def malformed(self) -> None: ...


@dataclass(eq=False)
class LeanSession:
    """A connected viewer (after its Socket.IO connect), as :class:`relay.viewers.Sessions`
    sees it."""

    conn: "ViewerConnection"
    viewer: Viewer
    rooms: set[str] = field(default_factory=set)
    closed: bool = False

    async def join(self, room: str) -> None:
        self.conn.front.rooms.join(room, self.conn)

    async def leave(self, room: str) -> None:
        self.conn.front.rooms.leave(room, self.conn)


class ViewerConnection(asyncio.Protocol):
    """Engine.IO + Socket.IO over one websocket, driven by the front's sweep for its timers."""

    __slots__ = ("front", "transport", "reader", "sid", "session", "opened_at", "next_ping",
                 "pong_due", "closing", "_chain", "server_connections", "expires_at", "fd")

    def __init__(self, front: Host, transport: asyncio.Transport, sid: str, now: float,
                 server_connections: set[Any]):
        self.front = front
        self.server_connections = server_connections
        self.transport = transport
        self.reader = FrameReader()
        self.sid = sid
        self.session: LeanSession | None = None
        self.opened_at = now
        self.next_ping = now + front.ping_interval
        self.pong_due: float | None = None
        self.closing = False
        self.expires_at = 0.0
        self._chain: asyncio.Task[None] | None = None  # one client event at a time, in order
        self.fd = socket_number(transport)  # for the gate (-1: read freely)

    # -- the gate (see :mod:`.gate`) ------------------------------------------------------------
    def hold(self) -> None:
        """Idle: stop reading until the gate lets this connection in."""
        if self.closing:
            return
        if self.fd >= 0 and not self.front.gate.pause(self.transport, self.fd, self):
            self.fd = -1  # the gate cannot watch it: read it freely from now on
        if self.fd < 0:
            self.transport.resume_reading()

    def let_in(self) -> None:
        if not self.closing and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- asyncio ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.hold()
        if self.session is None:  # a newcomer (its Socket.IO connect): paced, in order
            self.front.pacer.run(lambda: self._received(data))
        else:
            self._received(data)

    def _received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            messages = self.reader.feed(data)
        except FrameError as exc:
            self.close(exc.code)
            return
        for opcode, payload in messages:
            if opcode == TEXT:
                try:
                    self.on_engineio(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    self.close(1007)
            elif opcode == PING:
                self.write(frame(payload, 0xA))
            elif opcode == CLOSE:
                self.close(1000)
            # binary messages: Socket.IO attachments, which no viewer sends; ignored

    def unproven_since(self) -> float | None:
        """When it opened, while it has not connected with a valid token (the connection cap
        evicts the oldest such first)."""
        return self.opened_at if self.session is None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.fd >= 0:
            self.front.gate.forget(self.fd, self)
        self.front.lost(self)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close like a restart (clients reconnect by themselves)."""
        self.close(1001)

    # -- writing ------------------------------------------------------------------------------
    def write(self, data: bytes) -> bool:
        if self.closing:
            return False
        self.transport.write(data)
        behind = self.transport.get_write_buffer_size()
        if behind > self.front.slow_bytes:
            self.front.rooms.slow(behind)
            self.abort()
            return False
        return True

    def send(self, text: str) -> None:
        self.write(frame(text.encode()))

    def expire(self) -> None:
        """The token expired: say so (Socket.IO disconnect), then close."""
        if not self.closing:
            self.send("41")
            self.close(1000)

    def close(self, code: int = 1000) -> None:
        if not self.closing:
            self.write(close_frame(code))
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.transport.abort()

    # -- Engine.IO ----------------------------------------------------------------------------
    def on_engineio(self, message: str) -> None:
        kind, body = message[:1], message[1:]
        if kind == "3":  # pong
            self.pong_due = None
            self.next_ping = asyncio.get_running_loop().time() + self.front.ping_interval
        elif kind == "4":
            self.on_socketio(body)
        elif kind == "1":
            self.close(1000)
        elif kind == "2":  # a client ping (Engine.IO v3 habit): answer it
            self.send("3" + body)

    # -- Socket.IO ----------------------------------------------------------------------------
    def on_socketio(self, packet: str) -> None:
        kind, body = packet[:1], packet[1:]
        if body.startswith("/"):  # a namespace: only the root one exists
            namespace, _, body = body.partition(",")
            if namespace != "/":
                self.send(f"44{namespace}," + json.dumps({"message": "Invalid namespace"}))
                return
        if kind == "0":
            self.on_connect(body)
        elif kind == "2":
            self.on_event(body)
        elif kind == "1":
            self.close(1000)

    def on_connect(self, body: str) -> None:
        if self.session is not None:
            return
        try:
            auth = json.loads(body) if body else None
            viewer = self.front.sessions.authenticate(auth)
        except (ValueError, RecursionError, AuthError):
            self.send("44" + json.dumps({"message": "unauthorized"}))
            return
        self.session = LeanSession(self, viewer)
        self.expires_at = float(viewer.expires_at or "inf")
        self.front.sessions.opened()
        self.send("40" + json.dumps({"sid": self.sid}))

    def on_event(self, body: str) -> None:
        digits = 0
        while digits < len(body) and body[digits].isdigit():
            digits += 1
        ack_id, body = body[:digits], body[digits:]
        try:
            args = json.loads(body)
        except (ValueError, RecursionError):
            self.front.malformed()
            return
        if self.session is None or not isinstance(args, list) or not args:
            return
        # Paced (a storm brings thousands of subscribes), in order, one at a time.
        self.front.pacer.run(lambda: self._start_event(args[0], args[1:], ack_id), TASK_COST)

    def _start_event(self, name: Any, args: list[Any], ack_id: str) -> None:
        if self.closing:
            return
        previous = self._chain
        self._chain = self.front.spawn("viewer-event", self._event(previous, name, args, ack_id))

    async def _event(self, previous: asyncio.Task[None] | None, name: Any, args: list[Any],
                     ack_id: str) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        session = self.session
        if session is None or self.closing:
            return
        data = args[0] if args else None
        sessions = self.front.sessions
        try:
            if name == "subscribe":
                answer = await sessions.subscribe(session, data)
            elif name == "unsubscribe":
                answer = await sessions.unsubscribe(session, data)
            else:
                answer = {"ok": False, "error": {"code": "bad_request", "message": "unknown event"}}
        except Exception:  # a bug must not take the connection down silently
            log.exception("a viewer's %s failed", name if isinstance(name, str) else "event")
            answer = {"ok": False, "error": {"code": "unavailable", "message": "try again"}}
        if ack_id and not self.closing:
            self.send(f"43{ack_id}" + compact([answer]))  # the snapshot: ~6 KB
        if self._chain is asyncio.current_task():
            self._chain = None  # done: a finished task is 0.7 KB per idle viewer
