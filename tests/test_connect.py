"""Asking the gateway: a QR, or a pairing code for a phone number (both gateways, against their
emulators), what a page may offer (controls), and asking by itself when a viewer comes
(RELAY_AUTO_CONNECT=on-view)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.fakes import EvolutionEmulator, WPPConnectEmulator
from tests.support.clients import connected_viewer, token
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess, running_relay

NUMBER = "+55 (11) 99999-9999"


async def connect(url: str, instance: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body} if body is not None else {}
        async with session.post(f"{url}/v1/instances/{instance}/connect",
                                headers={"Authorization": f"Bearer {token(instance)}"}, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def evo() -> AsyncIterator[EvolutionEmulator]:
    emulator = EvolutionEmulator()
    emulator.qr_interval = 0.3
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def pairing(snap: dict[str, Any]) -> bool:
    return snap["qr"] is not None and bool(snap["qr"]["pairingCode"])


async def test_evolution_pairing_code_even_while_a_qr_is_showing(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                             evolution_socket="global") as relay:
        evo.websocket_global = True
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        viewer, [ack] = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            assert ack["controls"] == {"connect": True, "phone": True}
            assert (await connect(relay.url, "shop"))[0] == 202
            qr = await viewer.update_where(lambda s: s["qr"] is not None)
            assert qr["qr"]["pairingCode"] is None
            # While connecting, Evolution ignores ?number= (protocols §4.3): the relay ends that
            # pairing and starts one with the number.
            status, _ = await connect(relay.url, "shop", {"number": NUMBER})
            assert status == 202
            code = await viewer.update_where(pairing)
            assert len(code["qr"]["pairingCode"]) == 8 and code["state"] == "connecting"
            asked = [r.query.get("number") for r in evo.requests if r.path == "/instance/connect/shop"]
            assert asked[-1] == "5511999999999"
            # And back: a plain request while the phone pairing runs brings a QR without a code.
            assert (await connect(relay.url, "shop"))[0] == 202
            back = await viewer.update_where(lambda s: s["qr"] is not None and not s["qr"]["pairingCode"])
            assert back["qr"]["code"]
        finally:
            await viewer.close()


async def test_wppconnect_pairing_code_while_a_qr_is_showing() -> None:
    wpp = WPPConnectEmulator()
    wpp.qr_interval = 0.3
    await wpp.start()
    try:
        async with running_relay(wppconnect_url=wpp.url, wppconnect_secret_key=wpp.secret_key) as relay:
            wpp.set_webhook(f"{relay.url}/webhooks/wppconnect")
            viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
            try:
                assert (await connect(relay.url, "shop"))[0] == 202
                await viewer.update_where(lambda s: s["qr"] is not None and s["qr"]["code"] is not None)
                assert (await connect(relay.url, "shop", {"number": "5511999999999"}))[0] == 202
                code = await viewer.update_where(pairing)
                assert code["qr"]["pairingCode"].count("-") == 1 and code["state"] == "connecting"
                starts = [r for r in wpp.requests if r.path == "/api/shop/start-session"]
                assert len(starts) == 2
                assert any(r.path == "/api/shop/close-session" for r in wpp.requests)  # QR phase ended
                # And back to a QR: the stored config holds the phone, so not an empty body.
                assert (await connect(relay.url, "shop"))[0] == 202
                await viewer.update_where(lambda s: s["qr"] is not None and s["qr"]["code"] is not None
                                          and not s["qr"]["pairingCode"])
            finally:
                await viewer.close()
    finally:
        await wpp.stop()


@pytest.mark.parametrize("body, raw", [
    ({"number": "55 11 9999"}, None), ({"number": "5511abc99999"}, None), ({"number": 5511999999999}, None),
    ({"number": "0011999999999"}, None), (None, b"{not json"), (None, b"x" * 5000),
])
async def test_a_malformed_number_is_a_clear_400(evo: EvolutionEmulator, body: Any, raw: bytes | None) -> None:
    evo.add_instance("shop")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey) as relay:
        status, answer = await connect(relay.url, "shop", body, raw)
    assert status == 400 and answer["error"] == "bad_number"
    assert "country code" in answer["detail"] or "JSON" in answer["detail"] or "at most" in answer["detail"]
    assert not any(r.path.startswith("/instance/connect") for r in evo.requests)  # nothing was asked


async def test_no_gateway_no_controls() -> None:
    async with running_relay() as relay:
        viewer, [ack] = await connected_viewer(relay.url, token("shop"), "shop")
        await viewer.close()
    assert ack["controls"] == {"connect": False, "phone": False}


async def test_auto_connect_on_view_once_per_wait_and_never_for_removed(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop")
    evo.add_instance("gone")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                             auto_connect="on-view", qr_wait=30) as relay:
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        # "gone" is removed: viewing it must not start anything.
        removed = {"event": "remove.instance", "instance": "gone", "data": None,
                   "date_time": "2026-12-01T21:17:35.311Z"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{relay.url}/webhooks/evolution", json=removed) as resp:
                assert resp.status == 200
        viewers = []
        try:
            for _ in range(3):  # three viewers of shop, one of gone
                viewers.append((await connected_viewer(relay.url, token("shop"), "shop"))[0])
            viewers.append((await connected_viewer(relay.url, token("gone"), "gone"))[0])
            await viewers[0].update_where(lambda s: s["qr"] is not None)  # asked by itself
            await asyncio.sleep(0.5)
        finally:
            for viewer in viewers:
                await viewer.close()
    connects = [r.path for r in evo.requests if r.path.startswith("/instance/connect/")]
    assert connects == ["/instance/connect/shop"]  # once, for three viewers; never for "gone"


async def test_auto_connect_once_across_workers(evo: EvolutionEmulator, redis_server: RedisServer) -> None:
    evo.add_instance("shop")
    env = {"RELAY_REDIS_URL": redis_server.url, "RELAY_EVOLUTION_URL": evo.url,
           "RELAY_EVOLUTION_APIKEY": evo.apikey, "RELAY_AUTO_CONNECT": "on-view"}
    workers = [RelayProcess(env), RelayProcess(env)]
    for w in workers:
        w.start()
    viewers = []
    try:
        evo.set_webhook(f"{workers[0].url}/webhooks/evolution")
        for w in workers * 2:
            viewers.append((await connected_viewer(w.url, token("shop"), "shop"))[0])
        for viewer in viewers:
            await viewer.update_where(lambda s: s["qr"] is not None)
    finally:
        for viewer in viewers:
            await viewer.close()
        for w in workers:
            w.stop()
    assert [r.path for r in evo.requests if r.path.startswith("/instance/connect/")] == [
        "/instance/connect/shop"]


async def test_viewers_who_came_after_the_last_update_hear_of_a_gateway_outage(evo: EvolutionEmulator) -> None:
    evo.add_instance("shop")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                             probe_interval=0.2) as relay:
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        assert (await connect(relay.url, "shop"))[0] == 202
        await asyncio.sleep(0.5)  # the QR is stored before anyone watches
        viewer, [ack] = await connected_viewer(relay.url, token("shop"), "shop")
        try:
            assert ack["snapshot"]["qr"] is not None and ack["snapshot"]["upstream"]["ok"]
            port = evo.port
            await evo.stop()
            down = await viewer.update_where(lambda s: s["upstream"]["ok"] is False)
            assert down["qr"] == ack["snapshot"]["qr"]  # told, from what it was shown
            await evo.start(port)
            await viewer.update_where(lambda s: s["upstream"]["ok"] is True)
        finally:
            await viewer.close()
