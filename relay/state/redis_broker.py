"""Per-instance channels on Redis pub/sub, with a supervised listener.

One channel per instance, subscribed only while this worker has viewers of it. The listener task
owns the pub/sub connections: one to the server (or to the Sentinel group's master), or one per
master of a Cluster (sharded pub/sub, each read by its own task, see :mod:`.redis_shards`). Any
gap (a lost connection, a silent server, a failover, a MOVED, slots that moved away) ends the
whole generation: the listener finds the topology afresh, re-subscribes everything, and tells
the listener (the core) to push fresh snapshots, because pub/sub is at-most-once.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from ..tasks import Backoff
from .contracts import BrokerListener
from .redis_client import Keys
from .redis_shards import Shard, Topology

log = logging.getLogger("relay.redis")
# The listener pings each connection every second; no answer at all for SILENT_AFTER means Redis
# is gone or hung (a SIGSTOPped or swapping server keeps its sockets open: only silence tells).
# Viewers then hear "updates paused" within ~3 s, as for a lost connection.
PING_EVERY = 1.0
SILENT_AFTER = 3.0
SUBSCRIBE_WAIT = 2.0
DATA = ("message", "smessage")
CONFIRM = ("subscribe", "ssubscribe")
LEAVE = ("unsubscribe", "sunsubscribe")


class TopologyChanged(ConnectionError):
    """A shard stopped serving a channel we still want (its slot moved, or it was demoted)."""


class RedisBroker:
    """Per-instance channels; the listener task owns the pub/sub connections."""

    def __init__(self, topology: Topology, keys: Keys):
        self.topology = topology
        self.keys = keys
        self.healthy = False
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._shards: list[Shard] = []
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

    def _shard(self, channel: str) -> Shard | None:
        return next((s for s in self._shards if s.owns(channel)), None)

    async def subscribe(self, instance: str) -> bool:
        channel = self.keys.channel(instance)
        self._wanted.add(channel)
        shard = self._shard(channel)
        if shard is None or not self.healthy:
            return False  # the listener subscribes everything wanted when it (re)connects
        waiter = self._confirmed.setdefault(channel, asyncio.get_running_loop().create_future())
        try:
            await shard.subscribe(channel)
            # Wait for Redis to confirm, so a snapshot read after this can't miss a publish.
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_WAIT)
            return True
        except (RedisError, OSError, asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not waiter.cancelled():
                raise  # our caller was cancelled (the waiter is cancelled only by a gap)
            log.warning("subscribe did not complete (%s); the listener will retry",
                        exc.__class__.__name__)
            return False

    async def unsubscribe(self, instance: str) -> None:
        channel = self.keys.channel(instance)
        self._wanted.discard(channel)
        self._confirmed.pop(channel, None)
        shard = self._shard(channel)
        if shard is not None and self.healthy:
            try:
                await shard.unsubscribe(channel)
            except (RedisError, OSError):
                pass  # the connection is gone; it will not be re-subscribed

    async def _run(self) -> None:
        """Find the shards, subscribe, listen; on any failure start over with capped backoff.
        Only cancellation ends it, so no worker can stay deaf."""
        backoff = Backoff(0.1, 5.0)
        first = True
        while True:
            shards: list[Shard] = []
            try:
                shards = await self.topology.shards()
                for shard in shards:
                    await shard.open(self.keys.heartbeat, [c for c in self._wanted if shard.owns(c)])
                self._shards = shards
                self.healthy = True
                self._connected.set()
                backoff.reset()
                if not first:
                    log.info("Redis listener is back; resyncing %d instance(s)", len(self._wanted))
                    await self._notify_resume()
                first = False
                await self._listen_all(shards)
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
                self._shards = []
                self.healthy = False
                for waiter in self._confirmed.values():
                    if not waiter.done():
                        waiter.cancel()
                self._confirmed.clear()
                for shard in shards:
                    await shard.close()
            await asyncio.sleep(backoff.next())

    async def _notify_resume(self) -> None:
        if self._listener is not None:
            await self._listener.resume([self.keys.channel_instance(c) for c in self._wanted])

    async def _listen_all(self, shards: list[Shard]) -> None:
        """Read every shard at once, each on its own task; the first to fail ends them all."""
        tasks = [asyncio.create_task(self._listen(s), name=f"redis-listener-{s.name}") for s in shards]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what stopped it
            raise ConnectionError("a shard listener stopped")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self, shard: Shard) -> None:
        loop = asyncio.get_running_loop()
        last_seen = last_ping = loop.time()
        while True:
            replies = await shard.batch(timeout=1.0)  # ConnectionError when the connection is lost
            now = loop.time()
            if replies:
                last_seen = now
            for reply in replies:
                if not isinstance(reply, list) or len(reply) < 2:
                    continue
                kind, channel = reply[0], reply[1]
                if kind in DATA and isinstance(channel, str):
                    # Only wanted channels: UNSUBSCRIBE is not waited for, so Redis may still
                    # publish to us after unsubscribe() returned; nothing is delivered after it.
                    if channel in self._wanted and self._listener is not None:
                        try:
                            await self._listener.deliver(self.keys.channel_instance(channel),
                                                         reply[2])
                        except asyncio.CancelledError:
                            raise
                        except Exception:  # one bad message must not stop the listener
                            log.exception("delivering one update failed; skipped")
                elif kind in CONFIRM and isinstance(channel, str):
                    waiter = self._confirmed.pop(channel, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif kind in LEAVE and isinstance(channel, str):
                    if shard.dropped(channel) and channel in self._wanted:
                        raise TopologyChanged(f"{shard.name} stopped serving a channel "
                                              "(its slot moved or the node was demoted)")
            if now - last_ping >= PING_EVERY:
                last_ping = now
                shard.ping()
            if now - last_seen > SILENT_AFTER:
                raise ConnectionError(f"no answer from Redis ({shard.name}) for {SILENT_AFTER:g} s")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.topology.close()
