"""Local fan-out: from an instance's channel to this worker's viewers (Socket.IO rooms and SSE).

One subscription per instance per process, counted: subscribe on the first local viewer,
unsubscribe on the last (broadcaster / centrifuge hub). An update is never decoded here: its JSON
is wrapped once into one Socket.IO packet that goes to every viewer of the instance.
Queues are bounded: an SSE stream only ever holds the newest snapshot (a latest-state channel
needs nothing older), and a Socket.IO viewer whose send queue keeps growing is disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import socketio
from engineio import packet as eio_packet

from .errors import RelayError, StoreUnavailable
from .metrics import Metrics
from .snapshot import Snapshot, blank, encode, frame, live, now_ms, unwire, wire
from .state import Broker, StateStore

log = logging.getLogger("relay.fanout")
MAX_QUEUED_PACKETS = 64  # ~400 KB of QR updates; a viewer this far behind is gone or too slow.


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


class Hub:
    """Who watches what on this worker, and how updates reach them."""

    def __init__(self, sio: socketio.AsyncServer, store: StateStore, broker: Broker, metrics: Metrics,
                 default_upstream: str):
        self.sio = sio
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.default_upstream = default_upstream
        self._counts: dict[str, int] = defaultdict(int)
        self._subscribing: dict[str, asyncio.Task[None]] = {}
        self._rooms: dict[str, set[str]] = defaultdict(set)  # sid -> instances
        self._sse: dict[str, set[SSEViewer]] = defaultdict(set)
        # The last snapshot delivered per watched instance, (seq, JSON): what viewers are told
        # "is paused" when the store can't be read, and what is put back if Redis lost it.
        self._last: dict[str, tuple[int, str]] = {}
        # Set while the relay cannot serve fresh state (e.g. Redis down); shown to viewers.
        self.degraded: str | None = None
        # eio sid -> the TCP transport of that websocket, to cut a stalled viewer for real.
        self._transports: dict[str, asyncio.WriteTransport] = {}

    # -- viewers ---------------------------------------------------------------------------
    async def _add(self, instance: str) -> None:
        self._counts[instance] += 1
        task = self._subscribing.get(instance)
        if task is None:
            task = asyncio.ensure_future(self.broker.subscribe(instance))
            self._subscribing[instance] = task
            self.metrics.subscribed.set(len(self._subscribing))
        # Subscribed before the snapshot is read, so no update can fall in between.
        await asyncio.shield(task)

    async def _remove(self, instance: str) -> None:
        self._counts[instance] -= 1
        if self._counts[instance] > 0:
            return
        del self._counts[instance]
        self._last.pop(instance, None)
        self._subscribing.pop(instance, None)
        self.metrics.subscribed.set(len(self._subscribing))
        await self.broker.unsubscribe(instance)

    async def join(self, sid: str, instance: str) -> Snapshot:
        """Add a Socket.IO viewer to an instance; returns the current snapshot for the ack."""
        if instance not in self._rooms[sid]:
            self._rooms[sid].add(instance)
            await self.sio.enter_room(sid, instance)
            await self._add(instance)
        return await self.snapshot(instance)

    async def leave(self, sid: str, instance: str) -> None:
        if instance in self._rooms.get(sid, ()):
            self._rooms[sid].discard(instance)
            await self.sio.leave_room(sid, instance)
            await self._remove(instance)

    async def leave_all(self, sid: str) -> None:
        for instance in list(self._rooms.pop(sid, ())):
            await self._remove(instance)

    async def sse(self, instance: str, keepalive: float) -> AsyncIterator[tuple[int, str] | None]:
        """(seq, snapshot JSON) for one SSE stream, the current snapshot first; None every
        ``keepalive`` seconds of silence (so proxies keep the stream open)."""
        viewer = SSEViewer()
        self._sse[instance].add(viewer)
        self.metrics.viewers.inc()
        try:
            await self._add(instance)
            first = await self.snapshot(instance)
            viewer.offer(first["seq"], encode(first))
            while True:
                try:
                    await asyncio.wait_for(viewer.wakeup.wait(), keepalive)
                except asyncio.TimeoutError:
                    yield None
                    continue
                viewer.wakeup.clear()
                if viewer.pending is None:
                    continue
                seq, payload = viewer.pending
                viewer.pending = None
                viewer.last_seq = seq
                yield seq, payload
        finally:
            self._sse[instance].discard(viewer)
            if not self._sse[instance]:
                del self._sse[instance]
            self.metrics.viewers.dec()
            await self._remove(instance)

    # -- state -------------------------------------------------------------------------------
    async def snapshot(self, instance: str) -> Snapshot:
        """The snapshot to show now: stored or blank, never with an expired QR."""
        try:
            stored = await self.store.get(instance)
        except RelayError:
            raise
        except Exception as exc:  # a store outage must reach the caller as a clear 503
            self.metrics.store_errors.inc()
            raise StoreUnavailable(f"state store unavailable: {exc.__class__.__name__}") from exc
        snap = live(stored) if stored is not None else blank(instance, self.default_upstream)
        return self._overlay(snap)

    def _overlay(self, snap: Snapshot) -> Snapshot:
        if self.degraded is None:
            return snap
        copy = dict(snap)
        copy["upstream"] = {"name": snap["upstream"]["name"], "ok": False, "detail": self.degraded}
        return copy  # type: ignore[return-value]

    # -- delivery ----------------------------------------------------------------------------
    async def deliver(self, instance: str, message: str, *, fresh: bool = True) -> None:
        """A message from the instance's channel (``fresh``) or a re-sent snapshot, in
        :func:`~relay.snapshot.wire` format: hand it to every local viewer.

        The snapshot JSON is not decoded: it is wrapped once into a Socket.IO ``update`` packet
        and that one packet object goes to every viewer of the instance on this worker.
        """
        try:
            seq, updated, _, _, _, payload = unwire(message)
        except ValueError:
            log.error("dropped a malformed message on the channel of one instance")
            return
        last = self._last.get(instance)
        if last is not None and seq < last[0]:
            return  # a resync read raced a newer update: never show older state
        if instance in self._counts:
            self._last[instance] = (seq, payload)
        if fresh and updated:
            self.metrics.lag.observe(max(0.0, (now_ms() - updated) / 1000))
        if self.degraded is not None:
            payload = encode(self._overlay(json.loads(payload)))
        sse = self._sse.get(instance, ())
        for viewer in sse:
            viewer.offer(seq, payload)
        packet = eio_packet.Packet(eio_packet.MESSAGE, data=f'2["update",{payload}]')
        count = 0
        for _sid, eio_sid in self.sio.manager.get_participants("/", instance):
            await self.sio.eio.send_packet(eio_sid, packet)
            count += 1
        self.metrics.delivered.inc(count + len(sse))

    async def resume(self, instances: list[str]) -> None:
        """After a gap in the channel (listener reconnected), push fresh snapshots to viewers."""
        self.degraded = None
        self.metrics.listener_up.set(1)
        try:
            await self.store.restore({i: json.loads(p) for i, (_, p) in self._last.items()})
        except Exception as exc:
            log.warning("could not restore state after the gap: %s", exc.__class__.__name__)
        for instance in instances:
            if self._counts.get(instance):
                try:
                    snap = await self.snapshot(instance)
                except RelayError as exc:
                    log.warning("resync of one instance failed: %s", exc.detail)
                    continue
                await self.deliver(instance, wire(snap), fresh=False)

    async def degrade(self, detail: str) -> None:
        """The channel listener is down: tell every local viewer, from the last known state."""
        self.degraded = detail
        self.metrics.listener_up.set(0)
        for instance, (seq, payload) in list(self._last.items()):
            await self.deliver(instance, frame(seq, 0, payload), fresh=False)

    def track(self, sid: str, environ: dict[str, object]) -> None:
        """Remember the transport under a websocket viewer (see :meth:`evict_slow_viewers`)."""
        # Engine.IO never exposes it; uvicorn's ASGI `send` is a method of the connection's
        # protocol object, which holds the transport. Without it, a viewer that stopped reading
        # keeps its TCP connection (and a blocked writer) forever after being "closed".
        transport = getattr(getattr(environ.get("asgi.send"), "__self__", None), "transport", None)
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if isinstance(transport, asyncio.WriteTransport) and eio_sid is not None:
            self._transports[eio_sid] = transport

    def untrack(self, sid: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self._transports.pop(eio_sid, None)

    async def evict_slow_viewers(self, interval: float = 1.0) -> None:
        """Disconnect Socket.IO viewers whose send queue keeps growing (bounded memory)."""
        while True:
            await asyncio.sleep(interval)
            for eio_sid, sock in list(self.sio.eio.sockets.items()):
                queue = getattr(sock, "queue", None)
                if queue is not None and queue.qsize() > MAX_QUEUED_PACKETS:
                    log.warning("disconnecting a viewer that fell %d updates behind", queue.qsize())
                    self.metrics.slow_viewers.inc()
                    # Taken first: closing fires `disconnect`, which forgets it.
                    transport = self._transports.pop(eio_sid, None)
                    try:
                        await sock.close(wait=False, abort=True)
                    except Exception:  # it is going away either way
                        log.debug("closing a slow viewer failed", exc_info=True)
                    if transport is not None:
                        # abort(), not close(): close() would wait to flush to a reader that
                        # never reads.
                        transport.abort()
