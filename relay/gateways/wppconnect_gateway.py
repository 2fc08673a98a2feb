"""WPPConnect Server as a :class:`~relay.gateway.Gateway`: REST control and its Socket.IO stream.

Socket facts (protocols/wppconnect.md §3): one root namespace on the REST port, no auth, every
session's events broadcast to every client (so the payload's ``session`` is the filter), no
``status-find`` on the socket, and events after a close-session lack ``session`` (§8.2). Missed
events are never replayed, so every (re)connect is followed by a resync over ``status-session``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..errors import BadEventError, UpstreamError
from ..metrics import Metrics
from ..snapshot import Event, now_ms
from ..state import Coordination
from . import wppconnect
from .base import Gateway, Sink
from .follow import follow_socket
from .wppconnect_api import WPPConnectClient

log = logging.getLogger("relay.wppconnect")


class WPPConnectGateway(Gateway):
    """REST via :class:`~relay.upstreams.wppconnect.WPPConnectClient`; follows the socket whenever
    ``RELAY_WPPCONNECT_URL`` is set (there is nothing to switch: it is on the REST port)."""

    name = "wppconnect"

    def __init__(self, sink: Sink, coordination: Coordination, metrics: Metrics,
                 http: aiohttp.ClientSession, *, url: str, secret_key: str, timeout: float,
                 probe_interval: float):
        super().__init__(sink, coordination, metrics, probe_interval=probe_interval)
        self.url = url
        self.client = WPPConnectClient(http, url, secret_key, timeout)
        # Sessions this worker started with a phone number (their stored config holds it).
        self._by_phone: set[str] = set()
        # Set while this worker follows the socket (connected and resynced); for tests and logs.
        self.socket_connected = asyncio.Event()

    async def request_qr(self, instance: str, number: str | None = None) -> list[Event]:
        read_at = now_ms()
        # start-session restarts only a closed session (§2.2), and after a start with a phone
        # its stored config brings the phone back: switching between QR and code needs both.
        switching = number is not None or instance in self._by_phone
        if switching:
            answer = await self.client.status_answer(instance)
            if isinstance(answer, dict) and answer.get("status") in ("INITIALIZING", "QRCODE", "PHONECODE"):
                try:
                    await self.client.close_session(instance)
                except UpstreamError as exc:
                    if exc.code != "gateway_error":  # the QR phase answers 500, and still resets
                        raise
        event = await self.client.start_session(instance, number, forget_phone=switching)
        if number is not None:
            self._by_phone.add(instance)
        else:
            self._by_phone.discard(instance)
        # The answer is the state when the request arrived (§8.6): anything stored since then
        # (a QR webhook racing the answer) is newer, so stamp it like a resync read.
        return [dataclasses.replace(event, read_at_ms=read_at)] if event is not None else []

    async def request_logout(self, instance: str) -> None:
        await self.client.logout_session(instance)

    async def probe(self) -> None:
        # show-all-sessions needs the secret itself: it proves reachability AND the key, without
        # the bcrypt work of a generate-token (or a token for a made-up session). /healthz would
        # only prove the process is up.
        await self.client.show_all_sessions()

    async def describe(self, instance: str) -> str:
        try:
            answer = await self.client.status_answer(instance)
        except UpstreamError as exc:
            return f"an error ({exc.detail})"
        status = answer.get("status") if isinstance(answer, dict) else answer
        return f"status-session {status!r}"

    async def read_state(self, instance: str) -> list[Event]:
        event = await self.client.status_session(instance)
        return [event] if event is not None else []

    async def names(self) -> list[str]:
        """The sessions to resync: those in the store and those connected through this worker.
        (Not show-all-sessions: it lists every persisted session, most of them nobody's.)"""
        return sorted(set(await self.known()) | self.extra_instances)

    # -- the stream -------------------------------------------------------------------------------
    async def on_socket(self, event_name: str, data: Any) -> None:
        """One socket event: parse, store; a QR without a session name triggers a resync."""
        try:
            event = wppconnect.parse_socket(event_name, data)
        except BadEventError as exc:
            log.warning("ignored a malformed socket event: %s", exc.detail)
            return
        if event is None:
            if event_name == "qrCode":
                # After a close-session the QR comes without its session (§8.2): status-session
                # of each session we serve tells whose it is.
                self.sink.spawn("resync-wppconnect", self._resync_named())
            return
        await self.store_streamed(event)

    def _handler(self, event_name: str) -> Callable[..., Awaitable[None]]:
        async def handle(data: Any = None, *_: Any) -> None:
            await self.on_socket(event_name, data)
        return handle

    async def _resync_named(self) -> None:
        await self.resync_all(await self.names())

    async def stream(self) -> None:
        """Keep one socket on ``/`` (every session's events; §3); resync after each connect."""

        async def connected() -> None:
            await self.resync_all(await self.names())
            self.socket_connected.set()

        await follow_socket(
            self.name, self.url, "/", {name: self._handler(name) for name in wppconnect.SOCKET_EVENTS},
            on_connect=connected, on_trouble=self.poke, on_close=self.socket_connected.clear)
