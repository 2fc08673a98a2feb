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
from typing import TYPE_CHECKING, Any

import socketio

from ..errors import BadEventError, UpstreamError
from ..gateway import Gateway
from ..tasks import Backoff
from . import evolution

if TYPE_CHECKING:
    from ..app import Runtime

log = logging.getLogger("relay.evolution")
EVENTS = ("qrcode.updated", "connection.update", "logout.instance", "remove.instance")


class EvolutionGateway(Gateway):
    name = "evolution"

    def __init__(self, rt: "Runtime"):
        super().__init__(rt)
        s = rt.settings
        assert s.evolution_url and s.evolution_apikey and rt.http is not None
        self.url = s.evolution_url
        self.apikey = s.evolution_apikey
        self.mode = s.evolution_socket
        self.client = evolution.EvolutionClient(rt.http, s.evolution_url, s.evolution_apikey,
                                                s.gateway_timeout)
        self.gateway_instances: set[str] = set()

    async def request_qr(self, instance: str) -> list[evolution.Event]:
        event = await self.client.connect(instance)
        return [event] if event is not None else []

    async def request_logout(self, instance: str) -> None:
        await self.client.logout(instance)

    async def probe(self) -> None:
        # fetchInstances needs the key, so a wrong key shows here too; its names feed
        # `instances` mode.
        self.gateway_instances = set(await self.client.fetch_instances())

    async def read_state(self, instance: str) -> list[evolution.Event]:
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
        followers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                wanted = self.gateway_instances | set(await self.known()) | self.extra_instances
                for name in sorted(wanted - set(followers)):
                    if "/" in name or "?" in name:
                        log.warning("cannot follow an instance whose name has '/' or '?'")
                        continue
                    followers[name] = asyncio.ensure_future(self.follow_namespace(f"/{name}"))
                    followers[name].set_name(f"evolution-ns-{len(followers)}")
                for name, task in list(followers.items()):
                    if task.done():  # crashed (it never returns otherwise): log and restart
                        if not task.cancelled() and task.exception() is not None:
                            log.error("follower of one namespace crashed", exc_info=task.exception())
                        del followers[name]
                await asyncio.sleep(self.rt.settings.probe_interval / 2)
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
        if event is not None:
            await self.rt.ingest(event)
            self.rt.metrics.webhooks.labels(self.name, event.cause, "socket").inc()

    async def follow_namespace(self, namespace: str) -> None:
        """Keep one namespace connected: reconnect with capped backoff, resync after each connect."""
        backoff = Backoff(0.5, 10.0)
        while True:
            client = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
            closed = asyncio.Event()
            refusals: list[Any] = []
            for name in EVENTS:
                client.on(name, self.on_event, namespace=namespace)
            client.on("disconnect", lambda *_: closed.set(), namespace=namespace)
            client.on("connect_error", refusals.append, namespace=namespace)
            try:
                await client.connect(self.url, headers={"apikey": self.apikey}, namespaces=[namespace],
                                     transports=["websocket"], wait_timeout=10)
            except (socketio.exceptions.ConnectionError, OSError, asyncio.TimeoutError) as exc:
                reason = _reason(refusals, exc)
                if "Invalid namespace" in reason:
                    # Evolution answered: the instance just hasn't emitted since it started.
                    log.debug("namespace %s does not exist yet; retrying", namespace)
                else:
                    log.warning("Evolution socket %s: %s", namespace, reason)
                    self.poke()
                await _disconnect(client)
                await asyncio.sleep(backoff.next())
                continue
            try:
                backoff.reset()
                log.info("following Evolution's socket (%s)", "global" if namespace == "/" else "an instance")
                await self.resync_all(None if namespace == "/" else [namespace[1:]])
                await closed.wait()
                log.warning("Evolution socket %s dropped; reconnecting", namespace)
                self.poke()
            finally:
                await _disconnect(client)
            await asyncio.sleep(backoff.next())


def _reason(refusals: list[Any], exc: BaseException) -> str:
    for item in reversed(refusals):
        if isinstance(item, dict) and item.get("message"):
            return str(item["message"])
        if isinstance(item, str) and item:
            return item
    return str(exc) or exc.__class__.__name__


async def _disconnect(client: socketio.AsyncClient) -> None:
    try:
        await client.disconnect()
    except Exception:
        pass
