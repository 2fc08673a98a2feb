"""Redis connections and key names shared by the Redis records, broker and coordination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff



def connect(url: str, *, pool: int | None, timeout: float | None) -> aioredis.Redis:
    """A client for ``url``. ``pool=None``: the pub/sub connection (see below)."""
    # Fail fast (one immediate retry reconnects a pooled connection that died with a restart):
    # a webhook that can't be stored must get its 503 quickly so the gateway retries.
    kwargs: dict[str, Any] = dict(decode_responses=True, socket_keepalive=True,
                                  socket_connect_timeout=2, retry=Retry(NoBackoff(), 1),
                                  health_check_interval=15)
    if pool is None:
        # The pub/sub connection: never a socket timeout (quiet periods are normal), and no
        # retry: redis-py would reconnect and re-subscribe silently, so the listener would never
        # know that it missed messages (pub/sub is at-most-once) and never resync.
        kwargs["retry"] = Retry(NoBackoff(), 0)
        return aioredis.Redis.from_url(url, **kwargs)
    # A bounded pool that waits for a free connection instead of raising in a burst.
    blocking = aioredis.BlockingConnectionPool.from_url(url, max_connections=pool, timeout=timeout,
                                                        socket_timeout=timeout, **kwargs)
    return aioredis.Redis(connection_pool=blocking)


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel name, under one prefix."""

    prefix: str

    def record(self, instance: str) -> str:
        return f"{self.prefix}:inst:{instance}"

    def channel(self, instance: str) -> str:
        return f"{self.prefix}:ch:{instance}"

    def channel_instance(self, channel: str) -> str:
        """The instance a channel name belongs to."""
        return channel[len(self.channel("")):]

    def seen(self, dedupe_key: str | None) -> str:
        return f"{self.prefix}:seen:{dedupe_key or '-'}"

    def gateway(self, name: str) -> str:
        return f"{self.prefix}:gateway:{name}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def claim(self, name: str) -> str:
        return f"{self.prefix}:claim:{name}"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}:hb"
