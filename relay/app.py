"""The composition root: ``create_app`` builds the core, wires the edges around it, and owns
everything long-lived in one lifespan. Nothing imports this module but the server and tests."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import socketio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from . import collector, routes
from .config import Settings
from .core import Relay
from .eio.front import Front
from .eio.rooms import Rooms
from .gateways.evolution_gateway import EvolutionGateway
from .gateways.wppconnect_gateway import WPPConnectGateway
from .metrics import Metrics
from .ports import Gateway
from .origins import OriginLog
from .internals import RelayManager, create_server
from .sockets import SocketEdge
from .viewers import Sessions
from .state import Backend, open_backend
from .webhooks import WebhookEndpoint, Webhooks

log = logging.getLogger("relay")


def build_gateways(settings: Settings, core: Relay, http: aiohttp.ClientSession) -> dict[str, Gateway]:
    """The gateways the settings configure (Evolution, WPPConnect, or both)."""
    gateways: dict[str, Gateway] = {}
    common: dict[str, Any] = dict(timeout=settings.gateway_timeout,
                                  probe_interval=settings.probe_interval)
    if settings.evolution_url and settings.evolution_apikey:
        gateways["evolution"] = EvolutionGateway(
            core, core.coordination, core.metrics, http, url=settings.evolution_url,
            apikey=settings.evolution_apikey, mode=settings.evolution_socket, **common)
    if settings.wppconnect_url and settings.wppconnect_secret_key:
        gateways["wppconnect"] = WPPConnectGateway(
            core, core.coordination, core.metrics, http, url=settings.wppconnect_url,
            secret_key=settings.wppconnect_secret_key, **common)
    return gateways


class RelayApp:
    """The ASGI application of one worker: Socket.IO in front, webhooks next, routes behind."""

    def __init__(self, settings: Settings, backend: Backend | None = None):
        self.settings = settings
        self.metrics = Metrics(settings.metrics_dir)
        self.manager = RelayManager()
        self.sio = create_server(self.manager, origins=list(settings.allowed_origins),
                                 websocket_only=bool(settings.redis_url))
        self._backend = backend
        self.core: Relay | None = None
        self.front: Front | None = None
        middleware = []
        if settings.allowed_origins:
            middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.allowed_origins),
                                         allow_methods=["GET", "POST"],
                                         allow_headers=["Authorization", "Content-Type"]))
        self.http_app = Starlette(routes=routes.routes(settings), middleware=middleware,
                                  lifespan=self.lifespan)
        self.http_app.state.settings = settings
        self.webhooks = Webhooks(secret=settings.webhook_secret, max_body=settings.max_body,
                                 max_inflight=settings.max_inflight)
        self.asgi = OriginLog(socketio.ASGIApp(self.sio, other_asgi_app=WebhookEndpoint(
            self.http_app, self.webhooks), socketio_path="socket.io"), settings.allowed_origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.asgi(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[dict[str, Any]]:
        """Open everything in order; any failure (or shutdown) unwinds what was opened. The
        core reaches the HTTP edges as lifespan state (``request.state.core``)."""
        s = self.settings
        async with AsyncExitStack() as stack:
            if self._backend is not None:
                backend = self._backend
                stack.push_async_callback(backend.close)
            else:
                backend = await stack.enter_async_context(open_backend(
                    s.redis_url, prefix=s.key_prefix, qr_ttl=s.qr_ttl, qr_wait=s.qr_wait,
                    default_upstream=s.upstream_name, record_ttl=s.record_ttl,
                    max_instances=s.max_instances))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            rooms = Rooms(self.manager, self.metrics.slow_viewers.inc)
            core = Relay(backend, rooms, self.metrics, default_upstream=s.upstream_name,
                         qr_wait=s.qr_wait, auto_connect=s.auto_connect == "on-view",
                         gateway_poll=min(max(s.probe_interval / 2, 0.1), 5.0))
            core.gateways.update(build_gateways(s, core, http))
            sessions = Sessions(core, s.secret)
            SocketEdge(self.sio, self.manager, core, sessions)
            gc_hold = collector.Collector()
            front = self.front = Front(rooms, sessions, origins=s.allowed_origins,
                                       on_churn=gc_hold.opened_or_closed)
            self.core = core
            self.metrics.watch_gc()
            stack.callback(self.metrics.unwatch_gc)
            stack.push_async_callback(core.close)
            stack.push_async_callback(front.close)  # (unwound first)
            await core.start()
            core.spawn("slow-viewers", self.manager.evict_slow_viewers(self.metrics.slow_viewers.inc))
            core.spawn("viewers-sweep", front.sweep())
            core.spawn("gc-hold", gc_hold.watch())
            log.debug("worker started (pid %d)", os.getpid())
            yield {"core": core, "front": front, "webhooks": self.webhooks}


def create_app(settings: Settings, *, backend: Backend | None = None) -> RelayApp:
    """Build the relay for one worker. ``backend`` may be injected (tests); else it comes from
    ``settings.redis_url`` (memory when unset)."""
    return RelayApp(settings, backend)
