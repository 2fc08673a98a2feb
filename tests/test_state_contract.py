"""One contract, two implementations: the same tests against memory and real Redis: one
redis-server, a 3-master Redis Cluster, and a Sentinel group (master, replica, three sentinels)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.cluster
import redis.sentinel

from relay.rules import QUIET_MS
from relay.snapshot import Event, NewQR, Record
from relay.state import Backend, Broker, Records
from relay.state.memory import open_memory
from relay.state.redis import open_redis
from relay.state.redis_client import Keys
from relay.state.redis_url import parse_redis_url
from relay.wire import message, unwire
from tests.support.procs import started
from tests.support.redis import RedisServer
from tests.support.redis_cluster import ClusterServers
from tests.support.redis_sentinel import SentinelGroup


class Recorder:
    """A BrokerListener that keeps what it is told."""

    def __init__(self) -> None:
        self.delivered: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.resumed: list[list[str]] = []
        self.degraded: list[str] = []

    async def deliver(self, instance: str, message: str, **_: Any) -> None:
        seq, updated, _, _, payload = unwire(message)
        snapshot = json.loads(payload)
        assert (seq, updated) == (snapshot["seq"], snapshot["updatedAt"])  # the header is true
        await self.delivered.put((instance, snapshot))

    store: Any = None

    async def resume(self, instances: list[str]) -> None:
        # Like the hub: put back what this process knows, then re-read.
        if self.store is not None:
            await self.store.restore({})
        self.resumed.append(sorted(instances))

    async def degrade(self, detail: str) -> None:
        self.degraded.append(detail)

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.delivered.get(), timeout)

    async def nothing_within(self, seconds: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.delivered.get(), seconds)
        except asyncio.TimeoutError:
            return True
        return False


def qr(instance: str, code: str, ts: int | None = 1, key: str | None = None) -> Event:
    return Event(upstream="evolution", instance=instance, cause="qrcode.updated", state="connecting",
                 qr=NewQR(code=code, image=None), gateway_ts=ts, dedupe_key=key or f"{instance}-{code}-{ts}")


def opened(instance: str, ts: int) -> Event:
    return Event(upstream="evolution", instance=instance, cause="connection.update", state="open",
                 clear_qr=True, gateway_ts=ts, dedupe_key=f"{instance}-open-{ts}")


@dataclass
class Shared:
    """The Redis a test's store lives on: how to open another worker's backend on it."""

    kind: str  # redis | cluster | sentinel
    url: str
    prefix: str
    server: RedisServer | None = None  # the one redis-server (killable), for kind "redis"

    def open(self) -> Backend:
        return open_redis(self.url, prefix=self.prefix, qr_ttl=45, qr_wait=30,
                          default_upstream="evolution")


_prefixes = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterServers]:
    with started(ClusterServers(masters=3)) as (servers,):
        yield servers


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[SentinelGroup]:
    with started(SentinelGroup(replicas=1)) as (group,):
        yield group


@pytest.fixture(params=["memory", "redis", "cluster", "sentinel"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Records, Broker, Recorder, Any]]:
    recorder = Recorder()
    redis_server = None
    shared: Shared | None = None
    if request.param == "memory":
        opened = open_memory(qr_ttl=45, qr_wait=30, default_upstream="evolution")
    elif request.param == "redis":
        redis_server = RedisServer()
        redis_server.start()
        shared = Shared("redis", redis_server.url, "relay", redis_server)
    else:  # one cluster / sentinel group per module: each test gets its own key prefix
        servers = request.getfixturevalue("cluster" if request.param == "cluster" else "sentinel_group")
        shared = Shared(request.param, servers.url, f"t{next(_prefixes)}")
    if shared is not None:
        opened = shared.open()
    store, broker = opened.records, opened.broker
    recorder.store = store
    await broker.start(recorder)
    try:
        yield store, broker, recorder, shared
    finally:
        await opened.close()
        if redis_server is not None:
            redis_server.stop()


async def test_unknown_instance(backend: Any) -> None:
    store, *_ = backend
    assert await store.get("nobody") is None
    assert await store.ping() is True


async def test_apply_stores_and_publishes_to_subscribers_only(backend: Any) -> None:
    store, broker, rec, _ = backend
    await broker.subscribe("a")
    snap = await store.apply(qr("a", "c1"))
    assert snap is not None and snap["qr"]["code"] == "c1"
    assert (await store.get("a")).snapshot == snap
    instance, delivered = await rec.next()
    assert (instance, delivered) == ("a", snap)
    assert await store.apply(qr("b", "c1")) is not None  # nobody watches b here
    assert await rec.nothing_within()
    assert sorted(await store.instances()) == ["a", "b"]


async def test_duplicates_stale_and_repeats_publish_nothing(backend: Any) -> None:
    store, broker, rec, _ = backend
    await broker.subscribe("a")
    first = await store.apply(qr("a", "c1", ts=10))
    await rec.next()
    assert await store.apply(qr("a", "c1", ts=10)) is None  # same dedupe key
    assert await store.apply(qr("a", "c1", ts=10, key="other-key")) is None  # same content
    assert await store.apply(qr("a", "old", ts=5)) is None  # older than what we have
    assert await rec.nothing_within()
    assert (await store.get("a")).snapshot == first


async def test_a_storm_of_repeats_is_counted_but_hardly_written(
        backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evolution that cannot reach WhatsApp sends the same "connecting" several times a second
    for hours, each with its own date_time (its own dedupe key): no update, and at most one
    write per instance per QUIET_MS and no dedupe key, the repeats still counted."""
    store, broker, rec, shared = backend
    clock = [1_000_000]
    monkeypatch.setattr("relay.rules.now_ms", lambda: clock[0])
    await broker.subscribe("a")

    def connecting(ts: int) -> Event:
        return Event(upstream="evolution", instance="a", cause="connection.update",
                     state="connecting", gateway_ts=ts, dedupe_key=f"a-connecting-{ts}")
    assert await store.apply(connecting(1)) is not None
    await rec.next()
    for n in range(2, 12):  # 10 repeats, 3 a second
        clock[0] += 333
        assert await store.apply(connecting(n)) is None
    clock[0] = 1_000_000 + QUIET_MS + 1  # one more, past the quiet window: written
    assert await store.apply(connecting(12)) is None
    assert await rec.nothing_within()
    record = await store.get("a")
    assert record.waiting_events == 11 and record.seen_at == clock[0]
    if shared is None:
        assert len(store._seen) == 1  # memory: its record holds the clocks; repeats keep no key
    elif shared.kind == "redis":
        with redis.Redis.from_url(shared.url) as client:
            assert len(client.keys(f"{shared.prefix}:seen:*")) == 1  # the first event's


