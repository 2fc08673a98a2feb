"""The relay following an emulated Evolution API v2: its Socket.IO stream with no webhook at all
(both modes), REST control, gateway failures shown to viewers, and one socket holder across
workers."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis

from relay.fakes import EvolutionEmulator
from tests.support.clients import connected_viewer, post, token
from tests.support.fixtures import evolution_event
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess, RelayServer, running_relay

FAST = {"probe_interval": 0.3, "gateway_timeout": 2.0}


@pytest.fixture
async def evo() -> AsyncIterator[EvolutionEmulator]:
    emulator = EvolutionEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def following(evo: EvolutionEmulator, mode: str, **more: Any) -> Any:
    return running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey, evolution_socket=mode,
                         **FAST, **more)


async def test_follows_global_socket_without_any_webhook(evo: EvolutionEmulator) -> None:
    evo.websocket_global = True
    evo.add_instance("shop")
    async with following(evo, "global") as relay:
        viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            await _until_following(evo)
            sent = await evo.emit_qr("shop")
            got = await viewer.update_where(lambda s: s["qr"] is not None)
            assert got["qr"]["code"] == sent["data"]["qrcode"]["code"]
            assert got["cause"] == "qrcode.updated"
            await evo.scan("shop")
            opened = await viewer.update_where(lambda s: s["state"] == "open")
            assert opened["qr"] is None and opened["profile"]["name"] == "Example Name"
            assert evo.deliveries == []  # no webhook was involved
        finally:
            await viewer.close()


async def test_follows_instance_namespaces_and_resyncs_missed_qr(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop")
    async with following(evo, "instances") as relay:
        viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            # Before the first emit the namespace doesn't exist ("Invalid namespace"): the relay
            # keeps trying. This first QR goes out while nobody listens on /shop...
            first = await evo.emit_qr("shop")
            # ...so the relay gets it by resyncing over REST once the namespace connects.
            got = await viewer.update_where(lambda s: s["qr"] is not None, timeout=20)
            assert got["qr"]["code"] == first["data"]["qrcode"]["code"]
            await _until_following(evo, "/shop")
            second = await evo.emit_qr("shop")
            got = await viewer.update_where(lambda s: s["qr"] and s["qr"]["code"] == second["data"]["qrcode"]["code"])
            assert got["cause"] == "qrcode.updated"
            assert any(r.path == "/instance/connectionState/shop" for r in evo.requests)
        finally:
            await viewer.close()


async def test_same_qr_by_socket_and_webhook_is_one_update(evo: EvolutionEmulator) -> None:
    evo.websocket_global = True
    evo.add_instance("shop")
    async with following(evo, "global") as relay:
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            await _until_following(evo)
            await evo.emit_qr("shop")
            await evo.drain()
            await viewer.update_where(lambda s: s["qr"] is not None)
            assert evo.deliveries and evo.deliveries[0][0] == 200
            await evo.scan("shop")
            await evo.drain()
            nxt = await viewer.next_update()
            assert nxt["qr"] is None, "the second copy of the QR made no update"
        finally:
            await viewer.close()


async def test_gateway_restart_reconnects_resyncs_and_viewers_keep_getting_qrs(evo: EvolutionEmulator) -> None:
    evo.websocket_global = True
    evo.add_instance("shop")
    async with following(evo, "global") as relay:
        viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            await _until_following(evo)
            await evo.emit_qr("shop")
            await viewer.update_where(lambda s: s["qr"] is not None)
            port = evo.port
            await evo.stop()
            down = await viewer.update_where(lambda s: not s["upstream"]["ok"])
            assert "Evolution" in down["upstream"]["detail"]
            await evo.start(port)
            back = await viewer.update_where(lambda s: s["upstream"]["ok"], timeout=20)
            assert back["upstream"]["detail"] is None
            await _until_following(evo)
            sent = await evo.emit_qr("shop")
            got = await viewer.update_where(
                lambda s: s["qr"] is not None and s["qr"]["code"] == sent["data"]["qrcode"]["code"])
            assert got["upstream"]["ok"] is True
        finally:
            await viewer.close()


async def test_connect_over_rest_and_gateway_failures(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop")
    async with following(evo, "off") as relay:
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        tok = token("shop")
        viewer, _ = await connected_viewer(relay.url, tok, "shop")
        try:
            status, snap = await _connect(relay, "shop", tok)
            assert status == 202 and snap["instance"] == "shop"  # {"count":0} is normal, not an error
            got = await viewer.update_where(lambda s: s["qr"] is not None)  # the QR comes as an event
            assert got["state"] == "connecting"

            status, body = await _connect(relay, "ghost", token("ghost"))
            assert status == 404 and body == {"error": "instance_not_found",
                                              "detail": 'The "ghost" instance does not exist'}

            evo.fail_with = (200, {"error": True, "message": "[object Object]"})
            status, body = await _connect(relay, "shop", tok)
            assert status == 502 and body["error"] == "gateway_error"
            evo.fail_with = (401, {"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}})
            status, body = await _connect(relay, "shop", tok)
            assert status == 502 and "RELAY_EVOLUTION_APIKEY" in body["detail"]
            evo.fail_with = None
            evo.hang = True
            status, body = await _connect(relay, "shop", tok)
            assert status == 504 and body["error"] == "gateway_timeout"
            evo.hang = False

            port = evo.port
            await evo.stop()
            status, body = await _connect(relay, "shop", tok)
            assert status == 502 and body["error"] == "gateway_unreachable"
            down = await viewer.update_where(lambda s: s["upstream"]["detail"] and "cannot reach" in s["upstream"]["detail"])
            assert down["upstream"] == {"name": "evolution", "ok": False, "detail": body["detail"]}
            async with aiohttp.ClientSession() as session, session.get(f"{relay.url}/readyz") as resp:
                ready = await resp.json()
                assert resp.status == 200  # the relay itself is fine; it reports the gateway
                assert ready["checks"]["gateways"][0]["ok"] is False
            await evo.start(port)
            back = await viewer.update_where(lambda s: s["upstream"]["ok"], timeout=20)
            assert back["upstream"]["detail"] is None
        finally:
            await viewer.close()


async def test_logout_needs_the_admin_key(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop", state="open")
    async with following(evo, "off", admin_key="admin-key-0123456789") as relay:
        url = f"{relay.url}/v1/instances/shop/logout"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, headers={"Authorization": f"Bearer {token('shop')}"}) as resp:
                assert resp.status == 401
            async with session.post(url, headers={"Authorization": "Bearer admin-key-0123456789"}) as resp:
                assert resp.status == 202
            async with session.post(url, headers={"Authorization": "Bearer admin-key-0123456789"}) as resp:
                body = await resp.json()
                assert resp.status == 502 and "not connected" in body["detail"]
        assert [r.method for r in evo.requests if r.path == "/instance/logout/shop"] == ["DELETE", "DELETE"]


async def test_one_socket_holder_and_takeover(evo: EvolutionEmulator, redis_server: RedisServer) -> None:
    evo.websocket_global = True
    evo.add_instance("shop")
    env = {"RELAY_REDIS_URL": redis_server.url, "RELAY_EVOLUTION_URL": evo.url,
           "RELAY_EVOLUTION_APIKEY": evo.apikey, "RELAY_EVOLUTION_SOCKET": "global",
           "RELAY_GATEWAY_PROBE_INTERVAL": "0.5"}
    workers = [RelayProcess(env), RelayProcess(env)]
    for w in workers:
        w.start()
    viewers = []
    try:
        await _until_following(evo)
        await asyncio.sleep(1.0)  # both workers compete for the lease meanwhile
        assert _socket_clients(evo) == 1, "only one worker follows the gateway"
        holder_pid = int(redis.Redis(port=redis_server.port).get("relay:lease:evolution").decode().split(":")[1])
        holder = next(w for w in workers if w.proc is not None and w.proc.pid == holder_pid)
        survivor = next(w for w in workers if w is not holder)
        viewer, _ = await connected_viewer(survivor.url, token("shop"), "shop")
        viewers.append(viewer)
        holder.kill(signal.SIGKILL)  # no clean release: the lease must expire
        for _ in range(200):
            if _socket_clients(evo) == 0:
                break
            await asyncio.sleep(0.05)
        await _until_following(evo, timeout=20)  # the survivor took over
        sent = await evo.emit_qr("shop")
        got = await viewer.update_where(lambda s: s["qr"] and s["qr"]["code"] == sent["data"]["qrcode"]["code"])
        assert got["state"] == "connecting"
    finally:
        for viewer in viewers:
            await viewer.close()
        for w in workers:
            w.stop()


def _socket_clients(evo: EvolutionEmulator, namespace: str = "/") -> int:
    rooms = evo.sio.manager.rooms.get(namespace, {})
    return len(rooms.get(None, {}))


async def _until_following(evo: EvolutionEmulator, namespace: str = "/", timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.05)):
        if _socket_clients(evo, namespace):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the relay never connected to {namespace}")


async def _connect(relay: RelayServer, instance: str, tok: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{relay.url}/v1/instances/{instance}/connect",
                                headers={"Authorization": f"Bearer {tok}"}) as resp:
            return resp.status, await resp.json()
