"""Three small contracts, each with a memory and a Redis implementation.

- :class:`Records` keeps the latest :class:`~relay.snapshot.Record` per instance, applies events
  atomically (dedupe, order, seq) and publishes each change on the instance's channel.
- :class:`Broker` delivers those channel messages to this process, subscribing per instance only
  while the process has viewers of it ("route, don't broadcast").
- :class:`Coordination` is what workers agree on besides records: gateway reachability and the
  lease that elects one worker to follow a gateway.

The memory trio is the embedded default (one process) and the fast test double; the Redis trio
shares everything between any number of workers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..snapshot import Event, Record, Snapshot
from ..wire import Wired


class BrokerListener(Protocol):
    """What a broker reports to (the core)."""

    async def deliver(self, instance: str, message: str) -> None:
        """A message on a subscribed channel (:func:`relay.wire.message` format)."""

    async def resume(self, instances: list[str]) -> None:
        """The broker is back after a gap, re-subscribed to ``instances``; pub/sub is
        at-most-once, so whatever was published meanwhile must be re-read and pushed."""

    async def degrade(self, detail: str) -> None:
        """The broker lost its connection: viewers should be told updates are paused."""


class Records(Protocol):
    async def get(self, instance: str) -> Record | None:
        """The stored record (snapshot and clocks), or None if the instance was never seen."""

    async def apply(self, event: Event) -> Snapshot | None:
        """Apply an event atomically; return the new snapshot if viewers must see it
        (it has then been published), None for a duplicate, a repeat or a stale event."""

    async def restore(self, seen: dict[str, Record]) -> int:
        """After the store came back empty, put back what this process knows (records it wrote
        or read, and ``seen``: what it delivered); never overwrites. Returns how many."""

    def observe(self, instance: str, message: Wired, size: int) -> None:
        """A channel message this process received (split; ``size``: its length): the
        instance's newest record (a cache may keep it, so that the next write needs no read)."""

    async def instances(self) -> list[str]:
        """Names of every instance with stored state."""

    async def ping(self) -> bool:
        """True when the store answers right now."""


class Broker(Protocol):
    healthy: bool

    async def start(self, listener: BrokerListener) -> None: ...

    async def subscribe(self, instance: str) -> bool:
        """Receive the instance's channel from now on. True once the store confirmed it (every
        update published from then on reaches this worker, until a gap); False when that could
        not be confirmed now (the listener subscribes again when it reconnects)."""

    async def unsubscribe(self, instance: str) -> None: ...

    async def close(self) -> None: ...


class Lease(Protocol):
    """One holder of a job across workers, for ``ttl`` seconds at a time, renewed by its holder."""

    ttl: float

    async def acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...


class Coordination(Protocol):
    async def swap_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Store a gateway's reachability, shared by all workers; returns the previous one."""

    async def status(self, name: str) -> dict[str, Any] | None: ...

    def lease(self, name: str) -> Lease:
        """The lease that elects one worker to follow gateway ``name``."""

    async def claim(self, name: str, ttl: float) -> bool:
        """True for the first caller (of any worker) to claim ``name`` within ``ttl`` seconds:
        e.g. one log line and one gateway call per stalled instance, not one per worker."""

    async def release(self, name: str) -> None:
        """Let go of a claim before its time (the next claim of ``name`` succeeds)."""


@dataclass
class Backend:
    """The three contracts on one storage, and how to let go of it."""

    records: Records
    coordination: Coordination
    broker: Broker
    close: Callable[[], Awaitable[None]]
