"""The relay's core: the one object between the edges and the contracts.

Routes, webhooks, the Socket.IO handlers and the gateway followers call it; it never imports
them (centrifuge's ``Node``, uvicorn's ``Server``). It owns the records, the broker, the local
hub, the gateways' shared reachability and the background tasks, and offers what the edges need:
ingest an event, read a snapshot, watch and unwatch an instance, ask a gateway for a QR.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from .asking import Asks
from .errors import RelayError, StoreUnavailable
from .hub import Hub, SSEViewer
from .metrics import Metrics
from .ports import Delivery, Gateway
from .reachability import Reachability
from .snapshot import Event, Record, Snapshot, blank, live, now_ms
from .state import Backend
from .tasks import Tasks
from .watchdog import Watchdog
from .wire import decode, encode, frame, unwire

log = logging.getLogger("relay")
READY_WAIT = 1.0  # seconds /readyz waits for the store before saying it is not ready


class NoGateway(RelayError):
    code = "no_gateway"
    status = 501


class Relay:
    """Store, broker, hub, gateway status and tasks of one worker, and the operations on them."""

    def __init__(self, backend: Backend, delivery: Delivery, metrics: Metrics, *,
                 default_upstream: str, qr_wait: float = 30.0, auto_connect: bool = False,
                 gateway_poll: float = 5.0):
        self.records = backend.records
        self.coordination = backend.coordination
        self.broker = backend.broker
        self.metrics = metrics
        self.default_upstream = default_upstream
        self.qr_wait = qr_wait
        self.auto_connect = auto_connect
        self.gateway_poll = gateway_poll
        self.hub = Hub(backend.broker, delivery, metrics)
        self.tasks = Tasks()
        self.asks = Asks(backend.coordination, lambda i: self.snapshot(i, read=True))
        self.gateways: dict[str, Gateway] = {}
        self.started = False
        self.reachability = Reachability(self.hub, backend.coordination, metrics, self.gateways,
                                         self.spawn)
        self.watchdog = Watchdog(lambda instance: self.spawn("watchdog", self.stall(instance)))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.broker.start(self)
        self.metrics.listener_up.set(1 if self.broker.healthy else 0)
        self.tasks.spawn("loop-lag", self.metrics.watch_loop_lag())
        for gateway in self.gateways.values():
            gateway.start()
        if self.gateways:
            self.tasks.spawn("gateway-status", self.reachability.follow(self.gateway_poll))
        self.started = True

    async def close(self) -> None:
        self.started = False
        self.watchdog.close()
        await self.tasks.close()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job owned by this worker (cancelled with it)."""
        self.tasks.spawn(name, coro)

    # -- what the edges call -----------------------------------------------------------------
    async def ingest(self, event: Event) -> bool:
        """Store one gateway event (and publish it). True when viewers got an update."""
        return await self.records.apply(event) is not None

    async def snapshot(self, instance: str, *, read: bool = False) -> Snapshot:
        """The snapshot to show now: stored or blank, never with an expired QR. Without a read
        of the store when this worker's viewers already have the current one (``read`` forces
        it)."""
        known = None if read else self.hub.current(instance)
        if known is not None:
            return self.hub.overlay.apply(live(decode(known)))
        try:
            stored = await self.records.get(instance)
        except RelayError:
            raise
        except Exception as exc:  # a store outage must reach the caller as a clear 503
            self.metrics.store_errors.inc()
            raise StoreUnavailable(f"state store unavailable: {exc.__class__.__name__}") from exc
        if stored is None:
            return self.hub.overlay.apply(blank(instance, self.default_upstream))
        snap = live(stored.snapshot)
        if self.hub.watched(instance):
            self.watchdog.arm(instance, stored.deadline)
            self.hub.seed(instance, snap)
        return self.hub.overlay.apply(snap)

    async def watch(self, instance: str) -> None:
        """One more local viewer of ``instance`` (read the snapshot after this, not before)."""
        await self.hub.watch(instance)

    async def unwatch(self, instance: str) -> None:
        await self.hub.unwatch(instance)
        if not self.hub.watched(instance):
            self.watchdog.forget(instance)

    async def sse(self, instance: str, keepalive: float) -> AsyncIterator[tuple[int, str] | None]:
        """(seq, snapshot JSON) for one SSE stream, the current snapshot first; None every
        ``keepalive`` seconds of silence (so proxies keep the stream open)."""
        viewer = SSEViewer()
        self.hub.add_sse(instance, viewer)
        self.metrics.viewers.inc()
        try:
            await self.hub.watch(instance)
            first = await self.snapshot(instance)
            viewer.offer(first["seq"], encode(first))
            self.viewed(instance, first)
            async for item in viewer.updates(keepalive):
                yield item
        finally:
            self.hub.remove_sse(instance, viewer)
            self.metrics.viewers.dec()
            await self.unwatch(instance)

    async def gateway_for(self, instance: str) -> Gateway:
        """The gateway serving an instance: the one its snapshot names, else the first configured."""
        if not self.gateways:
            raise NoGateway("the relay has no gateway to ask: set RELAY_EVOLUTION_URL "
                            "(and RELAY_EVOLUTION_APIKEY) or RELAY_WPPCONNECT_URL")
        record = await self.records.get(instance)
        if record is not None and record.snapshot["upstream"]["name"] in self.gateways:
            return self.gateways[record.snapshot["upstream"]["name"]]
        return next(iter(self.gateways.values()))

    async def connect(self, instance: str, number: str | None = None, *,
                      caller: str | None = None) -> Snapshot:
        """Ask the instance's gateway for a (new) QR, or a pairing code for ``number``; it comes
        as an update. Asks of a ``caller`` (a viewer's token) go through :class:`Asks`."""
        async def send() -> None:
            await (await self.gateway_for(instance)).connect(instance, number)
        if caller is not None:
            return await self.asks.ask(instance, number, caller, send)
        await send()
        return await self.snapshot(instance, read=True)  # what the gateway's answer changed

    def controls(self) -> dict[str, bool]:
        """What a page may offer: asking for a QR, or for a code to type on the phone."""
        return {"connect": bool(self.gateways), "phone": bool(self.gateways)}

    def viewed(self, instance: str, snapshot: Snapshot) -> None:
        """A viewer subscribed and got ``snapshot``. With auto-connect on, a closed or unknown
        instance (never one removed or past its QR limit) is asked for a QR: once per
        RELAY_QR_WAIT per instance across all workers."""
        reason = snapshot["reason"]
        if (self.auto_connect and self.gateways and snapshot["state"] in ("close", "unknown")
                and (reason is None or reason["code"] not in ("removed", "qr_limit"))):
            self.spawn("auto-connect", self._auto_connect(instance))

    async def _auto_connect(self, instance: str) -> None:
        try:
            if await self.coordination.claim(f"auto-connect:{instance}", self.qr_wait):
                await self.connect(instance)
        except RelayError as exc:  # the viewer sees it in the snapshot (upstream, reason)
            log.info("could not ask the gateway for a QR for %r on view: %s", instance, exc.detail)
        except Exception as exc:
            log.warning("auto-connect of one instance failed: %s", exc.__class__.__name__)

    async def logout(self, instance: str) -> Snapshot:
        gateway = await self.gateway_for(instance)
        await gateway.logout(instance)
        return await self.snapshot(instance, read=True)

    async def readiness(self) -> dict[str, Any]:
        """Ready when the store answers and the channel listener is up; gateways are reported
        (not required: a relay whose gateway is down must stay in the balancer to say so)."""
        checks: dict[str, Any] = {"started": self.started}
        try:  # a hung store must not hang the balancer's probe: answer within READY_WAIT
            checks["store"] = bool(self.started and await asyncio.wait_for(self.records.ping(),
                                                                            READY_WAIT))
        except Exception:
            checks["store"] = False
        checks["listener"] = bool(self.started and self.broker.healthy)
        gateways = []
        for name in self.gateways:
            ok, detail = self.reachability.view(name)
            try:
                status = await asyncio.wait_for(self.coordination.status(name), READY_WAIT) \
                    if checks["store"] else None
            except Exception:
                status = None
            gateways.append({"name": name, **(status or {"ok": ok, "detail": detail})})
        checks["gateways"] = gateways
        return {"ok": bool(checks["store"] and checks["listener"]), "checks": checks}

    # -- the broker reports here ---------------------------------------------------------------
    async def deliver(self, instance: str, message: str) -> None:
        try:
            wired = unwire(message)  # split once, for the cache, the viewers and the watchdog
        except ValueError:
            log.error("dropped a malformed message on the channel of one instance")
            return
        self.records.observe(instance, wired, len(message))
        await self.hub.deliver(instance, wired)
        if self.hub.watched(instance):
            self.watchdog.arm(instance, wired.deadline())

    async def resume(self, instances: list[str]) -> None:
        """After a gap in the channel (listener reconnected): put back what Redis may have lost,
        then push fresh snapshots to local viewers."""
        self.hub.recover()
        seen = {i: Record(snapshot=decode(p)) for i, (_, p) in self.hub.last.items()}
        try:
            await self.records.restore(seen)
        except Exception as exc:
            log.warning("could not restore state after the gap: %s", exc.__class__.__name__)
        for instance in instances:
            if self.hub.watched(instance):
                try:
                    snap = await self.snapshot(instance, read=True)
                except RelayError as exc:
                    log.warning("resync of one instance failed: %s", exc.detail)
                    continue
                await self.hub.deliver(instance, unwire(frame(snap["seq"], snap["updatedAt"] or 0,
                                                              encode(snap))), fresh=False)
                self.hub.resynced(instance)

    async def degrade(self, detail: str) -> None:
        await self.hub.degrade(detail)

    # -- the gateways report here ----------------------------------------------------------------
    async def instances_of(self, upstream: str) -> list[str]:
        """Instances a gateway serves, as far as the store knows."""
        names = []
        for instance in await self.records.instances():
            record = await self.records.get(instance)
            if record is not None and record.snapshot["upstream"]["name"] == upstream:
                names.append(instance)
        return names

    async def report_reachability(self, upstream: str, ok: bool, detail: str | None) -> None:
        """What the lease holder's probe found (see :class:`relay.reachability.Reachability`)."""
        await self.reachability.report(upstream, ok, detail)

    # -- the pairing watchdog ----------------------------------------------------------------------
    async def stall(self, instance: str) -> None:
        """An instance this worker watches waited too long for a QR: store "no QR" (one worker's
        write wins; the others change nothing) and, from that worker, log the evidence."""
        try:
            record = await self.records.get(instance)
            if record is None or record.deadline is None:
                return
            event = Event(upstream=record.snapshot["upstream"]["name"], instance=instance,
                          cause="watchdog", stall=True)
            if await self.ingest(event):
                await self._report_stall(instance, record)
                return
            latest = await self.records.get(instance)  # not due after all (e.g. a new connect)
            if latest is not None and self.hub.watched(instance):
                self.watchdog.arm(instance, latest.deadline)
        except Exception as exc:  # e.g. Redis down: the next delivery re-arms it
            log.warning("pairing watchdog of one instance failed: %s", exc.__class__.__name__)

    async def _report_stall(self, instance: str, record: Record) -> None:
        """One log line per stall: how long, how many gateway events, what REST says."""
        name = record.snapshot["upstream"]["name"]
        gateway = self.gateways.get(name)
        said = "not asked (no gateway configured)"
        if gateway is not None:
            try:
                said = await gateway.describe(instance)
            except Exception as exc:
                said = f"no answer ({exc.__class__.__name__})"
        waited = (now_ms() - (record.waiting_since or now_ms())) / 1000
        log.warning("no QR code for instance %r after %.0f s of waiting: %d event(s) from %s "
                    "meanwhile, its REST API says %s; it may not be able to reach WhatsApp",
                    instance, waited, record.waiting_events, name, said)
