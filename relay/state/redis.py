"""Records, broker and coordination on Redis (one server, a Cluster or a Sentinel group): the
backend that lets workers act as one."""

from __future__ import annotations

from .contracts import Backend
from .redis_broker import RedisBroker
from .redis_client import Keys, connect_target
from .redis_coord import RedisCoordination
from .redis_records import RedisRecords
from .redis_shards import topology_for
from .redis_url import parse_redis_url


def open_redis(url: str, *, prefix: str, qr_ttl: float, qr_wait: float,
               default_upstream: str, record_ttl: float = 0.0) -> Backend:
    """Records, broker and coordination on the Redis that ``url`` names (see
    :mod:`.redis_url`); the clients connect lazily."""
    target = parse_redis_url(url)
    client, close_client = connect_target(target, pool=64)
    keys = Keys(prefix)
    records = RedisRecords(client, keys, qr_ttl=qr_ttl, qr_wait=qr_wait,
                           default_upstream=default_upstream, sharded=target.kind == "cluster",
                           record_ttl=record_ttl)
    broker = RedisBroker(topology_for(target), keys)

    async def close() -> None:
        await broker.close()
        await records.close()
        await close_client()

    return Backend(records=records, coordination=RedisCoordination(client, keys), broker=broker,
                   close=close)
