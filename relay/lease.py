"""One holder of a job across workers (the gateway's Socket.IO stream): a Redis lease with renewal.

The holder renews every ``ttl/3``; if it dies, the key expires and another worker takes over
within ``ttl`` plus one retry interval. The embedded default (one process) always holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("relay.lease")

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Lease(Protocol):
    ttl: float

    async def acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...


class LocalLease:
    """One process: always the holder."""

    ttl = 5.0

    async def acquire(self) -> bool:
        return True

    async def renew(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class RedisLease:
    """``SET key owner NX PX ttl``; renew and release only while we still own it."""

    def __init__(self, client: aioredis.Redis, key: str, ttl: float = 5.0):
        self.client = client
        self.key = key
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    async def acquire(self) -> bool:
        return bool(await self.client.set(self.key, self.owner, nx=True, px=int(self.ttl * 1000)))

    async def renew(self) -> bool:
        return bool(await self.client.eval(_RENEW, 1, self.key, self.owner, int(self.ttl * 1000)))

    async def release(self) -> None:
        await self.client.eval(_RELEASE, 1, self.key, self.owner)


async def run_while_holding(lease: Lease, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Forever: take the lease when free, run ``work`` while holding it, stop it when lost."""
    while True:
        try:
            held = await lease.acquire()
        except (RedisError, OSError) as exc:
            log.warning("%s lease: store unavailable (%s)", name, exc.__class__.__name__)
            held = False
        if not held:
            await asyncio.sleep(lease.ttl / 3)
            continue
        log.info("%s: this worker holds the lease", name)
        job = asyncio.ensure_future(work())
        job.set_name(name)
        try:
            while not job.done():
                done, _ = await asyncio.wait({job}, timeout=lease.ttl / 3)
                if done:
                    break
                try:
                    still = await lease.renew()
                except (RedisError, OSError):
                    still = False
                if not still:
                    log.warning("%s: lost the lease; another worker takes over", name)
                    break
            if job.done() and not job.cancelled() and job.exception() is not None:
                log.error("%s crashed; retrying", name, exc_info=job.exception())
        finally:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            try:
                await lease.release()
            except (RedisError, OSError):
                pass
        await asyncio.sleep(lease.ttl / 3)
