"""The browser protocol over Socket.IO: connect with a token, subscribe/unsubscribe, receive
``update`` (DESIGN.md "Browsers, Socket.IO")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

from .auth import Viewer, verify_token
from .core import Relay
from .errors import AuthError, RelayError
from .names import valid_instance
from .internals import RelayManager


MAX_SUBSCRIPTIONS = 64  # instances one connection may watch at once


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class SocketEdge:
    """Socket.IO handlers: who is connected with which token, and what each one watches."""

    def __init__(self, sio: socketio.AsyncServer, manager: RelayManager, core: Relay, secret: str):
        self.manager = manager
        self.core = core
        self.secret = secret
        self.sio = sio
        self.viewers: dict[str, Viewer] = {}
        self.rooms: dict[str, set[str]] = {}
        self.expiries: dict[str, asyncio.TimerHandle] = {}
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("subscribe", self.subscribe)
        sio.on("unsubscribe", self.unsubscribe)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            viewer = verify_token(self.secret, token if isinstance(token, str) else None)
        except AuthError:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        self.viewers[sid] = viewer
        self.rooms[sid] = set()
        self.core.metrics.viewers.inc()
        self.manager.track(sid, environ)
        if viewer.expires_at:  # a session lives no longer than its token
            loop = asyncio.get_running_loop()
            delay = max(0.0, viewer.expires_at - time.time())
            self.expiries[sid] = loop.call_later(delay, self._expire, sid)

    def _expire(self, sid: str) -> None:
        """The token expired: end the session (the client's reconnect is then refused)."""
        self.core.spawn("token-expired", self.sio.disconnect(sid))

    async def disconnect(self, sid: str, *args: Any) -> None:
        if self.viewers.pop(sid, None) is not None:
            self.core.metrics.viewers.dec()
        expiry = self.expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()
        self.manager.untrack(sid)
        for instance in self.rooms.pop(sid, ()):
            await self.core.unwatch(instance)

    async def subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return _error("bad_request", "send {instance: <name>}")
        viewer = self.viewers.get(sid)
        mine = self.rooms.get(sid)
        if viewer is None or mine is None:
            return _error("unauthorized", "not connected")
        if viewer.expires_at and viewer.expires_at <= time.time():
            return _error("unauthorized", "token expired")
        if not viewer.may_see(instance):
            return _error("forbidden", f"this token does not cover instance {instance!r}")
        if instance not in mine and len(mine) >= MAX_SUBSCRIPTIONS:
            return _error("too_many", f"one connection watches at most {MAX_SUBSCRIPTIONS} instances")
        if instance not in mine:
            mine.add(instance)
            await self.sio.enter_room(sid, instance)
            await self.core.watch(instance)
        try:
            snapshot = await self.core.snapshot(instance)
        except RelayError as exc:
            # Still subscribed: the viewer gets the state as soon as the store is back.
            return _error("unavailable", exc.detail)
        self.core.viewed(instance, snapshot)
        return {"ok": True, "snapshot": snapshot, "controls": self.core.controls()}

    async def unsubscribe(self, sid: str, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return _error("bad_request", "send {instance: <name>}")
        mine = self.rooms.get(sid, set())
        if instance in mine:
            mine.discard(instance)
            await self.sio.leave_room(sid, instance)
            await self.core.unwatch(instance)
        return {"ok": True}
