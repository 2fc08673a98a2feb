"""Per-instance channels on Redis pub/sub, with a supervised listener.

One channel per instance, subscribed only while this worker has viewers of it. The listener task
owns the pub/sub connection; after any gap it re-subscribes and tells the listener (the core) to
push fresh snapshots, because pub/sub is at-most-once.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..tasks import Backoff
from .contracts import BrokerListener
from .redis_client import Keys, connect

log = logging.getLogger("relay.redis")
PING_EVERY = 5.0  # the listener pings its connection; silence for SILENT_AFTER means it is dead
SILENT_AFTER = 15.0
SUBSCRIBE_WAIT = 2.0


class RedisBroker:
    """Per-instance channels; the listener task owns the pub/sub connection."""

    def __init__(self, url: str, keys: Keys):
        self.url = url
        self.keys = keys
        self.healthy = False
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._listener: BrokerListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self, listener: BrokerListener) -> None:
        self._listener = listener
        self._task = asyncio.create_task(self._run(), name="redis-listener")
        # Start-up waits briefly for the first connection; /readyz tells the rest.
        try:
            await asyncio.wait_for(self._connected.wait(), 5)
        except asyncio.TimeoutError:
            log.error("Redis pub/sub is not reachable yet; the listener keeps trying")

    async def subscribe(self, instance: str) -> None:
        channel = self.keys.channel(instance)
        self._wanted.add(channel)
        if self._pubsub is None or not self.healthy:
            return  # the listener subscribes everything wanted when it (re)connects
        waiter = self._confirmed.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            await self._pubsub.subscribe(channel)
            # Wait for Redis to confirm, so a snapshot read after this can't miss a publish.
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_WAIT)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("subscribe did not complete (%s); the listener will retry",
                        exc.__class__.__name__)

    async def unsubscribe(self, instance: str) -> None:
        channel = self.keys.channel(instance)
        self._wanted.discard(channel)
        self._confirmed.pop(channel, None)
        if self._pubsub is not None and self.healthy:
            try:
                await self._pubsub.unsubscribe(channel)
            except (RedisError, OSError):
                pass  # the connection is gone; it will not be re-subscribed

    async def _run(self) -> None:
        """Connect, subscribe, listen; on any failure reconnect with capped backoff. Only
        cancellation ends it, so no worker can stay deaf."""
        backoff = Backoff(0.1, 5.0)
        first = True
        while True:
            client = connect(self.url, pool=None, timeout=None)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.keys.heartbeat, *self._wanted)
                self._pubsub = pubsub
                self.healthy = True
                self._connected.set()
                backoff.reset()
                if not first:
                    log.info("Redis listener is back; resyncing %d instance(s)", len(self._wanted))
                    await self._notify_resume()
                first = False
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is a reconnect, never a silent exit
                if self.healthy or first:
                    log.error("Redis listener lost its connection (%s: %s); reconnecting",
                              exc.__class__.__name__, exc)
                was_healthy, self.healthy = self.healthy, False
                if was_healthy and self._listener is not None:
                    await self._listener.degrade("the relay lost its connection to Redis; "
                                                 "updates are paused and will resume by themselves")
            finally:
                self._pubsub = None
                self.healthy = False
                for waiter in self._confirmed.values():
                    if not waiter.done():
                        waiter.cancel()
                self._confirmed.clear()
                await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                await _quietly(client.aclose())
            await asyncio.sleep(backoff.next())

    async def _notify_resume(self) -> None:
        if self._listener is not None:
            await self._listener.resume([self.keys.channel_instance(c) for c in self._wanted])

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_seen = last_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if message is not None:
                last_seen = now
                kind = message.get("type")
                channel = message.get("channel")
                if kind == "message" and isinstance(channel, str) and self._listener is not None:
                    try:
                        await self._listener.deliver(self.keys.channel_instance(channel),
                                                     message["data"])
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # one bad message must not stop the listener
                        log.exception("delivering one update failed; skipped")
                elif kind == "subscribe" and isinstance(channel, str):
                    waiter = self._confirmed.pop(channel, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
            if now - last_ping >= PING_EVERY:
                last_ping = now
                await pubsub.ping()
            if now - last_seen > SILENT_AFTER:
                raise ConnectionError(f"no answer from Redis for {SILENT_AFTER:g} s")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _quietly(coro: object) -> None:
    try:
        await coro  # type: ignore[misc]
    except Exception:
        pass
