"""The gateways the relay drives and follows: REST control, reachability, resync, event streams.

Any worker may call the gateway's REST API (``connect``/``logout`` from the routes). One worker,
the holder of the gateway's lease, follows it: it probes reachability, keeps the gateway's
Socket.IO stream when configured, and resyncs over REST after every (re)connect, because missed
events are never replayed. Reachability is shared through the store, so whichever worker sees a
failure, every viewer's snapshot says so (``upstream.ok = false`` with the reason), and it clears
by itself when the holder's probe succeeds again.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import socketio

from .errors import UpstreamError
from .lease import run_while_holding
from .snapshot import Event, now_ms
from .tasks import Backoff, Tasks

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("relay.gateway")


class Gateway(abc.ABC):
    """One gateway. Subclasses supply the REST calls and, optionally, an event stream."""

    name: str = ""

    def __init__(self, rt: "Runtime"):
        self.rt = rt
        self.ok = True
        self.detail: str | None = None
        self._wake = asyncio.Event()
        self.extra_instances: set[str] = set()  # names seen by this worker (connect calls)

    # -- what a gateway must provide ----------------------------------------------------------
    @abc.abstractmethod
    async def request_qr(self, instance: str) -> list[Event]:
        """Ask for a (new) QR; return what the answer already tells (may be nothing)."""

    @abc.abstractmethod
    async def request_logout(self, instance: str) -> None: ...

    @abc.abstractmethod
    async def probe(self) -> None:
        """Raise :class:`UpstreamError` unless the gateway answers with our credentials."""

    @abc.abstractmethod
    async def read_state(self, instance: str) -> list[Event]:
        """The instance's current state, read over REST (for resync). Return one event per
        independent read: each is dropped if the instance changed after the resync began."""

    async def stream(self) -> None:
        """Follow the gateway's event stream until cancelled (default: no stream)."""
        await asyncio.Event().wait()

    async def store_streamed(self, event: Event | None) -> None:
        """Store one event that came over the gateway's socket (never raises into the socket)."""
        if event is None:
            return
        try:
            await self.rt.ingest(event)
        except Exception as exc:  # e.g. Redis down; the resync after the next gap repairs it
            log.error("could not store a %s socket event: %s", self.name, exc.__class__.__name__)
            return
        self.rt.metrics.webhooks.labels(self.name, event.cause, "socket").inc()

    async def follow_socket(self, url: str, namespace: str,
                            handlers: dict[str, Callable[..., Awaitable[None]]], *,
                            headers: dict[str, str] | None = None,
                            on_connect: Callable[[], Awaitable[None]],
                            on_close: Callable[[], None] = lambda: None,
                            expected_refusal: str | None = None) -> None:
        """Keep one Socket.IO namespace of the gateway connected, until cancelled.

        Reconnects with capped backoff (python-socketio's own reconnection is off: it does not
        retry a refused namespace, and every (re)connect must be followed by ``on_connect``, a
        resync, because the gateway never replays what was missed). A refusal whose message
        contains ``expected_refusal`` is retried quietly; anything else makes the holder probe.
        """
        backoff = Backoff(0.5, 10.0)
        while True:
            client = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
            closed = asyncio.Event()
            refusals: list[Any] = []
            for name, handler in handlers.items():
                client.on(name, handler, namespace=namespace)
            client.on("disconnect", lambda *_: closed.set(), namespace=namespace)
            client.on("connect_error", refusals.append, namespace=namespace)
            try:
                await client.connect(url, headers=headers or {}, namespaces=[namespace],
                                     transports=["websocket"], wait_timeout=10)
            except (socketio.exceptions.ConnectionError, OSError, asyncio.TimeoutError) as exc:
                reason = _refusal(refusals, exc)
                if expected_refusal is not None and expected_refusal in reason:
                    log.debug("%s socket %s: %s; retrying", self.name, namespace, reason)
                else:
                    log.warning("%s socket %s: %s", self.name, namespace, reason)
                    self.poke()
                await _disconnect(client)
                await asyncio.sleep(backoff.next())
                continue
            try:
                backoff.reset()
                log.info("following %s's socket (%s)", self.name, namespace)
                await on_connect()
                await closed.wait()
                log.warning("%s socket %s dropped; reconnecting", self.name, namespace)
                self.poke()
            finally:
                on_close()
                await _disconnect(client)
            await asyncio.sleep(backoff.next())

    # -- used by the routes (any worker) --------------------------------------------------------
    async def connect(self, instance: str) -> None:
        """Ask the gateway for a QR. Failures become 502/504 and are shown to viewers."""
        self.extra_instances.add(instance)
        try:
            events = await self.request_qr(instance)
        except UpstreamError as exc:
            if exc.code != "instance_not_found":
                await self.set_reachable(False, exc.detail, also=instance)
            raise
        await self.set_reachable(True, None)
        for event in events:
            await self.rt.ingest(event)

    async def logout(self, instance: str) -> None:
        try:
            await self.request_logout(instance)
        except UpstreamError as exc:
            if exc.code in ("gateway_unreachable", "gateway_timeout", "gateway_unauthorized"):
                await self.set_reachable(False, exc.detail, also=instance)
            raise
        await self.set_reachable(True, None)

    # -- reachability, shared by all workers ---------------------------------------------------
    async def known(self) -> list[str]:
        """Instances this gateway serves, as far as the store knows."""
        names = []
        for instance in await self.rt.store.instances():
            snap = await self.rt.store.get(instance)
            if snap is not None and snap["upstream"]["name"] == self.name:
                names.append(instance)
        return names

    async def set_reachable(self, ok: bool, detail: str | None, *, also: str | None = None) -> None:
        """Record reachability; on a change, tell every instance's viewers (and resync on recovery)."""
        self.ok, self.detail = ok, detail
        self.rt.metrics.upstream_up.labels(self.name).set(1 if ok else 0)
        previous = await self.rt.store.swap_status(self.name, {"ok": ok, "detail": detail})
        changed = previous is None or previous.get("ok") != ok or previous.get("detail") != detail
        targets = set(await self.known()) if changed else set()
        if also is not None:
            targets.add(also)
        if changed and previous is not None:
            if ok:
                log.info("%s is reachable again", self.name)
            else:
                log.error("%s is unreachable: %s", self.name, detail)
        for instance in sorted(targets):
            await self.rt.ingest(Event(upstream=self.name, instance=instance, cause="upstream",
                                       upstream_ok=ok, upstream_detail=detail))
        if ok and changed:
            # Owned by the app, not awaited here: a recovery seen by a user's request must not
            # make that request wait for a resync of every instance.
            self.rt.tasks.spawn(f"resync-{self.name}", self.resync_all())

    async def shared_status(self) -> dict[str, object]:
        status = await self.rt.store.status(self.name)
        return {"name": self.name, **(status or {"ok": self.ok, "detail": self.detail})}

    # -- resync --------------------------------------------------------------------------------
    async def resync(self, instance: str) -> None:
        read_at = now_ms()
        for event in await self.read_state(instance):
            await self.rt.ingest(dataclasses.replace(event, read_at_ms=read_at))

    async def resync_all(self, instances: list[str] | None = None) -> None:
        for instance in instances if instances is not None else await self.known():
            try:
                await self.resync(instance)
            except UpstreamError as exc:
                log.warning("resync of %s stopped: %s", self.name, exc.detail)
                self.poke()
                return

    # -- the lease holder's work -----------------------------------------------------------------
    def poke(self) -> None:
        """Probe now (e.g. the stream dropped)."""
        self._wake.set()

    async def monitor(self) -> None:
        while True:
            try:
                await self.probe()
                await self.set_reachable(True, None)
            except UpstreamError as exc:
                await self.set_reachable(False, exc.detail)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.rt.settings.probe_interval)
            except asyncio.TimeoutError:
                pass

    async def follow(self) -> None:
        """What the lease holder runs: the monitor and the stream, together."""
        await asyncio.gather(self.monitor(), self.stream())

    def start(self, tasks: Tasks) -> None:
        tasks.spawn(f"follow-{self.name}",
                    run_while_holding(self.rt.store.lease(self.name), f"follow-{self.name}", self.follow))

    async def close(self) -> None:
        """Nothing to close: the HTTP session and tasks belong to the app."""


def _refusal(refusals: list[Any], exc: BaseException) -> str:
    """The server's own reason for refusing a connect (CONNECT_ERROR data), else the error's."""
    for item in reversed(refusals):
        if isinstance(item, dict) and item.get("message"):
            return str(item["message"])
        if isinstance(item, str) and item:
            return item
    return str(exc) or exc.__class__.__name__


async def _disconnect(client: socketio.AsyncClient) -> None:
    try:
        await client.disconnect()
    except Exception:  # already gone
        pass


def gateways_from_settings(rt: "Runtime") -> dict[str, Gateway]:
    """The gateways the settings configure (Evolution, WPPConnect, or both)."""
    gateways: dict[str, Gateway] = {}
    s = rt.settings
    assert rt.http is not None
    if s.evolution_url and s.evolution_apikey:
        from .upstreams.evolution_gateway import EvolutionGateway

        gateways["evolution"] = EvolutionGateway(rt)
    if s.wppconnect_url and s.wppconnect_secret_key:
        from .upstreams.wppconnect_gateway import WPPConnectGateway

        gateways["wppconnect"] = WPPConnectGateway(rt)
    return gateways
