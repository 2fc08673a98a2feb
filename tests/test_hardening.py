"""Hardening (issue 9): each finding's reproduction, kept as a test. Rows that need Redis faults
are in tests/test_faults.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis
import websockets

from relay.fakes import EvolutionEmulator
from relay.gateways import evolution
from relay.state.memory import MemoryBroker, MemoryRecords
from tests.support.clients import connected_viewer, post, token
from tests.support.fixtures import evolution_event
from tests.support.rawsio import WS_PATH, handshake
from tests.support.redis import RedisServer
from tests.support.relay import SECRET, RelayProcess, running_relay


async def raw_socket(url: str, tok: str) -> Any:
    ws = await websockets.connect(url.replace("http", "ws") + WS_PATH, compression=None, max_size=None)
    assert (await ws.recv()).startswith("0")
    await ws.send("40" + json.dumps({"token": tok}))
    assert (await ws.recv()).startswith("40")
    return ws


async def test_2_a_bad_name_never_deafens_a_worker(redis_server: RedisServer) -> None:
    """Lone-surrogate names are refused at subscribe, so a pub/sub reconnect re-subscribes fine."""
    workers = [RelayProcess({"RELAY_REDIS_URL": redis_server.url}) for _ in range(2)]
    for w in workers:
        w.start()
    viewers, raws = [], []
    try:
        for i in range(10):
            viewers.append((await connected_viewer(workers[i % 2].url, token("shop"), "shop"))[0])
        for i in range(6):
            ws = await raw_socket(workers[i % 2].url, token("*"))
            raws.append(ws)
            await ws.send("420" + json.dumps(["subscribe", {"instance": "\ud800"}]))
            ack = json.loads((await ws.recv())[3:])[0]
            assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        with redis.Redis(port=redis_server.port) as client:
            client.client_kill_filter(_type="pubsub")
        for n in range(8):
            body = evolution_event("webhook-qrcode-updated", instance="shop", code=f"2@n{n},a,b,c",
                                   date_time=f"2025-10-21T11:40:{n + 10}.000Z")
            for _ in range(50):  # while the listeners re-subscribe, a webhook may land unseen:
                status, _ = await post(f"{workers[n % 2].url}/webhooks/evolution", body)
                if status == 200:  # the final state is what every viewer must reach
                    break
                await asyncio.sleep(0.1)
        for viewer in viewers:
            await viewer.update_where(lambda s: s["qr"] is not None and s["qr"]["code"] == "2@n7,a,b,c")
        async with aiohttp.ClientSession() as session:
            for w in workers:
                async with session.get(f"{w.url}/readyz") as resp:
                    assert resp.status == 200
    finally:
        for viewer in viewers:
            await viewer.close()
        for ws in raws:
            await ws.close()
        for w in workers:
            w.stop()


async def test_3_one_instance_error_stays_with_that_instance() -> None:
    evo = EvolutionEmulator()
    evo.connect_errors["bad"] = "Evolution could not start instance bad"
    await evo.start()
    try:
        for n in range(300):
            evo.add_instance(f"tenant-{n}")
        evo.add_instance("bad")
        async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                                 probe_interval=0.2) as relay:
            for n in range(300):  # the relay knows them all
                await post(f"{relay.url}/webhooks/evolution",
                           evolution_event("webhook-connection-update-close", instance=f"tenant-{n}"))
            other, _ = await connected_viewer(relay.url, token("tenant-7"), "tenant-7")
            try:
                before = len(evo.requests)
                async with aiohttp.ClientSession() as session:
                    async with session.post(f"{relay.url}/v1/instances/bad/connect",
                                            headers={"Authorization": f"Bearer {token('bad')}"}) as resp:
                        assert resp.status == 502
                        assert (await resp.json())["detail"] == "Evolution could not start instance bad"
                await asyncio.sleep(1.0)  # several probes: the gateway is fine
                assert other.drain() == []  # another tenant saw nothing
                calls = [r.path for r in evo.requests[before:] if not r.path.startswith("/instance/fetch")]
                assert calls == ["/instance/connect/bad"]  # one call, no resync of everyone
            finally:
                await other.close()
    finally:
        await evo.stop()


async def test_3_connect_is_rate_limited_per_token_and_per_instance() -> None:
    """A page (or a script) asking again and again: the same request for an unchanged instance
    reaches the gateway once per few seconds whoever asks, and one token gets at most 10 a
    minute (then 429 with Retry-After); the admin key is not limited."""
    evo = EvolutionEmulator()
    await evo.start()
    try:
        for name in ("shop", "other"):
            evo.add_instance(name)
        async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                                 admin_key="admin-key-0123456789") as relay:
            async def connect(instance: str, auth: str) -> tuple[int, Any]:
                async with aiohttp.ClientSession() as session:
                    async with session.post(f"{relay.url}/v1/instances/{instance}/connect",
                                            headers={"Authorization": f"Bearer {auth}"}) as resp:
                        return resp.status, (await resp.json(), resp.headers.get("Retry-After"))

            asked = lambda: len([r for r in evo.requests if r.path == "/instance/connect/shop"])  # noqa: E731
            # Two pages ask for a QR within a few seconds: one request reaches the gateway.
            assert (await connect("shop", token("shop")))[0] == 202
            assert (await connect("shop", token("shop", "x")))[0] == 202
            assert asked() == 1
            # A gateway error is not swallowed by that: the next try reaches the gateway again.
            evo.connect_errors["other"] = "Evolution could not start instance other"
            assert [(await connect("other", token("other")))[0] for _ in range(2)] == [502, 502]
            del evo.connect_errors["other"]
            page = token("shop", "other")
            answers = [await connect("other", page) for _ in range(11)]
            assert [a[0] for a in answers] == [202] * 10 + [429]
            body, retry = answers[-1][1]
            assert body["error"] == "rate_limited" and 1 <= int(retry) <= 60
            admin = [await connect("other", "admin-key-0123456789") for _ in range(12)]
            assert [a[0] for a in admin] == [202] * 12
    finally:
        await evo.stop()


def _limit_files(n: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


async def _healthz(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status


async def test_4_a_header_flood_is_cut_and_health_stays_up() -> None:
    relay = RelayProcess({})
    relay.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        chunk = b"a" * 65536
        sent, answer = 0, b""
        with contextlib.suppress(ConnectionError):
            while sent < 200 * 1024 * 1024:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                if sent % (1024 * 1024) == 0:
                    assert await _healthz(relay.url) == 200  # others are served meanwhile
                with contextlib.suppress(asyncio.TimeoutError):
                    answer += await asyncio.wait_for(reader.read(1024), 0.001)
                if answer:
                    break
        assert answer.startswith(b"HTTP/1.1 431") or sent < 1024 * 1024, answer
        assert sent <= 2 * 1024 * 1024, "the flood went on long after the limit"
        writer.close()
        assert await _healthz(relay.url) == 200
        assert "headers passed 32 KB" in relay.output()
    finally:
        relay.stop()


async def test_6_slowloris_cannot_starve_a_relay() -> None:
    relay = RelayProcess({"RELAY_HEADER_TIMEOUT": "2"})
    relay.preexec = _limit_files(256)  # in its own process: the limit applies to it only
    relay.start()
    half_open: list[socket.socket] = []
    try:
        for _ in range(400):  # more than the relay can hold open
            s = socket.create_connection(("127.0.0.1", relay.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never finish the headers
            half_open.append(s)
        for _ in range(20):  # every new request is still served (evicting a half-open one)
            assert await _healthz(relay.url) == 200
        await asyncio.sleep(2.5)  # the header time limit closes the rest
        closed = 0
        for s in half_open:
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                closed += 1
        assert closed == len(half_open)
        text = relay.output()
        assert "closed a connection that did not send its request headers within 2 s" in text
    finally:
        for s in half_open:
            s.close()
        relay.stop()


async def test_6_websockets_that_never_connect_cannot_fill_the_cap() -> None:
    """Websockets without a token are evicted at the cap like half-open requests (oldest
    first), so a page with a token and /healthz still get in."""
    relay = RelayProcess({})
    relay.preexec = _limit_files(256)
    relay.start()
    squatters: list[Any] = []
    try:
        url = relay.url.replace("http", "ws") + WS_PATH
        for _ in range(400):  # more than the relay can hold open
            try:
                ws = await websockets.connect(url, compression=None, open_timeout=5)
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
                continue  # refused or evicted while opening: fine
            squatters.append(ws)
        for _ in range(10):
            assert await _healthz(relay.url) == 200
        viewer = await raw_socket(relay.url, token("shop"))  # a real viewer gets in
        await viewer.close()
        assert "at the connection cap: closed the oldest connection" in relay.output()
    finally:
        for ws in squatters:
            await ws.close()
        relay.stop()


async def test_7_sessions_end_with_their_token() -> None:
    async with running_relay() as relay:
        short = token("shop", ttl=2)
        viewer, [ack] = await connected_viewer(relay.url, short, "shop")
        assert ack["ok"] is True
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{relay.url}/v1/instances/shop/events?token={short}") as resp:
                assert resp.status == 200
                deadline = time.monotonic() + 10
                text = ""
                while "event: expired" not in text and time.monotonic() < deadline:
                    text += (await resp.content.readany()).decode()
                assert "event: expired" in text  # the stream ended at the token's expiry
        for _ in range(50):
            if not viewer.sio.connected:
                break
            await asyncio.sleep(0.1)
        assert not viewer.sio.connected  # the Socket.IO session was ended too
        await viewer.close()


async def test_7_not_one_update_after_the_token_expired() -> None:
    """The sweep ends sessions once a second; delivery itself checks expiry, so no update posted
    after ``exp`` reaches a websocket viewer (webhooks every 0.1 s across the expiry)."""
    async with running_relay() as relay:
        exp = int(time.time()) + 2
        short = jwt_token(exp)
        ws = await raw_socket(relay.url, short)
        await ws.send('420["subscribe",{"instance":"shop"}]')
        assert (await ws.recv()).startswith("430")
        received_after: list[float] = []

        async def read() -> None:
            async for message in ws:
                if isinstance(message, str) and message.startswith('42["update"') \
                        and time.time() > exp + 0.05:
                    received_after.append(time.time())
        reading = asyncio.create_task(read())
        n = 0
        while time.time() < exp + 1.5:
            n += 1
            body = evolution_event("webhook-qrcode-updated", instance="shop", code=f"2@q{n}")
            await post(f"{relay.url}/webhooks/evolution", body)
            await asyncio.sleep(0.1)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        assert received_after == []


def jwt_token(exp: int) -> str:
    import jwt as pyjwt
    return pyjwt.encode({"instances": ["shop"], "exp": exp}, SECRET, algorithm="HS256")


async def test_9_no_token_or_secret_in_logs() -> None:
    hook_secret = "hook-secret-0123456789"
    relay = RelayProcess({"RELAY_LOG_LEVEL": "info", "RELAY_WEBHOOK_SECRET": hook_secret})
    relay.start()
    try:
        jwt = token("shop")
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}{WS_PATH}&token={jwt}") as ws:
            await handshake(ws, jwt, "shop")
        # A websocket to another path is uvicorn's to answer (403), and to log: with its query.
        with contextlib.suppress(websockets.InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{relay.port}/elsewhere?token={jwt}"):
                pass
        assert (await post(f"{relay.url}/webhooks/evolution/{hook_secret}",
                           evolution_event("webhook-qrcode-updated")))[0] == 200
        await asyncio.sleep(0.3)
        text = relay.output(chars=10**6)
        assert "WebSocket /elsewhere?[redacted]" in text  # the line is there, without its query
        assert jwt not in text and hook_secret not in text and SECRET not in text
    finally:
        relay.stop()


async def test_11_malformed_frames_do_not_flood_the_log() -> None:
    relay = RelayProcess({})
    relay.start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}{WS_PATH}", max_size=None) as ws:
            await ws.recv()
            deep = "40" + "[" * 30000 + "]" * 30000
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(300):
                    await ws.send(deep)
        await asyncio.sleep(0.5)
        assert len(relay.output(chars=10**7)) < 20_000, "a log line (or traceback) per frame"
        assert await _healthz(relay.url) == 200
    finally:
        relay.stop()


async def test_14_sockets_that_never_connect_are_closed() -> None:
    async with running_relay() as relay:
        relay.app.front.connect_within = 1.0
        sockets = []
        for _ in range(50):
            ws = await websockets.connect(relay.url.replace("http", "ws") + WS_PATH)
            assert (await ws.recv()).startswith("0")  # Engine.IO open, then nothing
            sockets.append(ws)
        healthy, _ = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            for ws in sockets:
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:  # answer pings like a live client would, until closed
                        msg = await asyncio.wait_for(ws.recv(), 5)
                        if msg == "2":
                            await ws.send("3")
                assert ws.close_code is not None
            assert healthy.sio.connected  # a viewer with a token stays
        finally:
            await healthy.close()


@pytest.fixture
async def locked() -> AsyncIterator[Any]:
    async with running_relay(webhook_secret="hook-secret-0123456789") as relay:
        yield relay


async def test_15_smaller_findings(locked: Any) -> None:
    import jwt as pyjwt

    secret = "hook-secret-0123456789"
    body = evolution_event("webhook-qrcode-updated")
    forever = pyjwt.encode({"app": "evolution"}, secret, algorithm="HS256")  # no exp
    assert (await post(f"{locked.url}/webhooks/evolution", body,
                       headers={"Authorization": f"Bearer {forever}"}))[0] == 401
    star = evolution_event("webhook-qrcode-updated", instance="*")
    status, answer = await post(f"{locked.url}/webhooks/evolution/{secret}", star)
    assert status == 400 and "instance" in answer["detail"]
    async with aiohttp.ClientSession() as session:
        long = "x" * 60_000
        async with session.get(f"{locked.url}/v1/instances/{long}/events?token={token('*')}") as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad_instance"
    viewer, acks = await connected_viewer(locked.url, token("*"), *[f"i{n}" for n in range(65)])
    await viewer.close()
    assert all(a["ok"] for a in acks[:64]) and acks[64]["error"]["code"] == "too_many"


async def test_8_state_is_bounded(redis_server: RedisServer) -> None:
    """Names pile up no more: every record expires after its last write (RELAY_RECORD_TTL), in
    memory past RELAY_MAX_INSTANCES the least recently updated one goes, and each worker's cache
    of records is bounded in bytes as well as count (900 KB images are no longer kept at all; a
    250 KB one without a code still is, up to the budget)."""
    async with running_relay(redis_url=redis_server.url, record_ttl=3600.0) as relay:
        recent = relay.rt.records.recent  # type: ignore[attr-defined]
        recent.max_bytes = 2 * 1024 * 1024
        for n in range(40):
            body = {"event": "qrcode", "session": f"big-{n}", "qrcode": "data:image/png;base64,"
                    + "A" * 250_000}
            assert (await post(f"{relay.url}/webhooks/wppconnect", body))[0] == 200
        assert recent.bytes <= recent.max_bytes and 0 < len(recent) < 10
        with redis.Redis(port=redis_server.port) as client:
            keys = [k for k in client.scan_iter("relay:inst:*")]
            assert len(keys) == 40
            assert all(3500_000 < client.pttl(k) <= 3600_000 for k in keys)
    async with running_relay(max_instances=50) as relay:
        for n in range(80):
            assert (await post(f"{relay.url}/webhooks/evolution", evolution_event(
                "webhook-connection-update-open", instance=f"shop-{n}")))[0] == 200
        kept = await relay.rt.records.instances()
        assert len(kept) == 50 and kept[0] == "shop-30" and kept[-1] == "shop-79"
    # And a record expires after its last write (a tiny TTL here; at least an hour in settings).
    records = MemoryRecords(MemoryBroker(), qr_ttl=45, qr_wait=30, record_ttl=0.05)
    event = evolution.parse(evolution_event("webhook-connection-update-open", instance="old"))
    assert event is not None and await records.apply(event) is not None
    assert await records.get("old") is not None
    await asyncio.sleep(0.1)
    assert await records.get("old") is None and await records.instances() == []
