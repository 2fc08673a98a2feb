"""Redis connections and key names shared by the Redis records, broker and coordination, for
one server, a Cluster and a Sentinel group alike.

Key layout: every key and the channel of one instance carry the same hash tag, the instance's
name between braces (``relay:inst:{shop-42}``, ``relay:seen:{shop-42}:<event>``,
``relay:ch:{shop-42}``), so that on a Cluster they share one slot: the Lua compare-and-set that
touches the record and the dedupe key and publishes may run there (a script may only touch, and
SPUBLISH to, its own slot). Redis hashes what lies between the first ``{`` and the next ``}``; a
name holding either brace (or ``%``) is percent-escaped inside the tag, so that the tag is always
exactly the name and no name can split or empty it. The prefix may hold neither brace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .redis_url import RedisTarget

Client: TypeAlias = "aioredis.Redis | RedisCluster"
COMMON: dict[str, Any] = dict(decode_responses=True, socket_keepalive=True, socket_connect_timeout=2,
                              health_check_interval=15)


# A command without an answer for this long fails (a hung server must not hold a webhook for
# long: it gets its 503 and the gateway retries); a command that waits this long for a free
# connection fails too.
COMMAND_TIMEOUT = 1.5
POOL_WAIT = 2.0


def fail_fast() -> Retry:
    """One immediate retry on a lost connection (it reconnects a pooled connection that died
    with a Redis restart), none on a timeout: a hung server would only hold the caller longer."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def connect(url: str, *, pool: int | None, timeout: float | None,
            wait: float | None = None) -> aioredis.Redis:
    """A client for one server at ``url``: commands time out after ``timeout`` s and wait up to
    ``wait`` s for a free connection. ``pool=None``: the pub/sub connection (see below)."""
    # Fail fast (one immediate retry reconnects a pooled connection that died with a restart):
    # a webhook that can't be stored must get its 503 quickly so the gateway retries.
    kwargs: dict[str, Any] = dict(COMMON, retry=fail_fast())
    if pool is None:
        # The pub/sub connection: never a socket timeout (quiet periods are normal), and no
        # retry: redis-py would reconnect and re-subscribe silently, so the listener would never
        # know that it missed messages (pub/sub is at-most-once) and never resync.
        kwargs["retry"] = Retry(NoBackoff(), 0)
        return aioredis.Redis.from_url(url, **kwargs)
    # A bounded pool that waits for a free connection instead of raising in a burst.
    blocking = aioredis.BlockingConnectionPool.from_url(url, max_connections=pool, timeout=wait,
                                                        socket_timeout=timeout, **kwargs)
    return aioredis.Redis(connection_pool=blocking)


class _Bounded:
    """At most ``turns`` commands in flight; the next one waits up to ``turn_wait`` seconds for its
    turn, like redis-py's BlockingConnectionPool (which Cluster and Sentinel clients lack: they
    raise at once when their pool is full, turning a burst of viewers into errors)."""

    turns = 64
    turn_wait: float | None = 5.0
    _turns: asyncio.Semaphore | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.turns)
        if self._turns.locked():
            try:
                await asyncio.wait_for(self._turns.acquire(), self.turn_wait)
            except asyncio.TimeoutError:
                raise RedisConnectionError("no Redis connection free") from None
        else:
            await self._turns.acquire()
        try:
            return await super().execute_command(*args, **options)  # type: ignore[misc]
        finally:
            self._turns.release()


