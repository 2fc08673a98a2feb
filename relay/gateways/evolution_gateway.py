"""Evolution API v2 as a :class:`~relay.gateway.Gateway`: REST control and its Socket.IO stream.

Socket facts (protocols/evolution.md §3): event names are the dotted strings; ``global`` mode
emits every instance's events on ``/``; ``instances`` mode uses one namespace per instance, which
does not exist until Evolution first emits to it ("Invalid namespace"), so those connects are
retried with backoff; the key goes in the handshake (header), never in the ``auth`` payload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import aiohttp

from ..errors import BadEventError, UpstreamError
from ..metrics import Metrics
from ..snapshot import Event
from ..state import Coordination
from . import evolution
from .base import Gateway, Sink
from .evolution_api import EvolutionClient
from .follow import follow_socket

log = logging.getLogger("relay.evolution")
EVENTS = ("qrcode.updated", "connection.update", "logout.instance", "remove.instance")


class EvolutionGateway(Gateway):
    name = "evolution"

    def __init__(self, sink: Sink, coordination: Coordination, metrics: Metrics,
                 http: aiohttp.ClientSession, *, url: str, apikey: str, mode: str, timeout: float,
                 probe_interval: float):
        super().__init__(sink, coordination, metrics, probe_interval=probe_interval)
        self.url = url
        self.apikey = apikey
        self.mode = mode
        self.client = EvolutionClient(http, url, apikey, timeout)
        self.gateway_instances: set[str] = set()

    async def request_qr(self, instance: str, number: str | None = None) -> list[Event]:
        if number is not None and await self.client.state_of(instance) == "connecting":
            # While connecting, Evolution ignores `number` and answers the current QR (§4.3):
            # end that socket first (logout works while connecting), then start one with it.
            await self._end_pairing(instance)
        event = await self.client.connect(instance, number)
        if number is None and event is not None and event.qr is not None and event.qr.pairing_code:
            # A pairing by phone number is running: for a QR, end it and start a plain one.
            await self._end_pairing(instance)
            event = await self.client.connect(instance)
        return [event] if event is not None else []

    async def _end_pairing(self, instance: str, wait: float = 5.0) -> None:
        try:
            await self.client.logout(instance)
        except UpstreamError as exc:
            if exc.code != "gateway_error":  # 400 "not connected": nothing to end
                raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline and await self.client.state_of(instance) == "connecting":
            await asyncio.sleep(0.2)

    async def request_logout(self, instance: str) -> None:
        await self.client.logout(instance)

    async def probe(self) -> None:
        # fetchInstances needs the key, so a wrong key shows here too; its names feed
        # `instances` mode.
        self.gateway_instances = set(await self.client.fetch_instances())

    async def describe(self, instance: str) -> str:
        try:
            return f"connectionState {await self.client.state_of(instance)!r}"
        except UpstreamError as exc:
            return f"an error ({exc.detail})"

    async def read_state(self, instance: str) -> list[Event]:
        """connectionState, plus the current QR while connecting, as ONE event (one read)."""
        try:
            state = await self.client.connection_state(instance)
        except UpstreamError as exc:
            if exc.code == "instance_not_found":
                return []
            raise
        if state is None:
            return []
        if state.state == "connecting":
            # While connecting, `connect` answers the current QR without side effects (§4.3).
            answer = await self.client.connect(instance)
            if answer is not None:
                return [dataclasses.replace(answer, cause="resync")]
        return [state]

    # -- the stream -------------------------------------------------------------------------------
    async def stream(self) -> None:
        if self.mode == "global":
            await self.follow_namespace("/")
        elif self.mode == "instances":
            await self.follow_instances()
        else:
            await super().stream()

    async def follow_instances(self) -> None:
        """One namespace follower per instance: from fetchInstances, the store, and connects."""
        followers: dict[str, asyncio.Task[None]] = {}  # owned here: cancelled on the way out
        try:
            while True:
                wanted = self.gateway_instances | set(await self.known()) | self.extra_instances
                for name in sorted(wanted - set(followers)):
                    if "/" in name or "?" in name:
                        log.warning("cannot follow an instance whose name has '/' or '?'")
                        continue
                    followers[name] = asyncio.create_task(self.follow_namespace(f"/{name}"),
                                                          name=f"evolution-ns-{len(followers)}")
                for name, task in list(followers.items()):
                    if task.done():  # crashed (it never returns otherwise): log and restart
                        if not task.cancelled() and task.exception() is not None:
                            log.error("follower of one namespace crashed", exc_info=task.exception())
                        del followers[name]
                await asyncio.sleep(self.probe_interval / 2)
        finally:
            for task in followers.values():
                task.cancel()
            await asyncio.gather(*followers.values(), return_exceptions=True)

    async def on_event(self, data: Any) -> None:
        try:
            event = evolution.parse(data)
        except BadEventError as exc:
            log.warning("ignored a malformed socket event: %s", exc.detail)
            return
        await self.store_streamed(event)

    async def follow_namespace(self, namespace: str) -> None:
        """Keep one namespace (``/`` in global mode) connected; resync after each connect."""
        await follow_socket(
            self.name, self.url, namespace, {name: self.on_event for name in EVENTS},
            headers={"apikey": self.apikey}, on_trouble=self.poke,
            on_connect=lambda: self.resync_all(None if namespace == "/" else [namespace[1:]]),
            # Evolution answered: the instance just hasn't emitted since it started (§3.4).
            expected_refusal="Invalid namespace")
