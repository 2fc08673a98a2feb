"""The ASGI application: ``create_app`` and the one lifespan that owns every long-lived thing."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import aiohttp
import socketio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import routes
from .auth import Viewer, verify_token
from .config import Settings
from .errors import AuthError, RelayError
from .fanout import Hub
from .gateway import Gateway, gateways_from_settings
from .metrics import Metrics
from .snapshot import Event
from .state import Broker, StateStore, open_backend
from .tasks import Tasks
from .webhooks import WebhookFastPath

log = logging.getLogger("relay")
MAX_INSTANCE_NAME = 200


@dataclass
class Runtime:
    """Live state of one app (config is :class:`Settings`; this is what changes)."""

    settings: Settings
    metrics: Metrics
    sio: socketio.AsyncServer
    tasks: Tasks = field(default_factory=Tasks)
    store: StateStore = None  # type: ignore[assignment]
    broker: Broker = None  # type: ignore[assignment]
    hub: Hub = None  # type: ignore[assignment]
    http: aiohttp.ClientSession | None = None
    gateways: dict[str, Gateway] = field(default_factory=dict)
    viewers: dict[str, Viewer] = field(default_factory=dict)
    inflight: asyncio.Semaphore = None  # type: ignore[assignment]
    started: bool = False

    async def gateway_for(self, instance: str) -> Gateway | None:
        """The gateway serving an instance: the one its snapshot names, else the first configured."""
        if not self.gateways:
            return None
        snap = await self.store.get(instance)
        if snap is not None and snap["upstream"]["name"] in self.gateways:
            return self.gateways[snap["upstream"]["name"]]
        return next(iter(self.gateways.values()))

    async def ingest(self, event: Event) -> bool:
        """Store one gateway event (and publish it). True when viewers got an update."""
        return await self.store.apply(event) is not None


def valid_instance(name: Any) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= MAX_INSTANCE_NAME and name.strip() == name


def create_app(settings: Settings, *, store: StateStore | None = None,
               broker: Broker | None = None) -> socketio.ASGIApp:
    """Build the relay. ``store``/``broker`` may be injected (tests); else they come from settings."""
    # With Redis there may be several workers behind a balancer: long-polling would need sticky
    # sessions and fail intermittently without them, so only websocket is offered (a client that
    # insists on polling fails at once, with the reason in the README, not at random).
    transports = ["websocket"] if settings.redis_url else ["polling", "websocket"]
    sio = socketio.AsyncServer(async_mode="asgi",
                               # None: same origin only; host apps list theirs.
                               cors_allowed_origins=list(settings.allowed_origins) or None,
                               transports=transports,
                               ping_interval=20, ping_timeout=20, max_http_buffer_size=64 * 1024,
                               logger=False, engineio_logger=False)
    rt = Runtime(settings=settings, metrics=Metrics(), sio=sio)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Everything created so far lives as long as the process: keep it out of the collector's
        # full passes, and collect young objects less often (full-heap pauses of 50-250 ms were
        # measured under load otherwise; bench/README.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(7000, 20, 20)
        rt.metrics.watch_gc()
        rt.inflight = asyncio.Semaphore(settings.max_inflight)
        if store is not None and broker is not None:
            rt.store, rt.broker = store, broker
        else:
            rt.store, rt.broker = await open_backend(settings)
        rt.http = aiohttp.ClientSession()
        rt.hub = Hub(sio, rt.store, rt.broker, rt.metrics, settings.upstream_name)
        await rt.broker.start(rt.hub)
        rt.metrics.listener_up.set(1 if rt.broker.healthy else 0)
        rt.gateways = gateways_from_settings(rt)
        rt.tasks.spawn("loop-lag", rt.metrics.watch_loop_lag())
        rt.tasks.spawn("slow-viewers", rt.hub.evict_slow_viewers())
        for gateway in rt.gateways.values():
            gateway.start(rt.tasks)
        rt.started = True
        log.info("relay ready (pid %d, state: %s)", os.getpid(),
                 "redis" if settings.redis_url else "in-memory")
        try:
            yield {"rt": rt}
        finally:
            rt.started = False
            # Fixed order: stop producers, then the listener, then the store, then HTTP.
            await rt.tasks.close()
            for gateway in rt.gateways.values():
                await gateway.close()
            await rt.broker.close()
            await rt.store.close()
            await rt.http.close()
            rt.metrics.unwatch_gc()

    _register_socketio(sio, rt)
    middleware = []
    if settings.allowed_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes.routes(settings), middleware=middleware, lifespan=lifespan)
    app.state.rt = rt
    return socketio.ASGIApp(sio, other_asgi_app=WebhookFastPath(app, rt), socketio_path="socket.io")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def _register_socketio(sio: socketio.AsyncServer, rt: Runtime) -> None:
    """The browser protocol: connect with a token, subscribe/unsubscribe, receive ``update``."""

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            viewer = verify_token(rt.settings.secret, token if isinstance(token, str) else None)
        except AuthError:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        rt.viewers[sid] = viewer
        rt.metrics.viewers.inc()
        rt.hub.track(sid, environ)
        # engine.io builds a new class per request and keeps it alive through this key for the
        # whole connection (~3 KB per viewer, measured); the handshake body was read long ago.
        environ.pop("wsgi.input", None)

    @sio.event
    async def disconnect(sid: str, *args: Any) -> None:
        if rt.viewers.pop(sid, None) is not None:
            rt.metrics.viewers.dec()
        rt.hub.untrack(sid)
        await rt.hub.leave_all(sid)

    @sio.event
    async def subscribe(sid: str, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return _error("bad_request", "send {instance: <name>}")
        viewer = rt.viewers.get(sid)
        if viewer is None:
            return _error("unauthorized", "not connected")
        if not viewer.may_see(instance):
            return _error("forbidden", f"this token does not cover instance {instance!r}")
        try:
            snapshot = await rt.hub.join(sid, instance)
        except RelayError as exc:
            # Still subscribed: the viewer gets the state as soon as the store is back.
            return _error("unavailable", exc.detail)
        return {"ok": True, "snapshot": snapshot}

    @sio.event
    async def unsubscribe(sid: str, data: Any) -> dict[str, Any]:
        instance = data.get("instance") if isinstance(data, dict) else None
        if not valid_instance(instance):
            return _error("bad_request", "send {instance: <name>}")
        await rt.hub.leave(sid, instance)
        return {"ok": True}


def app_from_env() -> socketio.ASGIApp:
    """The uvicorn factory ``relay serve`` runs in each worker: settings from ``RELAY_*``."""
    settings = Settings.from_env(os.environ)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)
