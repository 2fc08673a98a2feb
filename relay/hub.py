"""Local fan-out: from an instance's channel to this worker's viewers (Socket.IO and SSE).

One subscription per instance per process, counted: subscribe on the first local viewer,
unsubscribe on the last (broadcaster / centrifuge hub). An update is never decoded here: its JSON
is wrapped once into one Socket.IO packet that goes to every viewer of the instance.
Queues are bounded: an SSE stream only ever holds the newest snapshot (a latest-state channel
needs nothing older); Socket.IO viewers that fall behind are the delivery adapter's business.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from .metrics import Metrics
from .ports import Delivery
from .snapshot import Snapshot, now_ms
from .state import Broker
from .wire import Wired, decode, encode, frame, socketio_update, unwire


class SSEViewer:
    """One SSE stream: a single slot holding the newest snapshot not yet written."""

    def __init__(self) -> None:
        self.pending: tuple[int, str] | None = None
        self.last_seq = -1
        self.wakeup = asyncio.Event()

    def offer(self, seq: int, payload: str) -> None:
        if seq >= self.last_seq and (self.pending is None or seq >= self.pending[0]):
            self.pending = (seq, payload)
            self.wakeup.set()

    async def updates(self, keepalive: float) -> AsyncIterator[tuple[int, str] | None]:
        """(seq, snapshot JSON) as they come; None every ``keepalive`` seconds of silence."""
        while True:
            try:
                await asyncio.wait_for(self.wakeup.wait(), keepalive)
            except asyncio.TimeoutError:
                yield None
                continue
            self.wakeup.clear()
            if self.pending is None:
                continue
            seq, payload = self.pending
            self.pending = None
            self.last_seq = seq
            yield seq, payload


class Overlay:
    """What viewers must be told beyond their instance's record, as this worker sees it now:
    updates are paused (its store is unreachable), or the instance's gateway is unreachable."""

    def __init__(self) -> None:
        self.paused: str | None = None
        self.gateways_down: dict[str, str | None] = {}

    @property
    def active(self) -> bool:
        return self.paused is not None or bool(self.gateways_down)

    def apply(self, snap: Snapshot) -> Snapshot:
        name = snap["upstream"]["name"]
        if self.paused is not None:
            detail: str | None = self.paused
        elif name in self.gateways_down:
            detail = self.gateways_down[name]
        else:
            return snap
        copy = dict(snap)
        copy["upstream"] = {"name": name, "ok": False, "detail": detail}
        return copy  # type: ignore[return-value]


class Hub:
    """Who watches what on this worker, and how updates reach them."""

    def __init__(self, broker: Broker, delivery: Delivery, metrics: Metrics):
        self.broker = broker
        self.delivery = delivery
        self.metrics = metrics
        self._counts: dict[str, int] = defaultdict(int)
        self._subscribing: dict[str, asyncio.Task[bool]] = {}
        self._sse: dict[str, set[SSEViewer]] = defaultdict(set)
        # The last snapshot delivered per watched instance, (seq, JSON): what viewers are told
        # "is paused" when the store can't be read, and what is put back if Redis lost it.
        self.last: dict[str, tuple[int, str]] = {}
        # Watched instances whose channel the store confirmed since the listener's last gap:
        # their ``last`` is the current snapshot (every newer one comes on the channel), so a
        # viewer who joins is answered without reading the store (reconnect storms).
        self._current: set[str] = set()
        self.overlay = Overlay()

    # -- viewers ---------------------------------------------------------------------------
    async def watch(self, instance: str) -> None:
        """One more local viewer of ``instance``; subscribed to its channel on the first, and
        before the caller reads the snapshot, so no update can fall in between."""
        self._counts[instance] += 1
        pending = self._subscribing.get(instance)
        if pending is None:
            pending = asyncio.create_task(self.broker.subscribe(instance), name="subscribe")
            self._subscribing[instance] = pending
            self.metrics.subscribed.set(len(self._subscribing))
        # Shielded: a viewer that leaves mid-subscribe must not cancel it for the others.
        if await asyncio.shield(pending) and self.watched(instance):
            self._current.add(instance)

    async def unwatch(self, instance: str) -> None:
        self._counts[instance] -= 1
        if self._counts[instance] > 0:
            return
        del self._counts[instance]
        self.last.pop(instance, None)
        self._current.discard(instance)
        self._subscribing.pop(instance, None)
        self.metrics.subscribed.set(len(self._subscribing))
        await self.broker.unsubscribe(instance)

    def watched(self, instance: str) -> bool:
        return bool(self._counts.get(instance))

    def resynced(self, instance: str) -> None:
        """The snapshot of a watched instance was read again after the listener's gap (its
        channel was subscribed again first): ``last`` is current again."""
        if self.watched(instance) and instance in self.last:
            self._current.add(instance)

    def current(self, instance: str) -> str | None:
        """The snapshot JSON viewers of ``instance`` were last given, if it is known to be
        current (see ``_current``); None: read the store."""
        if instance in self._current and self.overlay.paused is None:
            last = self.last.get(instance)
            return last[1] if last is not None else None
        return None

    def seed(self, instance: str, snap: Snapshot) -> None:
        """A snapshot a local viewer was just given: what it shows until the next update (the
        overlay retells it, and a restore puts it back, like a delivered one)."""
        last = self.last.get(instance)
        if self.watched(instance) and (last is None or snap["seq"] > last[0]):
            self.last[instance] = (snap["seq"], encode(snap))

    def add_sse(self, instance: str, viewer: SSEViewer) -> None:
        self._sse[instance].add(viewer)

    def remove_sse(self, instance: str, viewer: SSEViewer) -> None:
        self._sse[instance].discard(viewer)
        if not self._sse[instance]:
            del self._sse[instance]

    # -- delivery ----------------------------------------------------------------------------
    async def deliver(self, instance: str, message: Wired, *, fresh: bool = True) -> None:
        """A message from the instance's channel (``fresh``) or a re-sent snapshot, split
        (:func:`~relay.wire.unwire`): hand it to every local viewer, undecoded."""
        seq, updated, _, _, payload = message
        last = self.last.get(instance)
        if last is not None and seq < last[0]:
            return  # a resync read raced a newer update: never show older state
        if instance in self._counts:
            self.last[instance] = (seq, payload)
        if fresh and updated:
            self.metrics.observe_lag(max(0.0, (now_ms() - updated) / 1000))
        if self.overlay.active:  # rare: decode only then
            payload = encode(self.overlay.apply(decode(payload)))
        sse = self._sse.get(instance, ())
        for viewer in sse:
            viewer.offer(seq, payload)
        count = await self.delivery.send_update(instance, socketio_update(payload))
        self.metrics.count_delivered(count + len(sse))

    async def retell(self, instances: list[str] | None = None) -> None:
        """Send the last snapshot again to local viewers (all, or of ``instances``), as the
        overlay shows it now: same seq, only the upstream status differs."""
        for instance, (seq, payload) in list(self.last.items()):
            if instances is None or instance in instances:
                await self.deliver(instance, unwire(frame(seq, 0, payload)), fresh=False)

    async def degrade(self, detail: str) -> None:
        """The channel listener is down: tell every local viewer, from the last known state."""
        self.overlay.paused = detail
        self._current.clear()  # a gap: updates may have been missed until the resync
        self.metrics.listener_up.set(0)
        await self.retell()

    def recover(self) -> None:
        self.overlay.paused = None
        self.metrics.listener_up.set(1)