class BoundedCluster(_Bounded, RedisCluster):  # type: ignore[misc]  # redis-py's own mixins clash
    """A Cluster client with a bounded number of commands in flight.

    It learns the slots before any command: redis-py 8.1 routes commands that arrive while it
    has no slot map (at first use, and after it dropped the map on an error) to a random node;
    under concurrency the MOVED replies pile up and it then closes every connection, failing
    the commands of everyone else. ``initialize`` is a no-op once the map is known."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        await self.initialize()
        return await super().execute_command(*args, **options)


class BoundedRedis(_Bounded, aioredis.Redis):  # type: ignore[misc]  # redis-py's own mixins clash
    """A client (of a Sentinel group's master) with a bounded number of commands in flight."""


def connect_target(target: RedisTarget, *, pool: int, timeout: float = COMMAND_TIMEOUT,
                   wait: float = POOL_WAIT) -> tuple[Client, Callable[[], Awaitable[None]]]:
    """The commands client for ``target`` (records, coordination), and how to close it:
    commands time out after ``timeout`` s and wait up to ``wait`` s for their turn."""
    retry = fail_fast()
    if target.kind == "cluster":
        cluster = BoundedCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            max_connections=pool, socket_timeout=timeout, retry=retry,
            # On MOVED, patch the slot (the reply names its new node) instead of closing every
            # connection each 5th MOVED, which fails other commands in flight.
            reinitialize_steps=0, **COMMON, **target.options)
        cluster.turns, cluster.turn_wait = pool, wait
        return cluster, cluster.aclose
    if target.kind == "sentinel":
        sentinel = sentinel_for(target)
        master: BoundedRedis = sentinel.master_for(
            target.service, redis_class=BoundedRedis, socket_timeout=timeout, retry=retry,
            max_connections=pool)
        master.turns, master.turn_wait = pool, wait

        async def close() -> None:
            await master.aclose()
            await sentinel.aclose()
        return master, close
    client = connect(target.url, pool=pool, timeout=timeout, wait=wait)
    return client, client.aclose


def sentinel_for(target: RedisTarget) -> Sentinel:
    """A Sentinel manager: asks the sentinels where the master is on every new connection."""
    sentinel_kwargs = dict(socket_connect_timeout=2, socket_timeout=2, socket_keepalive=True,
                           decode_responses=True, **target.sentinel_options)
    return Sentinel(target.nodes, sentinel_kwargs=sentinel_kwargs,  # type: ignore[no-untyped-call]
                    **COMMON, **target.options)


def pubsub_client(target: RedisTarget, node: tuple[str, int] | None = None,
                  sentinel: Sentinel | None = None) -> aioredis.Redis:
    """A client for one pub/sub connection: to ``node`` (a cluster master), to the Sentinel
    group's master, or to the one server. No socket timeout and no retry (see connect)."""
    if node is not None:
        return aioredis.Redis(host=node[0], port=node[1], retry=Retry(NoBackoff(), 0),
                              **COMMON, **target.options)
    if sentinel is not None:
        client: aioredis.Redis = sentinel.master_for(target.service, retry=Retry(NoBackoff(), 0))
        return client
    return connect(target.url, pool=None, timeout=None)


def _tag(instance: str) -> str:
    return "{" + instance.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") + "}"


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel name, under one prefix (see the module's doc for the layout)."""

    prefix: str

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix may not contain { or } (they mark Redis hash tags)")

    def record(self, instance: str) -> str:
        return f"{self.prefix}:inst:{_tag(instance)}"

    def record_instance(self, key: str) -> str:
        """The instance a record key belongs to."""
        return unquote(key[len(self.prefix) + 7:-1])

    @property
    def records(self) -> str:
        """A SCAN pattern for every record key."""
        return f"{self.prefix}:inst:*"

    def channel(self, instance: str) -> str:
        return f"{self.prefix}:ch:{_tag(instance)}"

    def channel_instance(self, channel: str) -> str:
        """The instance a channel name belongs to."""
        return unquote(channel[len(self.prefix) + 5:-1])

    def seen(self, instance: str, dedupe_key: str | None) -> str:
        return f"{self.prefix}:seen:{_tag(instance)}:{dedupe_key or '-'}"

    def gateway(self, name: str) -> str:
        return f"{self.prefix}:gateway:{name}"

    def lease(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    def claim(self, name: str) -> str:
        return f"{self.prefix}:claim:{name}"

    @property
    def heartbeat(self) -> str:
        return f"{self.prefix}:hb"
