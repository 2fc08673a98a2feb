"""State shared by workers: three small contracts (:mod:`relay.state.contracts`), each with a
memory and a Redis implementation; :func:`open_backend` picks one from a URL, or tests build
their own :class:`Backend`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .contracts import Backend, Broker, BrokerListener, Coordination, Lease, Records

__all__ = ["Backend", "Broker", "BrokerListener", "Coordination", "Lease", "Records", "open_backend"]


@asynccontextmanager
async def open_backend(url: str | None, *, prefix: str, qr_ttl: float, qr_wait: float,
                       default_upstream: str, record_ttl: float = 0.0,
                       max_instances: int = 100_000) -> AsyncIterator[Backend]:
    """The backend a URL asks for: Redis for ``redis://…`` (also a Cluster, ``redis+cluster://…``,
    or a Sentinel group, ``redis+sentinel://…``: see :mod:`.redis_url`), else memory. Records
    expire ``record_ttl`` seconds after their last write (0: never); memory keeps at most
    ``max_instances`` (Redis is bounded by its own ``maxmemory``). Closed on exit."""
    if url:
        from .redis import open_redis

        backend = open_redis(url, prefix=prefix, qr_ttl=qr_ttl, qr_wait=qr_wait,
                             default_upstream=default_upstream, record_ttl=record_ttl)
    else:
        from .memory import open_memory

        backend = open_memory(qr_ttl=qr_ttl, qr_wait=qr_wait, default_upstream=default_upstream,
                              record_ttl=record_ttl, max_instances=max_instances)
    try:
        yield backend
    finally:
        await backend.close()