async def test_seq_grows_and_unsubscribe_stops_delivery(backend: Any) -> None:
    store, broker, rec, _ = backend
    await broker.subscribe("a")
    s1 = await store.apply(qr("a", "c1", ts=1))
    s2 = await store.apply(opened("a", 2))
    assert s1 is not None and s2 is not None and s2["seq"] > s1["seq"]
    assert [(await rec.next())[1]["seq"] for _ in range(2)] == [s1["seq"], s2["seq"]]
    await broker.unsubscribe("a")
    await store.apply(qr("a", "c2", ts=3))
    assert await rec.nothing_within()


async def test_concurrent_copies_of_one_event_make_one_update(backend: Any) -> None:
    store, broker, rec, _ = backend
    await broker.subscribe("a")
    results = await asyncio.gather(*(store.apply(qr("a", "same", ts=7)) for _ in range(20)))
    assert sum(r is not None for r in results) == 1
    await rec.next()
    assert await rec.nothing_within()


async def test_two_redis_workers_apply_atomically(backend: Any) -> None:
    """Two stores on one Redis (two workers): interleaved events still give one consistent order."""
    store, broker, rec, shared = backend
    if shared is None:
        pytest.skip("memory state lives in one process")
    other_backend = shared.open()
    other = other_backend.records
    try:
        await broker.subscribe("a")
        events = [qr("a", f"c{i}", ts=i) for i in range(1, 41)]
        await asyncio.gather(*((store if i % 2 else other).apply(e) for i, e in enumerate(events)))
        stored = await store.get("a")
        assert stored is not None
        final = stored.snapshot
        assert final["qr"]["code"] == "c40"  # the newest by gateway time wins
        seqs = []
        while not rec.delivered.empty():
            seqs.append((await rec.next())[1]["seq"])
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        assert seqs[-1] == final["seq"]
    finally:
        await other_backend.close()


