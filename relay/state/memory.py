"""In-process records, broker and coordination: the embedded default (one worker) and the fast
test double."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from ..logs import Throttle
from ..rules import apply
from ..snapshot import Event, Record, Snapshot
from ..wire import Wired, message
from .contracts import Backend, BrokerListener

log = logging.getLogger("relay.memory")
DEDUPE_TTL = 30 * 60.0  # Evolution retries for up to ~20 minutes (protocols §2.5).
DEDUPE_MAX = 100_000


class MemoryBroker:
    """Delivers published snapshots straight to this process's subscribers."""

    def __init__(self) -> None:
        self.healthy = True
        self._channels: set[str] = set()
        self._listener: BrokerListener | None = None

    async def start(self, listener: BrokerListener) -> None:
        self._listener = listener

    async def subscribe(self, instance: str) -> bool:
        self._channels.add(instance)
        return True

    async def unsubscribe(self, instance: str) -> None:
        self._channels.discard(instance)

    async def publish(self, instance: str, payload: str) -> None:
        if instance in self._channels and self._listener is not None:
            await self._listener.deliver(instance, payload)

    async def close(self) -> None:
        self._channels.clear()


class MemoryRecords:
    """Latest record per instance in a dict, least recently written first. ``apply`` has no
    await before its write, so it is atomic on the event loop without a lock.

    Bounded like the Redis records: a record expires ``record_ttl`` seconds after its last write
    (0: never), and past ``max_instances`` the least recently written one is dropped (its next
    event brings it back), so that no sender of names can grow a worker without bound."""

    def __init__(self, broker: MemoryBroker, *, qr_ttl: float, qr_wait: float,
                 default_upstream: str = "evolution", record_ttl: float = 0.0,
                 max_instances: int = 100_000):
        self.broker = broker
        self.qr_ttl_ms = int(qr_ttl * 1000)
        self.qr_wait_ms = int(qr_wait * 1000)
        self.default_upstream = default_upstream
        self.record_ttl = record_ttl
        self.max_instances = max_instances
        self._records: OrderedDict[str, tuple[Record, float]] = OrderedDict()  # (record, written)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._dropped = Throttle(60.0)

    async def get(self, instance: str) -> Record | None:
        return self._current(instance)

    def _current(self, instance: str) -> Record | None:
        entry = self._records.get(instance)
        if entry is None:
            return None
        if self.record_ttl and entry[1] + self.record_ttl < time.monotonic():
            del self._records[instance]
            return None
        return entry[0]

    def _keep(self, instance: str, record: Record) -> None:
        now = time.monotonic()
        self._records[instance] = (record, now)
        self._records.move_to_end(instance)
        while self._records:  # the least recently written first: expired, or past the cap
            oldest, (_, written) = next(iter(self._records.items()))
            expired = bool(self.record_ttl) and written + self.record_ttl < now
            if not expired and len(self._records) <= self.max_instances:
                break
            del self._records[oldest]
            if not expired and (held := self._dropped.ready("cap")) is not None:
                log.warning("more than %d instances: forgot the least recently updated one "
                            "(RELAY_MAX_INSTANCES)%s", self.max_instances,
                            f" ({held} more since the last line)" if held else "")

    async def instances(self) -> list[str]:
        return [i for i in list(self._records) if self._current(i) is not None]

    def _is_duplicate(self, key: str | None) -> bool:
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > DEDUPE_MAX):
            self._seen.popitem(last=False)
        if key is None:
            return False
        return key in self._seen

    async def apply(self, event: Event) -> Snapshot | None:
        if self._is_duplicate(event.dedupe_key):
            return None
        result = apply(self._current(event.instance), event, qr_ttl_ms=self.qr_ttl_ms,
                       qr_wait_ms=self.qr_wait_ms, default_upstream=self.default_upstream)
        if result is None:
            return None
        record, changed = result
        if event.dedupe_key is not None and changed:  # a repeat's retry changes nothing either
            self._seen[event.dedupe_key] = time.monotonic() + DEDUPE_TTL
        self._keep(event.instance, record)
        if not changed:
            return None
        await self.broker.publish(event.instance, message(record))
        return record.snapshot

    def observe(self, instance: str, message: Wired, size: int) -> None:
        """Nothing to cache: the dict is the truth."""

    async def restore(self, seen: dict[str, Record]) -> int:
        return 0  # memory can't lose what it holds without the process going too

    async def ping(self) -> bool:
        return True

    def clear(self) -> None:
        self._records.clear()


class LocalLease:
    """One process: always the holder."""

    ttl = 5.0

    async def acquire(self) -> bool:
        return True

    async def renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class MemoryCoordination:
    def __init__(self) -> None:
        self._status: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, float] = {}

    async def swap_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        previous, self._status[name] = self._status.get(name), status
        return previous

    async def status(self, name: str) -> dict[str, Any] | None:
        return self._status.get(name)

    def lease(self, name: str) -> LocalLease:
        return LocalLease()

    async def claim(self, name: str, ttl: float) -> bool:
        now = time.monotonic()
        if len(self._claims) > DEDUPE_MAX:  # forget expired claims now and then
            self._claims = {k: t for k, t in self._claims.items() if t > now}
        if self._claims.get(name, 0.0) > now:
            return False
        self._claims[name] = now + ttl
        return True

    async def release(self, name: str) -> None:
        self._claims.pop(name, None)


def open_memory(*, qr_ttl: float, qr_wait: float, default_upstream: str, record_ttl: float = 0.0,
                max_instances: int = 100_000) -> Backend:
    broker = MemoryBroker()
    records = MemoryRecords(broker, qr_ttl=qr_ttl, qr_wait=qr_wait, default_upstream=default_upstream,
                            record_ttl=record_ttl, max_instances=max_instances)

    async def close() -> None:
        await broker.close()
        records.clear()

    return Backend(records=records, coordination=MemoryCoordination(), broker=broker, close=close)
