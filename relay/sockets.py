"""Viewers on python-socketio: the long-polling clients of a single in-memory relay (websocket
clients are served by the lean front, relay/eio/). The rules are :class:`relay.viewers.Sessions`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import socketio

from .auth import Viewer
from .core import Relay
from .errors import AuthError
from .internals import RelayManager
from .viewers import Sessions


@dataclass(eq=False)
class SioSession:
    """A viewer on python-socketio: its rooms are python-socketio rooms."""

    sio: socketio.AsyncServer
    sid: str
    viewer: Viewer
    rooms: set[str] = field(default_factory=set)
    expiry: asyncio.TimerHandle | None = None
    closed: bool = False

    async def join(self, room: str) -> None:
        await self.sio.enter_room(self.sid, room)

    async def leave(self, room: str) -> None:
        await self.sio.leave_room(self.sid, room)


class SocketEdge:
    """python-socketio handlers: connect with a token, subscribe, unsubscribe, disconnect."""

    def __init__(self, sio: socketio.AsyncServer, manager: RelayManager, core: Relay,
                 sessions: Sessions):
        self.sio = sio
        self.manager = manager
        self.core = core
        self.sessions = sessions
        self.by_sid: dict[str, SioSession] = {}
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("subscribe", self.subscribe)
        sio.on("unsubscribe", self.unsubscribe)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            viewer = self.sessions.authenticate(auth)
        except AuthError:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        session = SioSession(self.sio, sid, viewer)
        self.by_sid[sid] = session
        self.sessions.opened()
        self.manager.track(sid, environ)
        if viewer.expires_at:  # a session lives no longer than its token
            delay = max(0.0, viewer.expires_at - time.time())
            session.expiry = asyncio.get_running_loop().call_later(delay, self._expire, sid)

    def _expire(self, sid: str) -> None:
        """The token expired: end the session (the client's reconnect is then refused)."""
        self.core.spawn("token-expired", self.sio.disconnect(sid))

    async def disconnect(self, sid: str, *args: Any) -> None:
        self.manager.untrack(sid)
        session = self.by_sid.pop(sid, None)
        if session is not None:
            if session.expiry is not None:
                session.expiry.cancel()
            await self.sessions.closed(session)

    async def subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        session = self.by_sid.get(sid)
        if session is None:
            return {"ok": False, "error": {"code": "unauthorized", "message": "not connected"}}
        return await self.sessions.subscribe(session, data)

    async def unsubscribe(self, sid: str, data: Any) -> dict[str, Any]:
        session = self.by_sid.get(sid)
        if session is None:
            return {"ok": True}
        return await self.sessions.unsubscribe(session, data)
