"""One holder of a job across workers (e.g. the gateway's Socket.IO stream), on a lease.

The holder renews every ``ttl/3``; if it dies, the lease expires and another worker takes over
within ``ttl`` plus one retry interval. The embedded default (one process) always holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from .state import Lease

log = logging.getLogger("relay.lease")


async def run_while_holding(lease: Lease, name: str,
                            work: Callable[[], Coroutine[Any, Any, None]]) -> None:
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
        job = asyncio.create_task(work(), name=name)
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
