"""Records in Redis, shared by every worker.

One hash per instance holds the :class:`~relay.snapshot.Record` (``r``) and a write version
(``v``). The rules in :mod:`relay.snapshot` run once, in Python, for both stores: a worker applies
the event to its copy of the record and writes back with one Lua compare-and-set that checks the
version and the dedupe key, stores, and PUBLISHes, atomically. An update is therefore published
if and only if it was stored, and a channel's messages come in seq order. Each worker keeps the
records it wrote, read or saw on a channel lately, so a write usually needs no read first (one
round trip), and so that it can put them back if Redis restarts empty.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..rules import apply
from ..snapshot import Event, Record, Snapshot
from ..wire import Wired, dump_record, encode, load_record, message, unwire
from .redis_client import Keys

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


class RedisRecords:
    """Latest record per instance in Redis, with a per-worker cache of recent records."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, qr_ttl: float, qr_wait: float,
                 default_upstream: str = "evolution"):
        self.client = client
        self.keys = keys
        self.qr_ttl_ms = int(qr_ttl * 1000)
        self.qr_wait_ms = int(qr_wait * 1000)
        self.default_upstream = default_upstream
        # instance -> (version, record): from this worker's reads and writes and from every
        # channel message it receives, so a write usually needs no read first (the CAS checks
        # the version, and hands back the current record when the cache was behind).
        self._cache: OrderedDict[str, tuple[int, Record | Wired]] = OrderedDict()
        self._cas = client.register_script(CAS)
        self._restore = client.register_script(RESTORE)

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

    async def get(self, instance: str) -> Record | None:
        raw, version = await self.client.hmget(self.keys.record(instance), ["r", "v"])
        if raw is None:
            return None
        record = load_record(raw)
        self._remember(instance, int(version or 0), record)
        return record

    async def instances(self) -> list[str]:
        start = len(self.keys.record(""))
        return [k[start:] async for k in self.client.scan_iter(match=self.keys.record("*"), count=500)]

    async def apply(self, event: Event) -> Snapshot | None:
        key = self.keys.record(event.instance)
        dedupe = self.keys.seen(event.dedupe_key)
        ttl = str(DEDUPE_TTL) if event.dedupe_key else "0"
        current: Record | None
        cached = self._cached(event.instance)
        if cached is not None:
            version, current = cached
        else:
            raw, stored = await self.client.hmget(key, ["r", "v"])
            version, current = int(stored or 0), (load_record(raw) if raw is not None else None)
        while True:
            # A stale cache can only be behind Redis, so "stale event" verdicts hold; anything
            # else is checked by the CAS.
            result = apply(current, event, qr_ttl_ms=self.qr_ttl_ms, qr_wait_ms=self.qr_wait_ms,
                           default_upstream=self.default_upstream)
            if result is None:
                return None
            record, changed = result
            snapshot_json = encode(record.snapshot)  # once, for the record and the message
            published = message(record, snapshot_json, version=version + 1) if changed else ""
            outcome = await self._cas(keys=[key, dedupe], args=[
                str(version) if version else "", dump_record(record, snapshot_json), str(version + 1),
                self.keys.channel(event.instance), published, ttl])
            if outcome[0] == 1:
                self._remember(event.instance, version + 1, record)
                return record.snapshot if changed else None
            if outcome[0] == -1:
                return None  # a copy of this event was stored first (another worker, a retry)
            # Another worker wrote this instance since our copy: re-apply on the current one.
            version = int(outcome[1] or 0)
            current = load_record(outcome[2]) if outcome[2] else None

    async def restore(self, seen: dict[str, Record]) -> int:
        """Put back what Redis lost when it restarted empty. SET NX: whatever Redis holds now was
        written since, is newer, and wins. A full record (with its gateway clock) beats a bare
        snapshot this worker only delivered."""
        records = dict(seen)
        for instance in list(self._cache):
            cached = self._cached(instance)
            if cached is not None:
                records[instance] = cached[1]
        restored = 0
        for instance, record in records.items():
            if await self._restore(keys=[self.keys.record(instance)], args=[dump_record(record)]):
                restored += 1
        if restored:
            log.warning("Redis had lost the state of %d instance(s); restored it from this worker",
                        restored)
        return restored

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False
