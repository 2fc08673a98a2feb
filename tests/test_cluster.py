"""Many workers on a real 3-master Redis Cluster: sharded pub/sub with one reader per master,
instances spread over every master, and a slot that moves under a running relay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from relay.state.redis_client import Keys
from tests.support.clients import connected_viewer, token
from tests.support.failover import Gateway, Shown, code
from tests.support.procs import started
from tests.support.redis_cluster import ClusterServers, Node, wait_for
from tests.support.relay import RelayProcess

KEYS = Keys("relay")


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterServers]:
    with started(ClusterServers(masters=3)) as (servers,):
        yield servers


@pytest.fixture
def two_workers(cluster: ClusterServers) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    env = {"RELAY_REDIS_URL": cluster.url}
    with started(RelayProcess(env), RelayProcess(env)) as (a, b):
        yield a, b


def shard_subscribers(node: Node, instance: str) -> int:
    with node.client() as c:
        return int(c.execute_command("PUBSUB", "SHARDNUMSUB", KEYS.channel(instance))[1])


async def test_webhooks_reach_viewers_on_another_worker_on_every_master(
        cluster: ClusterServers, two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    a, b = two_workers
    by_master = cluster.spread(KEYS.channel, 2, "shop")
    instances = [i for names in by_master.values() for i in names]
    assert len(by_master) == 3 and all(len(n) == 2 for n in by_master.values())
    for name in instances:  # record, dedupe key and channel of one instance: one slot
        assert key_slot(KEYS.record(name).encode()) == key_slot(KEYS.channel(name).encode()) == \
            key_slot(KEYS.seen(name, "x").encode())
    # One reader per master in each worker: every master holds one pub/sub connection per worker.
    wait_for(lambda: all(m.pubsub_clients() == 2 for m in cluster.masters()), 10,
             "2 readers (one per worker) on every master")
    viewer, acks = await connected_viewer(b.url, token("*"), *instances)
    shown = Shown(viewer)
    try:
        assert all(ack["ok"] for ack in acks)
        # Route, don't broadcast: the owning master has the one SSUBSCRIBE of worker b.
        for port, names in by_master.items():
            for name in names:
                assert shard_subscribers(cluster.master_for(KEYS.channel(name)), name) == 1
                assert cluster.master_for(KEYS.channel(name)).port == port
        gateway = Gateway([a.url])  # every webhook on worker a, every viewer on worker b
        for n in (1, 2):
            await gateway.round(instances, n)
            await shown.until(lambda s: all(s.code(i) == gateway.accepted[i] for i in instances),
                              f"QR #{n} of every instance")
            assert set(gateway.accepted.values()) == {code(i, n) for i in instances}
        assert gateway.refused == 0
    finally:
        await viewer.close()
    # The last viewer gone, worker b unsubscribes on every master.
    wait_for(lambda: all(shard_subscribers(cluster.master_for(KEYS.channel(i)), i) == 0
                         for i in instances), 10, "every instance unsubscribed")


async def test_listener_follows_a_slot_that_moves(
        cluster: ClusterServers, two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    """Resharding under a running relay: the old master drops the shard channel (SUNSUBSCRIBE),
    the listener re-subscribes on the new owner and resyncs, as after a Redis restart."""
    a, b = two_workers
    name = cluster.spread(KEYS.channel, 1, "moving")[cluster.masters()[0].port][0]
    viewer, [ack] = await connected_viewer(b.url, token(name), name)
    shown = Shown(viewer)
    try:
        gateway = Gateway([a.url])
        await gateway.send(name, 1)
        await shown.until(lambda s: s.code(name) == code(name, 1), "QR #1")
        slot = key_slot(KEYS.channel(name).encode())
        target = cluster.masters()[1]
        cluster.move_slot(slot, target)
        # Viewers are told updates paused, then get a fresh snapshot once re-subscribed.
        await shown.until(lambda s: s.paused and s.ok(name) and s.code(name) == code(name, 1),
                          "paused, then resynced")
        wait_for(lambda: shard_subscribers(target, name) == 1, 10, "re-subscribed on the new owner")
        await gateway.send(name, 2)  # written on the new owner (MOVED), published there
        await shown.until(lambda s: s.code(name) == code(name, 2), "QR #2 after the move")
    finally:
        await viewer.close()
