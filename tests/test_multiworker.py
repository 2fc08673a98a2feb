"""Many workers, one relay: separate `relay serve` processes (and `--workers 2` on one port)
sharing a real redis-server that the tests kill and restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import aiohttp
import pytest
import redis

from relay.state.redis_client import Keys
from tests.support.clients import connected_viewer, post, token
from tests.support.fixtures import evolution_event
from tests.support.procs import started
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess

T1 = "2025-10-21T11:40:40.000Z"
T2 = "2025-10-21T11:40:41.000Z"
T3 = "2025-10-21T11:40:42.000Z"


@pytest.fixture
def two_workers(redis_server: RedisServer) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    env = {"RELAY_REDIS_URL": redis_server.url}
    with started(RelayProcess(env), RelayProcess(env)) as (a, b):
        yield a, b


def subscribers(redis_server: RedisServer, instance: str) -> int:
    channel = Keys("relay").channel(instance)  # relay:ch:{my-instance}
    with redis.Redis(port=redis_server.port) as client:
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])


async def test_webhook_on_one_worker_reaches_viewer_on_another(
        two_workers: tuple[RelayProcess, RelayProcess], redis_server: RedisServer) -> None:
    a, b = two_workers
    viewer, [ack] = await connected_viewer(b.url, token("my-instance"), "my-instance")
    try:
        assert ack["ok"] is True
        # Route, don't broadcast: only the worker with a viewer listens to the instance.
        assert subscribers(redis_server, "my-instance") == 1
        assert (await post(f"{a.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T1)))[0] == 200
        got = await viewer.next_update()
        assert got["qr"]["code"].startswith("2@") and got["seq"] > ack["snapshot"]["seq"]
    finally:
        await viewer.close()
    for _ in range(50):  # the last viewer gone, the worker unsubscribes
        if subscribers(redis_server, "my-instance") == 0:
            break
        await asyncio.sleep(0.05)
    assert subscribers(redis_server, "my-instance") == 0


async def test_late_subscriber_on_another_worker_gets_snapshot(
        two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    a, b = two_workers
    await post(f"{a.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T1))
    viewer, [ack] = await connected_viewer(b.url, token("my-instance"), "my-instance")
    try:
        assert ack["snapshot"]["qr"]["code"].startswith("2@")
    finally:
        await viewer.close()


async def test_one_event_delivered_to_both_workers_is_one_update(
        two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    a, b = two_workers
    va, _ = await connected_viewer(a.url, token("my-instance"), "my-instance")
    vb, _ = await connected_viewer(b.url, token("my-instance"), "my-instance")
    try:
        body = evolution_event("webhook-qrcode-updated", date_time=T1)
        results = await asyncio.gather(*(post(f"{w.url}/webhooks/evolution", body) for w in (a, b, a, b)))
        assert [r[0] for r in results] == [200] * 4
        assert sum(r[1]["updated"] for r in results) == 1
        marker = evolution_event("webhook-connection-update-open", date_time=T2)
        await post(f"{b.url}/webhooks/evolution", marker)
        for viewer in (va, vb):
            assert (await viewer.next_update())["qr"] is not None
            assert (await viewer.next_update())["state"] == "open"  # nothing in between
    finally:
        await va.close()
        await vb.close()


async def test_old_event_arriving_last_on_another_worker_does_not_win(
        two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    a, b = two_workers
    viewer, _ = await connected_viewer(a.url, token("my-instance"), "my-instance")
    try:
        await post(f"{a.url}/webhooks/evolution", evolution_event("webhook-connection-update-open", date_time=T3))
        assert (await viewer.next_update())["state"] == "open"
        late = evolution_event("webhook-qrcode-updated", date_time=T1, code="2@late,x,y,z")
        assert await post(f"{b.url}/webhooks/evolution", late) == (200, {"ok": True, "updated": False})
        closing = evolution_event("webhook-connection-update-close", date_time=T3.replace("42", "43"))
        await post(f"{b.url}/webhooks/evolution", closing)
        assert (await viewer.next_update())["state"] == "close"  # the late QR never showed
    finally:
        await viewer.close()


async def test_workers_2_on_one_port(redis_server: RedisServer, tmp_path: Path) -> None:
    # TMPDIR: where the workers' shared metrics folder goes; it must be gone after the stop.
    relay = RelayProcess({"RELAY_REDIS_URL": redis_server.url, "TMPDIR": str(tmp_path)},
                         ["--workers", "2"])
    relay.start()
    viewers = []
    try:
        pids = set()
        async with aiohttp.ClientSession() as session:
            for _ in range(400):  # the second worker may still be starting: give it time
                async with session.get(f"{relay.url}/healthz", headers={"Connection": "close"}) as resp:
                    pids.add((await resp.json())["pid"])
                if len(pids) == 2:
                    break
                await asyncio.sleep(0.05)
        assert len(pids) == 2, "two worker processes answer on the one port"
        for _ in range(8):
            viewers.append((await connected_viewer(relay.url, token("*"), "shop"))[0])
        for i in range(4):  # each webhook on a fresh connection: any worker may take it
            async with aiohttp.ClientSession() as session:
                body = evolution_event("webhook-qrcode-updated", instance="shop", code=f"2@n{i},a,b,c",
                                       date_time=f"2025-10-21T11:40:4{i}.000Z")
                async with session.post(f"{relay.url}/webhooks/evolution", json=body) as resp:
                    assert resp.status == 200
        for viewer in viewers:
            codes = [(await viewer.next_update())["qr"]["code"] for _ in range(4)]
            assert codes == [f"2@n{i},a,b,c" for i in range(4)]
        # One scrape counts every worker (prometheus multiprocess mode); a worker hands its hot
        # counters over once a second (relay/metrics.py), so the other's may be a second late.
        wanted = ['relay_webhooks_total{event="qrcode.updated",outcome="updated",upstream="evolution"} 4.0',
                  "relay_updates_delivered_total 32.0"]
        async with aiohttp.ClientSession() as session:
            for _ in range(40):
                async with session.get(f"{relay.url}/metrics") as resp:
                    text = await resp.text()
                if all(line in text for line in wanted):
                    break
                await asyncio.sleep(0.1)
        assert "relay_viewers 8.0" in text
        assert 'relay_webhooks_total{event="qrcode.updated",outcome="updated",upstream="evolution"} 4.0' in text
        assert "relay_updates_delivered_total 32.0" in text
        assert "relay_listener_up 1.0" in text
        assert len(list(tmp_path.glob("relay-metrics-*"))) == 1  # where the workers' values meet
    finally:
        for viewer in viewers:
            await viewer.close()
        relay.stop()
    assert not list(tmp_path.glob("relay-metrics-*")), "the metrics folder outlived the relay"


async def test_redis_killed_mid_stream(two_workers: tuple[RelayProcess, RelayProcess],
                                       redis_server: RedisServer) -> None:
    a, b = two_workers
    va, _ = await connected_viewer(a.url, token("my-instance"), "my-instance")
    vb, _ = await connected_viewer(b.url, token("my-instance"), "my-instance")
    try:
        await post(f"{a.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T1))
        accepted = [await va.next_update(), await vb.next_update()]
        assert accepted[0]["seq"] == accepted[1]["seq"]

        redis_server.kill()
        # Viewers are told, from the state they had, that updates are paused.
        for viewer in (va, vb):
            paused = await viewer.update_where(lambda s: not s["upstream"]["ok"])
            assert "Redis" in paused["upstream"]["detail"] and paused["seq"] == accepted[0]["seq"]
        # Webhooks are refused with 503 so the gateway retries; nothing is accepted and lost.
        opened = evolution_event("webhook-connection-update-open", date_time=T2)
        status, body = await post(f"{b.url}/webhooks/evolution", opened)
        assert status == 503 and body["error"] in ("store_unavailable", "busy")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{a.url}/readyz") as resp:
                assert resp.status == 503
            async with session.get(f"{a.url}/metrics") as resp:
                assert "relay_listener_up 0.0" in await resp.text()

        redis_server.start()  # same port, empty: the workers put back what they knew
        for viewer in (va, vb):
            back = await viewer.update_where(lambda s: s["upstream"]["ok"], timeout=20)
            assert back["qr"] is not None and back["qr"]["code"] == accepted[0]["qr"]["code"]
        # The gateway's retry lands, and every worker delivers again.
        assert (await post(f"{b.url}/webhooks/evolution", opened))[0] == 200
        for viewer in (va, vb):
            assert (await viewer.update_where(lambda s: s["state"] == "open"))["qr"] is None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{a.url}/readyz") as resp:
                assert resp.status == 200
    finally:
        await va.close()
        await vb.close()


async def test_polling_is_refused_with_redis(two_workers: tuple[RelayProcess, RelayProcess]) -> None:
    a, _ = two_workers
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/socket.io/?EIO=4&transport=polling") as resp:
            assert resp.status == 400  # websocket only: no session can be split between workers


async def test_viewers_who_join_a_watched_instance_need_no_store_read(redis_server: RedisServer) -> None:
    """A reconnect storm must not read Redis once per viewer: while the channel of an instance is
    confirmed and unbroken, the worker's last snapshot of it is current. After a gap in the
    channel, the next viewer is answered from a read again until the resync."""
    from tests.support.relay import running_relay

    async with running_relay(redis_url=redis_server.url) as relay:
        records = relay.rt.records
        reads: list[str] = []
        read = records.get

        async def counted(instance: str) -> Any:
            reads.append(instance)
            return await read(instance)
        records.get = counted  # type: ignore[method-assign]
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T1))
        first, [ack1] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
        assert reads == ["my-instance"]
        second, [ack2] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
        assert reads == ["my-instance"] and ack2["snapshot"] == ack1["snapshot"]
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-connection-update-open", date_time=T2))
        opened = await first.update_where(lambda s: s["state"] == "open")
        third, [ack3] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
        assert reads == ["my-instance"] and ack3["snapshot"]["seq"] == opened["seq"]
        # A gap: the listener's connection is cut. Viewers are told; joiners read the store.
        with redis.Redis(port=redis_server.port) as client:
            client.client_kill_filter(_type="pubsub")
        await first.update_where(lambda s: not s["upstream"]["ok"])
        await first.update_where(lambda s: s["upstream"]["ok"])  # resynced (one read)
        reads.clear()
        fourth, [ack4] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
        assert reads == [] and ack4["snapshot"]["state"] == "open"  # current again after the resync
        for viewer in (first, second, third, fourth):
            await viewer.close()
