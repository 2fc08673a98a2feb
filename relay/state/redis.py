"""Redis state and broker: any number of workers act as one relay.

State: one hash per instance holding the :class:`Record` (``r``) and a write version (``v``). The
rules in :mod:`relay.snapshot` run once, in Python, for both stores: a worker reads the record,
applies the event, and writes back with one Lua compare-and-set that checks the version, the
dedupe key, stores, and PUBLISHes, atomically. An update is therefore published if and only if it
was stored, and a channel's messages come in seq order. (Two round trips; WATCH/MULTI took three
and five commands, and was the hot path's largest cost.)

Broker: one pub/sub channel per instance, subscribed only while this worker has viewers of it. A
supervised listener owns the pub/sub connection; after any gap it re-subscribes and asks the hub
to push fresh snapshots (pub/sub is at-most-once). Every worker also remembers the records it
wrote or read lately, and the hub the snapshots it delivered; they are put back if Redis comes
back empty, so a Redis restart without persistence loses no accepted event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..config import Settings
from ..lease import RedisLease
from ..snapshot import Event, Record, Snapshot, Wired, apply, encode, unwire, wire
from ..tasks import Backoff
from . import BrokerListener

log = logging.getLogger("relay.redis")
# KEYS: record hash, dedupe key. ARGV: expected version ('' = absent), record, new version,
# channel, channel message ('' = nothing to publish), dedupe TTL ('0' = no dedupe key).
# Returns {1} stored, {-1} duplicate, or {0, version, record}: the instance changed since the
# caller's copy, which is handed back so that the retry needs no extra read.
CAS = """
if ARGV[6] ~= '0' and redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local cur = redis.call('HMGET', KEYS[1], 'v', 'r')
if (cur[1] or '') ~= ARGV[1] then return {0, cur[1] or '', cur[2] or ''} end
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', ARGV[3])
if ARGV[6] ~= '0' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[6]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {1}
"""
# Put a record back only where Redis has none (it restarted empty).
RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', '1')
return 1
"""
DEDUPE_TTL = 30 * 60  # seconds; Evolution retries for up to ~20 minutes (protocols §2.5)
RECENT_MAX = 10_000  # records each worker caches (to write without reading, and to re-seed)
PING_EVERY = 5.0  # the listener pings its connection; silence for SILENT_AFTER means it is dead
SILENT_AFTER = 15.0
SUBSCRIBE_WAIT = 2.0


def _client(url: str, *, pool: int | None, timeout: float | None) -> aioredis.Redis:
    # Fail fast (one immediate retry reconnects a pooled connection that died with a restart):
    # a webhook that can't be stored must get its 503 quickly so the gateway retries.
    kwargs = dict(decode_responses=True, socket_keepalive=True, socket_connect_timeout=2,
                  retry=Retry(NoBackoff(), 1), health_check_interval=15)
    if pool is None:
        # The pub/sub connection: never a socket timeout (quiet periods are normal), and no
        # retry: redis-py would reconnect and re-subscribe silently, so the listener would never
        # know that it missed messages (pub/sub is at-most-once) and never resync.
        kwargs["retry"] = Retry(NoBackoff(), 0)
        return aioredis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
    # A bounded pool that waits for a free connection instead of raising in a burst.
    blocking = aioredis.BlockingConnectionPool.from_url(url, max_connections=pool, timeout=timeout,
                                                        socket_timeout=timeout, **kwargs)
    return aioredis.Redis(connection_pool=blocking)


