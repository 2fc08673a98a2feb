"""Records, broker and coordination on one Redis: the backend that lets workers act as one."""

from __future__ import annotations

from .contracts import Backend
from .redis_broker import RedisBroker
from .redis_client import Keys, connect
from .redis_coord import RedisCoordination
from .redis_records import RedisRecords


def open_redis(url: str, *, prefix: str, qr_ttl: float, qr_wait: float,
               default_upstream: str) -> Backend:
    """Records, broker and coordination on one Redis (the clients connect lazily)."""
    client = connect(url, pool=64, timeout=5.0)
    keys = Keys(prefix)
    records = RedisRecords(client, keys, qr_ttl=qr_ttl, qr_wait=qr_wait,
                           default_upstream=default_upstream)
    broker = RedisBroker(url, keys)

    async def close() -> None:
        await broker.close()
        await client.aclose()

    return Backend(records=records, coordination=RedisCoordination(client, keys), broker=broker,
                   close=close)
