"""In-process records, broker and coordination: the embedded default (one worker) and the fast
test double."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ..rules import apply
from ..snapshot import Event, Record, Snapshot
from ..wire import message
from .contracts import Backend, BrokerListener

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

    async def subscribe(self, instance: str) -> None:
        self._channels.add(instance)

    async def unsubscribe(self, instance: str) -> None:
        self._channels.discard(instance)

    async def publish(self, instance: str, payload: str) -> None:
        if instance in self._channels and self._listener is not None:
            await self._listener.deliver(instance, payload)

    async def close(self) -> None:
        self._channels.clear()


class MemoryRecords:
    """Latest record per instance in a dict. ``apply`` has no await before its write, so it is
    atomic on the event loop without a lock."""

    def __init__(self, broker: MemoryBroker, *, qr_ttl: float, qr_wait: float,
                 default_upstream: str = "evolution"):
        self.broker = broker
        self.qr_ttl_ms = int(qr_ttl * 1000)
        self.qr_wait_ms = int(qr_wait * 1000)
        self.default_upstream = default_upstream
        self._records: dict[str, Record] = {}
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def get(self, instance: str) -> Record | None:
        return self._records.get(instance)

    async def instances(self) -> list[str]:
        return list(self._records)

    def _is_duplicate(self, key: str | None) -> bool:
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) > DEDUPE_MAX):
            self._seen.popitem(last=False)
        if key is None:
            return False
        if key in self._seen:
            return True
        self._seen[key] = now + DEDUPE_TTL
        return False

    async def apply(self, event: Event) -> Snapshot | None:
        if self._is_duplicate(event.dedupe_key):
            return None
        result = apply(self._records.get(event.instance), event, qr_ttl_ms=self.qr_ttl_ms,
                       qr_wait_ms=self.qr_wait_ms, default_upstream=self.default_upstream)
        if result is None:
            return None
        record, changed = result
        self._records[event.instance] = record
        if not changed:
            return None
        await self.broker.publish(event.instance, message(record))
        return record.snapshot

    def observe(self, instance: str, message: str) -> None:
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


def open_memory(*, qr_ttl: float, qr_wait: float, default_upstream: str) -> Backend:
    broker = MemoryBroker()
    records = MemoryRecords(broker, qr_ttl=qr_ttl, qr_wait=qr_wait, default_upstream=default_upstream)

    async def close() -> None:
        await broker.close()
        records.clear()

    return Backend(records=records, coordination=MemoryCoordination(), broker=broker, close=close)
