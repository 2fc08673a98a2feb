"""What workers agree on besides records, in Redis: gateway reachability and leases."""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from .redis_client import Client, Keys


class RedisLease:
    """A lease on redis-py's :class:`~redis.asyncio.lock.Lock` (SET NX PX with a random token;
    renew and release only while the token is still ours). The token names the holder
    (``host:pid:random``), so ``GET <prefix>:lease:<gateway>`` tells an operator who holds it."""

    def __init__(self, client: Client, key: str, ttl: float = 5.0):
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lock = Lock(client, key, timeout=ttl, blocking=False, thread_local=False)

    async def acquire(self) -> bool:
        return bool(await self._lock.acquire(blocking=False, token=self.owner))

    async def renew(self) -> bool:
        try:
            return bool(await self._lock.reacquire())
        except LockError:  # expired, or taken by another worker meanwhile
            return False

    async def release(self) -> None:
        try:
            await self._lock.release()
        except LockError:
            pass  # not ours any more: nothing to release


class RedisCoordination:
    def __init__(self, client: Client, keys: Keys):
        self.client = client
        self.keys = keys

    async def swap_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self.client.set(self.keys.gateway(name), json.dumps(status), get=True)
        return json.loads(raw) if isinstance(raw, (str, bytes)) and raw else None

    async def status(self, name: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.keys.gateway(name))
        return json.loads(raw) if raw else None

    def lease(self, name: str) -> RedisLease:
        return RedisLease(self.client, self.keys.lease(name))

    async def claim(self, name: str, ttl: float) -> bool:
        return bool(await self.client.set(self.keys.claim(name), "1", nx=True,
                                          px=max(1, int(ttl * 1000))))

    async def release(self, name: str) -> None:
        await self.client.delete(self.keys.claim(name))
