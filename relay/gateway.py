"""The gateway the relay drives: REST control (connect, logout), reachability, resync.

Whatever the gateway answers, viewers learn whether it is reachable through the snapshot's
``upstream`` field, and callers get a clear 502/504 in the gateway's own words.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp

from .config import Settings
from .errors import UpstreamError
from .snapshot import Event
from .tasks import Tasks
from .upstreams.evolution import EvolutionClient

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("relay.gateway")


class Gateway:
    """Evolution's REST API as the relay uses it."""

    name = "evolution"

    def __init__(self, client: EvolutionClient, rt: "Runtime"):
        self.client = client
        self.rt = rt
        self.ok = True
        self.detail: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, http: aiohttp.ClientSession,
                      rt: "Runtime") -> "Gateway | None":
        if settings.evolution_url and settings.evolution_apikey:
            client = EvolutionClient(http, settings.evolution_url, settings.evolution_apikey,
                                     settings.gateway_timeout)
            return cls(client, rt)
        return None

    async def start(self, tasks: Tasks) -> None:
        """Start following the gateway (its Socket.IO stream, when configured)."""

    async def close(self) -> None:
        """Stop following the gateway."""

    async def _mark(self, instance: str, ok: bool, detail: str | None) -> None:
        self.ok, self.detail = ok, detail
        self.rt.metrics.upstream_up.labels(self.name).set(1 if ok else 0)
        await self.rt.ingest(Event(upstream=self.name, instance=instance, cause="upstream",
                                   upstream_ok=ok, upstream_detail=detail))

    async def connect(self, instance: str) -> None:
        """Ask the gateway for a (new) QR. It arrives in the answer or later as an event."""
        try:
            event = await self.client.connect(instance)
        except UpstreamError as exc:
            if exc.code != "instance_not_found":
                await self._mark(instance, False, exc.detail)
            raise
        await self._mark(instance, True, None)
        if event is not None:
            await self.rt.ingest(event)

    async def logout(self, instance: str) -> None:
        try:
            await self.client.logout(instance)
        except UpstreamError as exc:
            if exc.code not in ("instance_not_found", "gateway_error"):
                await self._mark(instance, False, exc.detail)
            raise
        await self._mark(instance, True, None)
