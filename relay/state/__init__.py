"""Two small contracts, each with a memory and a Redis implementation.

- :class:`StateStore` keeps the latest :class:`~relay.snapshot.Record` per instance, applies
  events atomically (dedupe, order, seq) and publishes each change on the instance's channel.
- :class:`Broker` delivers those channel messages to this process, subscribing per instance only
  while the process has viewers of it ("route, don't broadcast").

The memory pair is the embedded default (one process) and the fast test double; the Redis pair
shares state and channels between any number of workers. :func:`open_backend` picks one from the
settings, or tests inject their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..config import Settings
from ..snapshot import Event, Snapshot

if TYPE_CHECKING:
    from ..lease import Lease

class BrokerListener(Protocol):
    """What a broker reports to (the hub)."""

    async def deliver(self, instance: str, message: str) -> None:
        """A message on a subscribed channel (:func:`relay.snapshot.wire` format)."""

    async def resume(self, instances: list[str]) -> None:
        """The broker is back after a gap, re-subscribed to ``instances``; pub/sub is
        at-most-once, so whatever was published meanwhile must be re-read and pushed."""

    async def degrade(self, detail: str) -> None:
        """The broker lost its connection: viewers should be told updates are paused."""


class StateStore(Protocol):
    async def get(self, instance: str) -> Snapshot | None:
        """The stored snapshot, or None if the instance was never seen."""

    async def apply(self, event: Event) -> Snapshot | None:
        """Apply an event atomically; return the new snapshot if viewers must see it
        (it has then been published), None for a duplicate, a repeat or a stale event."""

    async def instances(self) -> list[str]:
        """Names of every instance with stored state."""

    async def ping(self) -> bool:
        """True when the store answers right now."""

    async def restore(self, seen: dict[str, Snapshot]) -> int:
        """After the store came back empty, put back what this process knows (records it wrote
        or read, and ``seen``: snapshots it delivered); never overwrites. Returns how many."""

    async def swap_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Store a gateway's reachability, shared by all workers; returns the previous one."""

    async def status(self, name: str) -> dict[str, Any] | None: ...

    def lease(self, name: str) -> "Lease":
        """The lease that elects one worker to follow gateway ``name``."""

    async def close(self) -> None: ...


class Broker(Protocol):
    healthy: bool

    async def start(self, listener: BrokerListener) -> None: ...

    async def subscribe(self, instance: str) -> None:
        """Receive the instance's channel from now on (returns once subscribed)."""

    async def unsubscribe(self, instance: str) -> None: ...

    async def close(self) -> None: ...


async def open_backend(settings: Settings) -> tuple[StateStore, Broker]:
    """The store and broker the settings ask for: Redis with ``RELAY_REDIS_URL``, else memory."""
    if settings.redis_url:
        from .redis import open_redis_backend

        return await open_redis_backend(settings)
    from .memory import MemoryBroker, MemoryState

    broker = MemoryBroker()
    return MemoryState(broker, qr_ttl=settings.qr_ttl, default_upstream=settings.upstream_name), broker