async def test_a_repeat_of_an_old_copy_is_checked_against_redis(
        backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's copy says "connecting", another worker has stored "open" since: a newer
    "connecting" is a repeat of the copy but a change of Redis' record, and must be stored."""
    store, _, _, shared = backend
    if shared is None:
        pytest.skip("memory state lives in one process")
    clock = [1_000_000]
    monkeypatch.setattr("relay.rules.now_ms", lambda: clock[0])
    other_backend = shared.open()
    try:
        connecting = [Event(upstream="evolution", instance="a", cause="connection.update",
                            state="connecting", gateway_ts=ts, dedupe_key=f"a-c-{ts}")
                      for ts in (1, 3)]
        assert await store.apply(connecting[0]) is not None
        clock[0] += 300
        assert await other_backend.records.apply(opened("a", 2)) is not None
        clock[0] += 300
        snap = await store.apply(connecting[1])
        assert snap is not None and snap["state"] == "connecting"
        assert (await other_backend.records.get("a")).snapshot == snap
    finally:
        await other_backend.close()


async def test_restore_after_redis_restarts_empty(backend: Any) -> None:
    store, broker, rec, shared = backend
    if shared is None or shared.server is None:
        pytest.skip("one redis-server to restart (clusters and Sentinel: see the failover tests)")
    redis_server = shared.server
    await broker.subscribe("a")
    snap = await store.apply(qr("a", "c1"))
    await rec.next()
    redis_server.kill()
    with pytest.raises(Exception):
        await store.apply(qr("a", "c2", ts=2))
    redis_server.start()  # same port, empty
    for _ in range(100):  # the listener reconnects by itself, restores, and asks for a resync
        if rec.resumed:
            break
        await asyncio.sleep(0.05)
    assert rec.resumed == [["a"]]
    assert rec.degraded and "Redis" in rec.degraded[0]
    assert (await store.get("a")).snapshot == snap  # nothing accepted was lost
    assert await store.apply(qr("a", "c2", ts=2)) is not None  # the gateway's retry now lands
    assert (await rec.next())[1]["qr"]["code"] == "c2"


async def test_claims_are_won_once_per_ttl(backend: Any) -> None:
    _, _, _, shared = backend
    if shared is None:
        workers = [open_memory(qr_ttl=45, qr_wait=30, default_upstream="evolution")]
    else:  # two workers on the same Redis
        workers = [shared.open(), shared.open()]
    try:
        coordination = [w.coordination for w in workers]
        wins = await asyncio.gather(*(c.claim("stall:a:1", 0.3) for c in coordination * 3))
        assert sum(wins) == 1
        assert await coordination[0].claim("stall:a:2", 0.3) is True  # another name, another claim
        await asyncio.sleep(0.4)
        assert await coordination[-1].claim("stall:a:1", 0.3) is True  # expired: claimable again
        assert await coordination[0].claim("connect:b:qr", 30) is True
        assert await coordination[-1].claim("connect:b:qr", 30) is False
        await coordination[-1].release("connect:b:qr")  # let go early, by any worker
        assert await coordination[0].claim("connect:b:qr", 30) is True
    finally:
        for worker in workers:
            await worker.close()


async def test_names_with_braces_keep_one_slot_and_come_back_intact(backend: Any) -> None:
    """Redis hashes what is between the first { and the next }: names holding braces (or %)
    must still keep their record, dedupe key and channel in one slot (else the CAS fails with
    CROSSSLOT on a cluster) and must come back exactly as given."""
    store, broker, rec, _ = backend
    names = ["x{y}", "}x{", "{}", "%7B", "a%b}"]
    for name in names:
        await broker.subscribe(name)
        snap = await store.apply(qr(name, "c1"))
        assert snap is not None and (await store.get(name)).snapshot == snap
        assert await rec.next() == (name, snap)
    assert sorted(await store.instances()) == sorted(names)


async def test_store_that_lost_writes_is_put_forward(backend: Any) -> None:
    """A promoted replica may lack the last writes (replication is asynchronous), as may a
    Redis that restarted from an old dump: what a worker saw is never undone by it, the resync
    puts it back, and publishes it for workers that read the older copy meanwhile."""
    store, broker, rec, shared = backend
    if shared is None:
        pytest.skip("memory has no separate store to lose")
    await broker.subscribe("a")
    await store.apply(qr("a", "c1", ts=1000))
    await rec.next()
    key = f"{shared.prefix}:inst:{{a}}"
    before = await store.client.hgetall(key)  # what a replica that missed the next write holds
    c2 = await store.apply(qr("a", "c2", ts=3000))
    assert c2 is not None and (await rec.next())[1] == c2
    await store.client.hset(key, mapping=before)  # the failover: Redis forgot c2
    # An event older than c2 still loses: the worker builds on the newest copy it has seen.
    assert await store.apply(qr("a", "late", ts=2000)) is None
    assert await store.restore({}) == 1  # the resync after the gap puts c2 back...
    assert (await rec.next())[1] == c2  # ...and publishes it
    other = shared.open()
    try:
        got = await other.records.get("a")  # a worker that never saw c2 reads it
        assert got is not None and got.snapshot == c2
    finally:
        await other.close()


async def test_lease_has_one_holder_and_status_is_shared(backend: Any) -> None:
    """The lease (redis-py's Lock) and the gateway status, on every kind of Redis."""
    _, _, _, shared = backend
    if shared is None:
        pytest.skip("memory: one process is always the holder")
    workers = [shared.open(), shared.open()]
    try:
        first, second = (w.coordination.lease("evolution") for w in workers)
        assert await first.acquire() is True
        assert await second.acquire() is False  # one holder across workers
        assert await first.renew() is True and await second.renew() is False
        await first.release()
        assert await second.acquire() is True  # free again once released
        await second.release()
        a, b = (w.coordination for w in workers)
        assert await a.swap_status("evolution", {"ok": False, "detail": "down"}) is None
        assert await b.status("evolution") == {"ok": False, "detail": "down"}
        assert await b.swap_status("evolution", {"ok": True, "detail": None}) == {"ok": False, "detail": "down"}
    finally:
        for worker in workers:
            await worker.close()


def blocking_publish(shared: Shared, channel: str, payload: str) -> None:
    """Publish with a blocking client: the event loop (and the listener) cannot read until the
    message is on its way, whatever happens to the subscription next."""
    target = parse_redis_url(shared.url)
    if target.kind == "cluster":
        host, port = target.nodes[0]
        with redis.cluster.RedisCluster(host=host, port=port) as cluster:
            cluster.execute_command("SPUBLISH", channel, payload)
        return
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(list(target.nodes))
        with sentinel.master_for(target.service) as master:
            master.publish(channel, payload)
        return
    with redis.Redis.from_url(shared.url) as client:
        client.publish(channel, payload)


async def test_nothing_is_delivered_after_unsubscribe(backend: Any) -> None:
    """UNSUBSCRIBE is not waited for: Redis may publish to the worker after unsubscribe()
    returned. Such a message must not be delivered."""
    store, broker, rec, shared = backend
    if shared is None:
        pytest.skip("memory: unsubscribe takes effect at once")
    await broker.subscribe("a")
    snap = await store.apply(qr("a", "c1"))
    assert snap is not None and (await rec.next())[1] == snap
    blocking_publish(shared, Keys(shared.prefix).channel("a"), message(Record(snapshot=snap), version=1))
    await broker.unsubscribe("a")  # before the listener could read what was just published
    assert await rec.nothing_within()
