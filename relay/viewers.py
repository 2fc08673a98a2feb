"""What a viewer may do, whatever carries it (the lean websocket front, or python-socketio for
long-polling clients): connect with a token, subscribe to the instances it covers (at most 64),
unsubscribe, and be gone when its token expires (DESIGN.md "Browsers, Socket.IO")."""

from __future__ import annotations

import time
from typing import Any, Protocol

from .auth import Verifier, Viewer
from .core import Relay
from .errors import RelayError
from .names import valid_instance

MAX_SUBSCRIPTIONS = 64  # instances one connection may watch at once


class Session(Protocol):
    """One connected viewer, as its transport sees it."""

    viewer: Viewer
    rooms: set[str]
    closed: bool  # the connection is gone (set by Sessions.closed)

    async def join(self, room: str) -> None:
        """Receive the room's updates from now on."""

    async def leave(self, room: str) -> None: ...


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


GONE = error("gone", "the connection is closed")


class Sessions:
    """The viewer rules, for every transport."""

    def __init__(self, core: Relay, secret: str):
        self.core = core
        self.verifier = Verifier(secret)

    def authenticate(self, auth: Any) -> Viewer:
        """The viewer a Socket.IO CONNECT's ``auth`` proves (raises AuthError)."""
        token = auth.get("token") if isinstance(auth, dict) else None
        return self.verifier.verify(token if isinstance(token, str) else None)

    def opened(self) -> None:
        self.core.metrics.viewers.inc()

    async def closed(self, session: Session) -> None:
        """The connection is gone: stop watching what it watched."""
        session.closed = True
        self.core.metrics.viewers.dec()
        rooms, session.rooms = session.rooms, set()
        for instance in rooms:
            await self.core.unwatch(instance)

    @staticmethod
    def expired(session: Session) -> bool:
        return bool(session.viewer.expires_at) and session.viewer.expires_at <= time.time()

    async def subscribe(self, session: Session, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return error("bad_request", "send {instance: <name>}")
        if self.expired(session):
            return error("unauthorized", "token expired")
        if not session.viewer.may_see(instance):
            return error("forbidden", f"this token does not cover instance {instance!r}")
        if instance not in session.rooms:
            if len(session.rooms) >= MAX_SUBSCRIPTIONS:
                return error("too_many", f"one connection watches at most {MAX_SUBSCRIPTIONS} instances")
            if session.closed:
                return GONE
            session.rooms.add(instance)
            await session.join(instance)
            await self.core.watch(instance)
            if session.closed and instance in session.rooms:
                # The connection went while this subscribe was under way, after its rooms
                # were let go: let this one go too.
                session.rooms.discard(instance)
                await session.leave(instance)
                await self.core.unwatch(instance)
                return GONE
        try:
            snapshot = await self.core.snapshot(instance)
        except RelayError as exc:
            # Still subscribed: the viewer gets the state as soon as the store is back.
            return error("unavailable", exc.detail)
        self.core.viewed(instance, snapshot)
        return {"ok": True, "snapshot": snapshot, "controls": self.core.controls()}

    async def unsubscribe(self, session: Session, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return error("bad_request", "send {instance: <name>}")
        if instance in session.rooms:
            session.rooms.discard(instance)
            await session.leave(instance)
            await self.core.unwatch(instance)
        return {"ok": True}
