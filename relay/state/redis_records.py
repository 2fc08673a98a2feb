"""Records in Redis, shared by every worker.

One hash per instance holds the :class:`~relay.snapshot.Record` (``r``) and a write version
(``v``). The rules in :mod:`relay.snapshot` run once, in Python, for both stores: a worker applies
the event to its copy of the record and writes back with one Lua compare-and-set that checks the
version and the dedupe key, stores, and PUBLISHes (SPUBLISHes on a Cluster, where the record, the
dedupe key and the channel share the instance's slot), atomically. An update is therefore
published if and only if it was stored, and a channel's messages come in seq order. Each worker
keeps the records it wrote, read or saw on a channel lately, so a write usually needs no read
first (one round trip), and so that it can put them back if Redis loses them (within a count
and byte budget: :mod:`.recent`). A record expires ``record_ttl`` after its last write, so that
names nobody uses any more do not pile up in Redis.

Versions are a hybrid clock like ``seq`` (microseconds of wall time, or the previous + 1): they
only grow, even across a Redis that lost data, so "Redis holds an older version than this worker
has seen" means Redis lost writes: it restarted, or a replica that had not received the last
writes (replication is asynchronous) was promoted. The worker then writes its newer copy back
(on its next write to the instance, or at the resync after the gap), and the restore is
published so that workers whose viewers read the older copy meanwhile catch up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from ..rules import apply, quiet_repeat
from ..snapshot import Event, Record, Snapshot, next_seq
from ..wire import Wired, dump_record, encode, load_record, message
from .recent import Recent
from .redis_client import COMMAND_TIMEOUT, Client, Keys
from .redis_lane import Lanes

log = logging.getLogger("relay.redis")
# KEYS: record hash, dedupe key. ARGV: expected version ('' = absent), record, new version,
# channel, channel message ('' = nothing to publish), dedupe TTL ('0' = no dedupe key), record
# TTL in ms ('0' = none: the record outlives its last write by that long).
# Returns {1} stored, {-1} duplicate, or {0, version, record}: the instance changed since the
# caller's copy, which is handed back so that the retry needs no extra read. An empty record
# only checks the version: {2} when the caller's copy is current (a quiet repeat, not written).
CAS = """
if ARGV[6] ~= '0' and redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local cur = redis.call('HMGET', KEYS[1], 'v', 'r')
if (cur[1] or '') ~= ARGV[1] then return {0, cur[1] or '', cur[2] or ''} end
if ARGV[2] == '' then return {2} end
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', ARGV[3])
if ARGV[7] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
if ARGV[6] ~= '0' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[6]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {1}
"""
# Put a record back where Redis has none (it restarted empty) or an older version (it lost the
# last writes); a record Redis replaced is published (ARGV: record, version, channel, message,
# record TTL in ms).
RESTORE = """
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', ARGV[2])
if ARGV[5] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
if v then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""
# Answers that send a lane's command through redis-py instead.
REDIRECTED = ("NOSCRIPT", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
MAX_UNSAVED = 100_000  # instances with unsaved repeat counts (then the counts are let go)
DEDUPE_TTL = 30 * 60  # seconds; Evolution retries for up to ~20 minutes (protocols §2.5)


class RedisRecords:
    """Latest record per instance in Redis, with a per-worker cache of recent records."""

    def __init__(self, client: Client, keys: Keys, *, qr_ttl: float, qr_wait: float,
                 default_upstream: str = "evolution", sharded: bool = False,
                 record_ttl: float = 0.0):
        self.client = client
        self.keys = keys
        self.qr_ttl_ms = int(qr_ttl * 1000)
        self.qr_wait_ms = int(qr_wait * 1000)
        self.default_upstream = default_upstream
        self.record_ttl_ms = str(int(record_ttl * 1000))
        # instance -> (version, record): from this worker's reads and writes and from every
        # channel message it receives, so a write usually needs no read first (the CAS checks
        # the version, and hands back the current record when the cache was behind).
        self.recent = Recent()
        # instance -> events of a pairing wait not written (quiet repeats, see rules.quiet_repeat):
        # added to the count of the next write, so the watchdog's log line stays about right.
        self._unsaved: dict[str, int] = {}
        self.lanes = Lanes(client, COMMAND_TIMEOUT)
        # On a Cluster, channels are sharded: a script may SPUBLISH to its own slot only.
        publish = "'SPUBLISH'" if sharded else "'PUBLISH'"
        self._cas = client.register_script(CAS.replace("'PUBLISH'", publish))
        self._restore = client.register_script(RESTORE.replace("'PUBLISH'", publish))

    def observe(self, instance: str, message: Wired, size: int) -> None:
        """A channel message seen by this worker: the newest version of the instance."""
        known = self.recent.version(instance)
        if known is None or message.version > known:
            self.recent.put(instance, message.version, message, size)

    async def get(self, instance: str) -> Record | None:
        key = self.keys.record(instance)
        raw, version = await self._on_lane(key, ("HMGET", key, "r", "v"),
                                           lambda: self.client.hmget(key, ["r", "v"]))
        held = int(version or 0) if raw is not None else 0
        cached = self.recent.get(instance)
        if cached is not None and cached[0] > held and self._unexpired(cached[0]):
            # Redis holds an older copy than this worker has seen, or none: it lost writes (a
            # restart, a failover), maybe put back older by another worker's restore. The
            # newer copy is the truth: keep it (this worker's restore writes it back).
            return cached[1]
        if raw is None:
            return None
        record = load_record(raw)
        self.recent.put(instance, held, record, len(raw))
        return record

    def _unexpired(self, version: int) -> bool:
        """Was a record of this version (a hybrid clock in µs: when it was written) written
        less than the record TTL ago? (Else Redis forgot it on purpose.)"""
        ttl_ms = int(self.record_ttl_ms)
        return not ttl_ms or time.time_ns() // 1000 - version < ttl_ms * 1000

    async def instances(self) -> list[str]:
        return [self.keys.record_instance(k)
                async for k in self.client.scan_iter(match=self.keys.records, count=500)]

    async def apply(self, event: Event) -> Snapshot | None:
        key = self.keys.record(event.instance)
        dedupe = self.keys.seen(event.instance, event.dedupe_key)
        ttl = str(DEDUPE_TTL) if event.dedupe_key else "0"
        current: Record | None
        cached = self.recent.get(event.instance)
        if cached is not None:
            version, current = cached
        else:
            raw, stored = await self._on_lane(key, ("HMGET", key, "r", "v"),
                                              lambda: self.client.hmget(key, ["r", "v"]))
            version, current = int(stored or 0), (load_record(raw) if raw is not None else None)
            if current is not None:  # later verdicts are checked by the CAS against Redis
                self.recent.put(event.instance, version, current, len(raw))
        expected = version  # the version Redis must hold for this write to land
        while True:
            # The copy is never older than what Redis acknowledged to anyone, so "stale event"
            # verdicts hold; anything else is checked by the CAS.
            result = apply(current, event, qr_ttl_ms=self.qr_ttl_ms, qr_wait_ms=self.qr_wait_ms,
                           default_upstream=self.default_upstream)
            if result is None:
                return None
            record, changed = result
            if expected == version and quiet_repeat(current, record, changed):
                # Only checked (one read-only script call): the copy must still be current.
                outcome = await self._compare_and_set([key, dedupe], [
                    str(expected) if expected else "", "", "", "", "", "0", "0"])
                if outcome[0] == 2:
                    self._count_unsaved(event.instance, record, current)
                    return None
            else:
                outcome = await self._write(event, key, dedupe, ttl, expected, version, current,
                                            record, changed)
                if outcome[0] == 1:
                    return record.snapshot if changed else None
                if outcome[0] == -1:
                    return None  # a copy of this event was stored first (another worker, a retry)
            held = int(outcome[1] or 0)
            if current is not None and held < version:
                # Redis holds an older version than this worker has seen: it lost writes (a
                # restart, or a failover to a replica that had not received them). Build on the
                # newer copy; this write puts it back.
                expected = held
            else:
                # Another worker wrote this instance since our copy: re-apply on the current one.
                expected = version = held
                current = load_record(outcome[2]) if outcome[2] else None
                if current is not None:  # the next event of the instance needs no retry
                    self.recent.put(event.instance, held, current, len(outcome[2]))

    def _count_unsaved(self, instance: str, record: Record, current: Record | None) -> None:
        """A quiet repeat during a pairing wait: counted here until the next write."""
        if current is not None and record.waiting_events > current.waiting_events:
            if len(self._unsaved) >= MAX_UNSAVED:
                self._unsaved.clear()
            self._unsaved[instance] = self._unsaved.get(instance, 0) + 1

    async def _write(self, event: Event, key: str, dedupe: str, ttl: str, expected: int,
                     version: int, current: Record | None, record: Record,
                     changed: bool) -> list[Any]:
        """The CAS of ``record`` (with the repeats counted meanwhile); cached when it lands."""
        unsaved = self._unsaved.get(event.instance, 0)
        if unsaved and current is not None and record.waiting_since is not None \
                and record.waiting_since == current.waiting_since:
            record = replace(record, waiting_events=record.waiting_events + unsaved)
        new_version = next_seq(version)
        snapshot_json = encode(record.snapshot)  # once, for the record and the message
        published = message(record, snapshot_json, version=new_version) if changed else ""
        dumped = dump_record(record, snapshot_json)
        # A dedupe key only for what viewers saw change: a repeat's retry changes nothing either.
        outcome = await self._compare_and_set([key, dedupe], [
            str(expected) if expected else "", dumped, str(new_version),
            self.keys.channel(event.instance), published, ttl if changed else "0",
            self.record_ttl_ms])
        if outcome[0] == 1:
            self._unsaved.pop(event.instance, None)
            self.recent.put(event.instance, new_version, record, len(dumped))
        return outcome

    async def _compare_and_set(self, keys: list[str], args: list[str]) -> list[Any]:
        """The CAS script (see :meth:`_on_lane`; redis-py loads it where it is missing)."""
        outcome: list[Any] = await self._on_lane(
            keys[0], ("EVALSHA", self._cas.sha, 2, *keys, *args),
            lambda: self._cas(keys=keys, args=args))
        return outcome

    async def _on_lane(self, key: str, command: tuple[str | int, ...],
                       fallback: Callable[[], Awaitable[Any]]) -> Any:
        """``command`` on the lean lane to the node of ``key`` (see :mod:`.redis_lane`); through
        redis-py (``fallback``) when the script is not loaded there yet, or on a Cluster whose
        slot map is not known yet, moved, or lost a master (redis-py loads the script, follows
        MOVED, learns the map, and the next lane follows it)."""
        lane = self.lanes.lane_for(key)
        if lane is not None:
            try:
                return await lane.call(*command)
            except ResponseError as exc:
                if not str(exc).startswith(REDIRECTED):
                    raise
            except RedisConnectionError:
                if not self.lanes.cluster:
                    raise
                # A master gone: redis-py finds where its slots went.
        return await fallback()

    async def close(self) -> None:
        await self.lanes.close()

    async def restore(self, seen: dict[str, Record]) -> int:
        """Put back what Redis lost: where it holds no record (it restarted empty) or an older
        version than this worker has seen (a failover to a replica that missed the last writes).
        Whatever Redis holds that is newer was written since, and wins. A full record (with its
        gateway clock and version) beats a bare snapshot this worker only delivered, which only
        fills a gap (version 1). A record that replaced an older one is published."""
        records = {instance: (1, record) for instance, record in seen.items()}
        for instance in self.recent:
            cached = self.recent.get(instance)
            if cached is not None:
                records[instance] = (max(1, cached[0]), cached[1])
        restored = 0
        for instance, (version, record) in records.items():
            snapshot_json = encode(record.snapshot)
            published = message(record, snapshot_json, version=version)
            if await self._restore(keys=[self.keys.record(instance)], args=[
                    dump_record(record, snapshot_json), str(version), self.keys.channel(instance),
                    published, self.record_ttl_ms]):
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
