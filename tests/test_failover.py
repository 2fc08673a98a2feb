"""Masters killed under running relays: a Redis Cluster master (its replica takes over) and a
Sentinel group's master (the sentinels promote a replica).

Before the kill, the master's replicas are paused (SIGSTOP) and their links closed while one
more QR of some instances is accepted: those writes are on the master only, as the last writes
before a crash often are (replication is asynchronous), and the promoted replica never gets them. Those "quiet"
instances get nothing newer afterwards, so their final state shows that the workers put back
what the failover lost. The other instances keep receiving webhooks through the failover
(refused with 503 and retried, like Evolution does, until a worker accepts them).

Every wait polls for its condition with a deadline; nothing sleeps for the failover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from relay.state.redis_client import Keys
from tests.support.clients import SioViewer, connected_viewer, token
from tests.support.failover import Gateway, Shown, wait_status
from tests.support.procs import started
from tests.support.redis_cluster import ClusterServers, Node
from tests.support.redis_sentinel import SentinelGroup
from tests.support.relay import RelayProcess

KEYS = Keys("relay")


@pytest.fixture
def cluster() -> Iterator[ClusterServers]:
    with started(ClusterServers(masters=3, replicas=1)) as (servers,):
        yield servers


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    with started(SentinelGroup(replicas=2)) as (group,):
        yield group


async def kill_master_under_load(url: str, instances: list[str], quiet: list[str], victim: Node,
                                 replicas: list[Node], promoted: Callable[[], object]) -> Gateway:
    """Two workers, a viewer on each; QRs flow; the replicas of ``victim`` pause while ``quiet``
    instances get one more QR; ``victim`` is SIGKILLed; the relay must pause viewers, fail
    /readyz, come back after the failover, and end with every accepted QR shown everywhere."""
    env = {"RELAY_REDIS_URL": url}
    workers = [RelayProcess(env), RelayProcess(env)]
    viewers: list[SioViewer] = []
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            viewer, acks = await connected_viewer(worker.url, token("*"), *instances)
            assert all(ack["ok"] for ack in acks)
            viewers.append(viewer)
        shown = [Shown(v) for v in viewers]
        gateway = Gateway([w.url for w in workers])

        async def everyone_shows_what_was_accepted(what: str) -> None:
            for s in shown:
                await s.until(lambda s: all(s.code(i) == gateway.accepted.get(i) and s.ok(i)
                                            for i in instances), what)

        await gateway.round(instances, 1)
        await everyone_shows_what_was_accepted("QR #1 everywhere")

        for replica in replicas:  # what the master accepts now never reaches its replicas
            replica.pause()
        try:
            victim.drop_replicas()
            await gateway.round(quiet, 2)
            await everyone_shows_what_was_accepted("QR #2 of the quiet instances")
            victim.kill()
        finally:
            for replica in replicas:
                replica.resume()

        # Viewers are told that updates are paused; the balancer is told to look elsewhere.
        for s in shown:
            await s.until(lambda s: s.paused, "updates paused")
        await wait_status(f"{workers[0].url}/readyz", 503)
        # Meanwhile and through the failover, the gateway keeps sending (retrying 503s).
        busy = [i for i in instances if i not in quiet]
        sending = asyncio.create_task(gateway.round(busy, 3))
        await asyncio.to_thread(promoted)
        await sending
        await gateway.round(busy, 4)

        for worker in workers:
            await wait_status(f"{worker.url}/readyz", 200)
        await everyone_shows_what_was_accepted("every accepted QR after the failover")
        # Redis holds it too: a new viewer on either worker sees every accepted QR at once
        # (the quiet instances' QR #2 was on the killed master only: the workers put it back).
        for worker in workers:
            late, acks = await connected_viewer(worker.url, token("*"))
            try:
                for instance in instances:
                    ack = await late.subscribe(instance)
                    assert ack["snapshot"]["qr"]["code"] == gateway.accepted[instance], instance
            finally:
                await late.close()
        return gateway
    finally:
        for viewer in viewers:
            await viewer.close()
        for worker in workers:
            worker.stop()


async def test_cluster_master_killed_replica_takes_over(cluster: ClusterServers) -> None:
    by_master = cluster.spread(KEYS.channel, 2, "shop")
    instances = [i for names in by_master.values() for i in names]
    victim = cluster.masters()[0]
    quiet = [by_master[victim.port][0], by_master[cluster.masters()[1].port][0]]
    [replica] = cluster.replicas_of(victim)
    await kill_master_under_load(cluster.url, instances, quiet, victim, [replica],
                                 lambda: cluster.wait_promoted(replica))


async def test_sentinel_master_killed_replica_promoted(sentinel_group: SentinelGroup) -> None:
    instances = [f"shop-{i}" for i in range(4)]
    victim = sentinel_group.master()
    replicas = sentinel_group.replicas()
    await kill_master_under_load(sentinel_group.url, instances, instances[:2], victim, replicas,
                                 lambda: sentinel_group.wait_failover(victim))