class RedisState:
    """Latest record per instance in Redis, shared by every worker."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, qr_ttl: float,
                 default_upstream: str = "evolution"):
        self.client = client
        self.prefix = prefix
        self.qr_ttl_ms = int(qr_ttl * 1000)
        self.default_upstream = default_upstream
        # instance -> (version, record): from this worker's reads and writes and from every
        # channel message it receives, so a write usually needs no read first (the CAS checks
        # the version, and hands back the current record when the cache was behind).
        self._cache: OrderedDict[str, tuple[int, Record | Wired]] = OrderedDict()
        self._cas = client.register_script(CAS)
        self._restore = client.register_script(RESTORE)

    def key(self, instance: str) -> str:
        return f"{self.prefix}:inst:{instance}"

    def channel(self, instance: str) -> str:
        return f"{self.prefix}:ch:{instance}"

    def _remember(self, instance: str, version: int, record: Record | Wired) -> None:
        self._cache[instance] = (version, record)
        self._cache.move_to_end(instance)
        if len(self._cache) > RECENT_MAX:
            self._cache.popitem(last=False)

    def _cached(self, instance: str) -> tuple[int, Record] | None:
        entry = self._cache.get(instance)
        if entry is None:
            return None
        version, record = entry
        if isinstance(record, Wired):  # decoded only when a write needs it
            record = record.record()
            self._cache[instance] = (version, record)
        return version, record

    def observe(self, instance: str, message: str) -> None:
        """A channel message seen by this worker: the newest version of the instance."""
        wired = unwire(message)
        entry = self._cache.get(instance)
        if entry is None or wired.version > entry[0]:
            self._remember(instance, wired.version, wired)

    async def get(self, instance: str) -> Snapshot | None:
        raw, version = await self.client.hmget(self.key(instance), ["r", "v"])
        if raw is None:
            return None
        record = Record.loads(raw)
        self._remember(instance, int(version or 0), record)
        return record.snapshot

    async def instances(self) -> list[str]:
        start = len(self.key(""))
        return [k[start:] async for k in self.client.scan_iter(match=self.key("*"), count=500)]

    async def apply(self, event: Event) -> Snapshot | None:
        key = self.key(event.instance)
        dedupe = f"{self.prefix}:seen:{event.dedupe_key}" if event.dedupe_key else f"{self.prefix}:seen:-"
        ttl = str(DEDUPE_TTL) if event.dedupe_key else "0"
        current: Record | None
        cached = self._cached(event.instance)
        if cached is not None:
            version, current = cached
        else:
            raw, stored = await self.client.hmget(key, ["r", "v"])
            version, current = int(stored or 0), (Record.loads(raw) if raw is not None else None)
        while True:
            # A stale cache can only be behind Redis, so "stale event" verdicts hold; anything
            # else is checked by the CAS.
            result = apply(current, event, qr_ttl_ms=self.qr_ttl_ms,
                           default_upstream=self.default_upstream)
            if result is None:
                return None
            record, changed = result
            snapshot_json = encode(record.snapshot)  # once, for the record and the message
            message = wire(record.snapshot, snapshot_json, version=version + 1,
                           gateway_ts=record.gateway_ts, retired=record.retired) if changed else ""
            outcome = await self._cas(keys=[key, dedupe], args=[
                str(version) if version else "", record.dumps(snapshot_json), str(version + 1),
                self.channel(event.instance), message, ttl])
            if outcome[0] == 1:
                self._remember(event.instance, version + 1, record)
                return record.snapshot if changed else None
            if outcome[0] == -1:
                return None  # a copy of this event was stored first (another worker, a retry)
            # Another worker wrote this instance since our copy: re-apply on the current one.
            version = int(outcome[1] or 0)
            current = Record.loads(outcome[2]) if outcome[2] else None

    async def restore(self, seen: dict[str, Snapshot]) -> int:
        """Put back what Redis lost when it restarted empty. SET NX: whatever Redis holds now was
        written since, is newer, and wins. A full record (with its gateway clock) beats a bare
        snapshot this worker only delivered."""
        records = {instance: Record(snapshot=snap) for instance, snap in seen.items()}
        for instance in list(self._cache):
            cached = self._cached(instance)
            if cached is not None:
                records[instance] = cached[1]
        restored = 0
        for instance, record in records.items():
            if await self._restore(keys=[self.key(instance)], args=[record.dumps()]):
                restored += 1
        if restored:
            log.warning("Redis had lost the state of %d instance(s); restored it from this worker",
                        restored)
        return restored

    async def swap_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self.client.set(f"{self.prefix}:gateway:{name}", json.dumps(status), get=True)
        return json.loads(raw) if isinstance(raw, (str, bytes)) and raw else None

    async def status(self, name: str) -> dict[str, Any] | None:
        raw = await self.client.get(f"{self.prefix}:gateway:{name}")
        return json.loads(raw) if raw else None

    def lease(self, name: str) -> RedisLease:
        return RedisLease(self.client, f"{self.prefix}:lease:{name}")

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


class RedisBroker:
    """Per-instance channels; the listener task owns the pub/sub connection."""

    def __init__(self, url: str, state: RedisState):
        self.url = url
        self.state = state
        self.healthy = False
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._listener: BrokerListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self, listener: BrokerListener) -> None:
        self._listener = listener
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name("redis-listener")
        # Start-up waits briefly for the first connection; /readyz tells the rest.
        try:
            await asyncio.wait_for(self._connected.wait(), 5)
        except asyncio.TimeoutError:
            log.error("Redis pub/sub is not reachable yet; the listener keeps trying")

    async def subscribe(self, instance: str) -> None:
        channel = self.state.channel(instance)
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
        channel = self.state.channel(instance)
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
            client = _client(self.url, pool=None, timeout=None)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(f"{self.state.prefix}:hb", *self._wanted)
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
                await _quietly(pubsub.aclose())
                await _quietly(client.aclose())
            await asyncio.sleep(backoff.next())

    async def _notify_resume(self) -> None:
        if self._listener is None:
            return
        start = len(self.state.channel(""))
        await self._listener.resume([c[start:] for c in self._wanted])

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_seen = last_ping = loop.time()
        start = len(self.state.channel(""))
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if message is not None:
                last_seen = now
                kind = message.get("type")
                channel = message.get("channel")
                if kind == "message" and isinstance(channel, str) and self._listener is not None:
                    try:
                        self.state.observe(channel[start:], message["data"])
                        await self._listener.deliver(channel[start:], message["data"])
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


async def open_redis_backend(settings: Settings) -> tuple[RedisState, RedisBroker]:
    assert settings.redis_url is not None
    client = _client(settings.redis_url, pool=64, timeout=5.0)
    state = RedisState(client, prefix=settings.key_prefix, qr_ttl=settings.qr_ttl,
                       default_upstream=settings.upstream_name)
    return state, RedisBroker(settings.redis_url, state)
