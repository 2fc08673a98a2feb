"""A gateway the relay drives and follows: REST control, reachability, resync, event stream.

Any worker may call the gateway's REST API (``connect``/``logout`` from the routes). One worker,
the holder of the gateway's lease, follows it: it probes reachability, keeps the gateway's
Socket.IO stream when configured, and resyncs over REST after every (re)connect, because missed
events are never replayed. Everything a gateway learns goes to a narrow :class:`Sink` (the core):
events, and reachability, which the core shares between workers and shows to viewers.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from ..errors import UpstreamError
from ..lease import run_while_holding
from ..logs import Throttle
from ..metrics import Metrics
from ..snapshot import Event, now_ms
from ..state import Coordination

log = logging.getLogger("relay.gateway")


class Sink(Protocol):
    """What a gateway may tell the relay (implemented by :class:`relay.core.Relay`)."""

    async def ingest(self, event: Event) -> bool: ...

    async def instances_of(self, upstream: str) -> list[str]: ...

    async def report_reachability(self, upstream: str, ok: bool, detail: str | None) -> None: ...

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None: ...


class Gateway(abc.ABC):
    """One gateway. Subclasses supply the REST calls and, optionally, an event stream."""

    name: str = ""

    def __init__(self, sink: Sink, coordination: Coordination, metrics: Metrics, *,
                 probe_interval: float):
        self.sink = sink
        self.coordination = coordination
        self.metrics = metrics
        self.probe_interval = probe_interval
        self._wake = asyncio.Event()
        self._throttle = Throttle()
        self.extra_instances: set[str] = set()  # names seen by this worker (connect calls)

    # -- what a gateway must provide ----------------------------------------------------------
    @abc.abstractmethod
    async def request_qr(self, instance: str, number: str | None = None) -> list[Event]:
        """Ask for a (new) QR, or with ``number`` a pairing code for that phone; return what
        the answer already tells (may be nothing)."""

    @abc.abstractmethod
    async def request_logout(self, instance: str) -> None: ...

    @abc.abstractmethod
    async def probe(self) -> None:
        """Raise :class:`UpstreamError` unless the gateway answers with our credentials."""

    @abc.abstractmethod
    async def read_state(self, instance: str) -> list[Event]:
        """The instance's current state, read over REST (for resync). Return one event per
        independent read: each is dropped if the instance changed after the resync began."""

    @abc.abstractmethod
    async def describe(self, instance: str) -> str:
        """What the gateway's REST API says of the instance, in a few words for a log line
        (never raises for a gateway error)."""

    async def stream(self) -> None:
        """Follow the gateway's event stream until cancelled (default: no stream)."""
        await asyncio.Event().wait()

    async def store_streamed(self, event: Event | None) -> None:
        """Store one event that came over the gateway's socket (never raises into the socket)."""
        if event is None:
            return
        try:
            await self.sink.ingest(event)
        except Exception as exc:  # e.g. Redis down; the resync after the next gap repairs it
            held = self._throttle.ready("store")
            if held is not None:
                log.error("could not store a %s socket event: %s%s", self.name,
                          exc.__class__.__name__, f" ({held} more since)" if held else "")
            return
        self.metrics.count_webhook(self.name, event.cause, "socket")

    # -- used by the routes (any worker) --------------------------------------------------------
    async def connect(self, instance: str, number: str | None = None) -> None:
        """Ask the gateway for a QR (or a pairing code for ``number``). Failures become 502/504
        and are shown to viewers."""
        self.extra_instances.add(instance)
        started = now_ms()
        try:
            events = await self.request_qr(instance, number)
        except UpstreamError as exc:
            self._trouble(exc)
            raise
        for event in events:
            await self.sink.ingest(event)
        # Accepted (even as Evolution's {"count":0}): the instance is connecting, and the wait for
        # its QR starts (again) now. Stamped like a read, so that a QR or an "open" stored
        # meanwhile is not undone.
        await self.sink.ingest(Event(upstream=self.name, instance=instance, cause="connect",
                                     restart_wait=True, read_at_ms=started))

    async def logout(self, instance: str) -> None:
        try:
            await self.request_logout(instance)
        except UpstreamError as exc:
            self._trouble(exc)
            raise

    def _trouble(self, exc: UpstreamError) -> None:
        """A request failed: its caller gets the error. Whether the gateway is down is the
        probe's call, for every instance at once; if this worker runs it, now."""
        if exc.code in ("gateway_unreachable", "gateway_timeout", "gateway_unauthorized"):
            self.poke()

    async def known(self) -> list[str]:
        """Instances this gateway serves, as far as the store knows."""
        return await self.sink.instances_of(self.name)

    # -- resync --------------------------------------------------------------------------------
    async def resync(self, instance: str) -> None:
        read_at = now_ms()
        for event in await self.read_state(instance):
            await self.sink.ingest(dataclasses.replace(event, read_at_ms=read_at))

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
                await self.sink.report_reachability(self.name, True, None)
            except UpstreamError as exc:
                await self.sink.report_reachability(self.name, False, exc.detail)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.probe_interval)
            except asyncio.TimeoutError:
                pass

    async def follow(self) -> None:
        """What the lease holder runs: the monitor and the stream, together."""
        await asyncio.gather(self.monitor(), self.stream())

    def start(self) -> None:
        """Follow the gateway from whichever worker holds its lease (from now until shutdown)."""
        self.sink.spawn(f"follow-{self.name}", run_while_holding(
            self.coordination.lease(self.name), f"follow-{self.name}", self.follow))
