"""Where a worker listens: one pub/sub connection per shard, found afresh at every (re)connect.

One server or a Sentinel group is one shard (its master) with classic SUBSCRIBE. A Cluster has
one shard per master, each holding the SSUBSCRIBEs of the channels in its slots, so that each
master's messages are read on that master's own connection the moment they arrive (redis-py's
``get_sharded_message`` would poll the nodes in turn: ~100 ms per message). The broker reads every
shard with a task of its own.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from .redis_client import COMMON, pubsub_client, sentinel_for
from .redis_lane import Subscriber
from .redis_url import RedisTarget


class Shard:
    """One pub/sub connection: to a cluster master for the channels of ``slots`` (SSUBSCRIBE),
    or to the one master for every channel (``slots=None``, SUBSCRIBE). ``client`` opens it
    (redis-py, with all of its configuration); :class:`~.redis_lane.Subscriber` reads it."""

    def __init__(self, name: str, client: aioredis.Redis, slots: frozenset[int] | None = None):
        self.name = name
        self.client = client
        self.slots = slots
        self.sharded = slots is not None
        self.subscriber = Subscriber()
        self._leaving: Counter[str] = Counter()  # channels we asked to leave, not yet confirmed

    def owns(self, channel: str) -> bool:
        return self.slots is None or key_slot(channel.encode()) in self.slots

    async def open(self, heartbeat: str, channels: list[str]) -> None:
        """Connect and subscribe. The heartbeat channel (never published to) keeps the
        connection in pub/sub mode even without channels, so its pings tell if it is alive."""
        await self.subscriber.open(self.client.connection_pool.make_connection())  # type: ignore[no-untyped-call]
        if not self.sharded:
            self.subscriber.send("SUBSCRIBE", heartbeat, *channels)
            return
        self.subscriber.send("SUBSCRIBE", heartbeat)
        by_slot: defaultdict[int, list[str]] = defaultdict(list)
        for channel in channels:  # one SSUBSCRIBE may only name channels of one slot
            by_slot[key_slot(channel.encode())].append(channel)
        for group in by_slot.values():
            self.subscriber.send("SSUBSCRIBE", *group)

    async def batch(self, timeout: float) -> list[Any]:
        """The replies that arrived (``[kind, channel, data-or-count]`` lists)."""
        return await self.subscriber.batch(timeout)

    def ping(self) -> None:
        self.subscriber.send("PING")

    async def subscribe(self, channel: str) -> None:
        self.subscriber.send("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._leaving[channel] += 1
        self.subscriber.send("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", channel)

    def dropped(self, channel: str) -> bool:
        """An unsubscribe confirmation came for ``channel``: True when we never asked for it
        (a cluster node drops the shard channels of slots it no longer serves)."""
        if self._leaving[channel] > 0:
            self._leaving[channel] -= 1
            if not self._leaving[channel]:
                del self._leaving[channel]
            return False
        return True

    async def close(self) -> None:
        await self.subscriber.close()
        try:
            await self.client.aclose()
        except Exception:
            pass  # the connection is gone already


class Topology(Protocol):
    sharded: bool

    async def shards(self) -> list[Shard]:
        """Fresh shards for the current topology (not yet connected)."""

    async def close(self) -> None: ...


class SingleTopology:
    """One server: one shard."""

    sharded = False

    def __init__(self, target: RedisTarget):
        self.target = target

    async def shards(self) -> list[Shard]:
        return [Shard("redis", pubsub_client(self.target))]

    async def close(self) -> None:
        return None


class SentinelTopology:
    """A Sentinel group: one shard, on whichever server the sentinels name master now."""

    sharded = False

    def __init__(self, target: RedisTarget):
        self.target = target
        self.sentinel = sentinel_for(target)

    async def shards(self) -> list[Shard]:
        return [Shard(f"{self.target.service} master", pubsub_client(self.target, sentinel=self.sentinel))]

    async def close(self) -> None:
        await self.sentinel.aclose()


class ClusterTopology:
    """A Cluster: one shard per master, with the slots it serves now."""

    sharded = True

    def __init__(self, target: RedisTarget):
        self.target = target
        # Seeds for the next discovery: the nodes seen last time first, then the URL's.
        self.known: list[tuple[str, int]] = list(target.nodes)

    async def shards(self) -> list[Shard]:
        cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in self.known],
                               **COMMON, **self.target.options)
        try:
            await cluster.initialize()
            owned: defaultdict[str, set[int]] = defaultdict(set)
            for slot, holders in cluster.nodes_manager.slots_cache.items():
                if holders:
                    owned[holders[0].name].add(slot)  # holders[0] is the slot's master
            masters = [n for n in cluster.get_primaries() if owned[n.name]]
            seen = [(n.host, int(n.port)) for n in cluster.get_nodes()]
            self.known = seen + [n for n in self.target.nodes if n not in seen]
        finally:
            await cluster.aclose()
        return [Shard(m.name, pubsub_client(self.target, node=(m.host, int(m.port))),
                      frozenset(owned[m.name])) for m in masters]

    async def close(self) -> None:
        return None


def topology_for(target: RedisTarget) -> Topology:
    if target.kind == "cluster":
        return ClusterTopology(target)
    if target.kind == "sentinel":
        return SentinelTopology(target)
    return SingleTopology(target)
