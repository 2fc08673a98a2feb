"""Tests of the gateway emulators themselves: shapes equal the shared fixtures, quirks are faithful."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from aiohttp import web
from multidict import CIMultiDict

from relay.fakes import EvolutionEmulator, WPPConnectEmulator, templates
from tests.support.fixtures import fixture as load

KEY = "EVO-GLOBAL-KEY"
NAME = "my-instance"
TIMEOUT = 5.0


def keys(obj: dict[str, Any]) -> list[str]:
    return list(obj.keys())


async def get(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


class Sink:
    """A tiny webhook receiver: every POST lands in ``queue`` as (path, headers, json)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, CIMultiDict[str], Any]] = asyncio.Queue()
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.queue.put_nowait((request.path_qs, request.headers.copy(), await request.json()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    app = web.Application()
    app.router.add_post("/{tail:.*}", s.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    s.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield s
    await runner.cleanup()


@pytest.fixture
async def evo() -> AsyncIterator[EvolutionEmulator]:
    emu = EvolutionEmulator()
    emu.add_instance(NAME, token="A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D")
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def socket_client(url: str, namespace: str, events: list[str],
                        headers: dict[str, str] | None = None) -> tuple[socketio.AsyncClient, asyncio.Queue[Any]]:
    """Connected client whose listed events land in a queue as (event, payload)."""
    client = socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.2)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for event in events:
        client.on(event, (lambda e: lambda data: queue.put_nowait((e, data)))(event), namespace=namespace)
    await client.connect(url, namespaces=[namespace], headers=headers or {}, transports=["websocket"], wait_timeout=3)
    return client, queue


async def bodies(sink: "Sink", n: int) -> list[Any]:
    """The next ``n`` webhook bodies. Deliveries are concurrent, so callers must not rely on order."""
    return [(await get(sink.queue))[2] for _ in range(n)]


async def rest(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


# ----- templates -----------------------------------------------------------------------------------
def test_templates_are_the_shared_fixtures_and_fresh_copies() -> None:
    for kind, names in templates.NAMES.items():
        for name in names:
            # Same keys in the same order, same values: the fakes speak the fixtures exactly.
            assert json.dumps(templates.load(kind, name)) == json.dumps(load(kind, name)), (
                f"{kind}/{name} differs: run python -m relay.fakes.templates ../shared/fixtures")
    first = templates.load("evolution", "webhook-qrcode-updated")
    first["data"]["qrcode"]["code"] = "changed"
    assert templates.load("evolution", "webhook-qrcode-updated.json")["data"]["qrcode"]["code"] != "changed"


# ----- Evolution REST ----------------------------------------------------------------------------
async def test_evolution_rest_shapes_equal_fixtures(evo: EvolutionEmulator, http: aiohttp.ClientSession) -> None:
    h = {"apikey": KEY}
    for state in ("close", "connecting", "open"):
        evo.instances[NAME].state = state
        status, body = await rest(http, "GET", f"{evo.url}/instance/connectionState/{NAME}", headers=h)
        assert (status, body) == (200, load("evolution", f"rest-instance-connection-state-200-{state}"))
    assert await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}", headers=h) == (
        200, load("evolution", "rest-instance-connect-200-already-open"))
    evo.instances[NAME].state = "close"
    assert await rest(http, "DELETE", f"{evo.url}/instance/logout/{NAME}", headers=h) == (
        400, load("evolution", "rest-instance-logout-400-not-connected"))
    # guard order: unknown instance is 404 even without a key; a bad key on a known one is 401
    missing = load("evolution", "rest-error-404-instance-not-found")
    missing["response"]["message"] = ['The "ghost" instance does not exist']
    assert await rest(http, "GET", f"{evo.url}/instance/connect/ghost") == (404, missing)
    assert await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}", headers={"apikey": "nope"}) == (
        401, load("evolution", "rest-error-401-unauthorized"))
    # the instance token works for routes with the instance in the path
    status, _ = await rest(http, "GET", f"{evo.url}/instance/connectionState/{NAME}",
                           headers={"apikey": evo.instances[NAME].token})
    assert status == 200
    status, rows = await rest(http, "GET", f"{evo.url}/instance/fetchInstances", headers=h)
    assert status == 200 and rows[0]["name"] == NAME and rows[0]["connectionStatus"] == "close"
    assert {"id", "ownerJid", "profileName", "profilePicUrl", "integration", "number", "token"} <= set(rows[0])
    assert [r.path for r in evo.requests][:2] == [f"/instance/connectionState/{NAME}"] * 2
    assert evo.requests[0].headers["apikey"] == KEY


async def test_evolution_connect_count0_then_qr(evo: EvolutionEmulator, http: aiohttp.ClientSession) -> None:
    evo.websocket_global = True
    client, queue = await socket_client(f"{evo.url}?apikey={KEY}", "/", ["qrcode.updated", "connection.update"])
    try:
        h = {"apikey": KEY}
        assert await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}", headers=h) == (
            200, load("evolution", "rest-instance-connect-200-count0"))
        event, connecting = await get(queue)
        assert (event, connecting["data"]["state"]) == ("connection.update", "connecting")
        event, qr_event = await get(queue)
        assert event == "qrcode.updated"
        status, qr = await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}", headers=h)
        assert keys(qr) == keys(load("evolution", "rest-instance-connect-200-qr"))
        assert qr["count"] == 1 and qr["code"] == qr_event["data"]["qrcode"]["code"]
        assert qr["code"].startswith("2@") and len(qr["code"].split(",")) == 4
        assert base64.b64decode(qr["base64"].removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        await client.disconnect()


async def test_evolution_fault_injection(evo: EvolutionEmulator, http: aiohttp.ClientSession) -> None:
    quirk = load("evolution", "rest-instance-restart-200-error-when-closed")
    evo.fail_with = (200, quirk)
    assert await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}", headers={"apikey": KEY}) == (200, quirk)
    evo.fail_with, evo.hang = None, True
    with pytest.raises(asyncio.TimeoutError):
        await rest(http, "GET", f"{evo.url}/instance/connectionState/{NAME}",
                   timeout=aiohttp.ClientTimeout(total=0.3))


async def test_evolution_logout_emits_close_and_logout(evo: EvolutionEmulator, http: aiohttp.ClientSession) -> None:
    await evo.scan(NAME)
    client, queue = await socket_client(f"{evo.url}?apikey={KEY}", f"/{NAME}",
                                        ["connection.update", "logout.instance", "status.instance"])
    try:
        assert await rest(http, "DELETE", f"{evo.url}/instance/logout/{NAME}", headers={"apikey": KEY}) == (
            200, load("evolution", "rest-instance-logout-200"))
        got = [await get(queue), await get(queue)]  # status.instance is not in the default event list
        assert [e for e, _ in got] == ["logout.instance", "connection.update"]
        assert keys(got[0][1]) == keys(load("evolution", "websocket-logout-instance"))
        assert got[1][1]["data"] == load("evolution", "websocket-connection-update-close")["data"] | {"instance": NAME}
        assert evo.instances[NAME].state == "close"
    finally:
        await client.disconnect()


# ----- Evolution Socket.IO -----------------------------------------------------------------------
async def test_evolution_invalid_namespace_until_first_emit(evo: EvolutionEmulator) -> None:
    errors: list[Any] = []
    client = socketio.AsyncClient(reconnection=False)
    client.on("connect_error", errors.append, namespace=f"/{NAME}")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(f"{evo.url}?apikey={KEY}", namespaces=[f"/{NAME}"], transports=["websocket"])
    assert errors == [{"message": "Invalid namespace"}]

    await evo.emit_connection(NAME, "connecting")
    client, queue = await socket_client(f"{evo.url}?apikey={KEY}", f"/{NAME}", ["qrcode.updated"])
    try:
        sent = await evo.emit_qr(NAME)
        event, payload = await get(queue)
        assert event == "qrcode.updated" and payload == sent
        fixture = load("evolution", "websocket-qrcode-updated")
        assert keys(payload) == keys(fixture) and keys(payload["data"]["qrcode"]) == keys(fixture["data"]["qrcode"])
        assert payload["apikey"] == fixture["apikey"] and payload["instance"] == NAME
    finally:
        await client.disconnect()


async def test_evolution_socket_handshake_needs_apikey(evo: EvolutionEmulator) -> None:
    await evo.emit_connection(NAME, "connecting")
    bare = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):  # engine.io answers 403 to the handshake
        await bare.connect(evo.url, transports=["websocket"])
    if bare.eio.http is not None:  # python-engineio leaves its session open after a refused handshake
        await bare.eio.http.close()
    client, _ = await socket_client(evo.url, f"/{NAME}", [], headers={"apikey": evo.instances[NAME].token})
    await client.disconnect()


async def test_evolution_global_socket_delivers_fixture_shape(evo: EvolutionEmulator) -> None:
    evo.websocket_global = True
    client, queue = await socket_client(f"{evo.url}?apikey={KEY}", "/", ["connection.update"])
    try:
        await evo.scan(NAME)
        _, connecting = await get(queue)
        assert connecting == {**load("evolution", "websocket-connection-update-connecting"),
                              "server_url": evo.url, "date_time": connecting["date_time"]}
        _, opened = await get(queue)
        assert opened == {**load("evolution", "websocket-connection-update-open"),
                          "server_url": evo.url, "date_time": opened["date_time"]}
    finally:
        await client.disconnect()


# ----- Evolution webhooks ------------------------------------------------------------------------
async def test_evolution_instance_webhook_headers_body_suffix(evo: EvolutionEmulator, sink: Sink) -> None:
    evo.set_webhook(f"{sink.url}/hook", headers={"authorization": "Bearer S3CRET"}, by_events=True)
    sent = await evo.emit_qr(NAME)
    path, headers, body = await get(sink.queue)
    assert path == "/hook/qrcode-updated"
    assert headers["authorization"] == "Bearer S3CRET" and headers["User-Agent"] == "axios/1.12.2"
    assert keys(body) == keys(load("evolution", "webhook-qrcode-updated"))  # no sender before first open
    assert body["destination"] == f"{sink.url}/hook" and body["data"] == sent["data"]
    local = datetime.strptime(body["date_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(local - (datetime.now(timezone.utc) - timedelta(hours=3))) < timedelta(seconds=30)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["date_time"])
    await evo.scan(NAME)
    [opened] = [b for b in await bodies(sink, 2) if b["data"]["state"] == "open"]
    assert keys(opened) == keys(load("evolution", "webhook-connection-update-open"))
    await evo.drain()
    assert [s for s, _ in evo.deliveries] == [200, 200, 200]


async def test_evolution_jwt_and_global_webhook(evo: EvolutionEmulator, sink: Sink) -> None:
    evo.set_webhook(f"{sink.url}/inst", jwt_key="k3y-0123456789abcdef0123456789abcdef")
    await evo.emit_connection(NAME, "connecting")
    _, headers, _ = await get(sink.queue)
    claims = jwt.decode(headers["Authorization"].removeprefix("Bearer "), "k3y-0123456789abcdef0123456789abcdef", algorithms=["HS256"])
    assert claims["app"] == "evolution" and claims["action"] == "webhook" and claims["exp"] == claims["iat"] + 600
    assert "jwt_key" not in headers

    evo.set_webhook(None)
    evo.set_webhook(f"{sink.url}/global", global_=True)
    await evo.emit_connection(NAME, "connecting")
    path, headers, body = await get(sink.queue)
    assert path == "/global" and body["destination"] == f"{sink.url}/global/connection-update"
    assert all(headers[k] == v for k, v in load("evolution", "webhook-request-headers-global").items())
    assert "Authorization" not in headers
    await evo.logout(NAME)  # logout.instance has no global flag: only connection.update close arrives
    _, _, body = await get(sink.queue)
    assert (body["event"], body["data"]["state"]) == ("connection.update", "close")
    await evo.drain()
    assert sink.queue.empty()


async def test_evolution_webhook_retries_5xx_not_404(evo: EvolutionEmulator, sink: Sink) -> None:
    evo.retries, evo.retry_delay = 2, 0.01
    evo.set_webhook(sink.url)
    sink.statuses = [500, 200, 404]
    await evo.emit_connection(NAME, "connecting")
    await evo.drain()
    await evo.emit_connection(NAME, "connecting")
    await evo.drain()
    assert [s for s, _ in evo.deliveries] == [200, 404]
    assert [d.attempts for d in evo.delivery_log] == [2, 1]
    assert sink.queue.qsize() == 3


async def test_evolution_send_raw_replays_fixture(evo: EvolutionEmulator, sink: Sink) -> None:
    evo.set_webhook(sink.url)
    stale = load("evolution", "webhook-qrcode-updated")
    await evo.send_raw(stale, socket=False)
    _, _, body = await get(sink.queue)
    assert body == stale


# ----- WPPConnect --------------------------------------------------------------------------------
async def test_wppconnect_auth_and_rest_shapes(http: aiohttp.ClientSession) -> None:
    async with WPPConnectEmulator() as wpp:
        base = f"{wpp.url}/api/mysession"
        assert await rest(http, "POST", f"{base}/WRONG/generate-token") == (
            400, load("wppconnect", "rest-generate-token-400-bad-secret"))
        status, tok = await rest(http, "POST", f"{base}/THISISMYSECURETOKEN/generate-token")
        assert status == 201 and keys(tok) == keys(load("wppconnect", "rest-generate-token-201"))
        assert tok["full"] == f"mysession:{tok['token']}" and tok["token"].startswith("$2b$10$")
        assert await rest(http, "GET", f"{base}/status-session") == (
            401, load("wppconnect", "rest-auth-401-no-token"))
        assert await rest(http, "GET", f"{base}/status-session", headers={"Authorization": "Bearer x"}) == (
            401, load("wppconnect", "rest-auth-401-bad-token"))
        h = {"Authorization": f"Bearer {tok['token']}"}
        assert await rest(http, "GET", f"{base}/status-session", headers=h) == (
            200, load("wppconnect", "rest-status-session-closed-unknown"))
        assert await rest(http, "POST", f"{base}/start-session", headers=h) == (
            200, load("wppconnect", "rest-start-session-first-call"))
        assert await rest(http, "POST", f"{base}/logout-session", headers=h) == (
            404, load("wppconnect", "rest-logout-session-404-not-connected"))


async def test_wppconnect_qr_flow_broadcast_and_webhooks(http: aiohttp.ClientSession, sink: Sink) -> None:
    async with WPPConnectEmulator() as wpp:
        wpp.set_webhook(f"{sink.url}/wpp")
        h = {"Authorization": f"Bearer {wpp.issue_token('mysession')}"}
        base = f"{wpp.url}/api/mysession"
        client, queue = await socket_client(wpp.url, "/", ["qrCode", "session-logged", "whatsapp-status"])
        try:
            await rest(http, "POST", f"{base}/start-session", headers=h)
            _, qr = await get(queue)
            assert keys(qr) == keys(load("wppconnect", "socketio-qrCode")) and qr["session"] == "mysession"
            status_find, body = sorted(await bodies(sink, 2), key=lambda b: b["event"] != "status-find")
            assert status_find == load("wppconnect", "webhook-status-find")
            assert keys(body) == keys(load("wppconnect", "webhook-qrcode"))
            assert "data:image/png;base64," + body["qrcode"] == qr["data"]
            status, state = await rest(http, "GET", f"{base}/status-session", headers=h)
            assert keys(state) == keys(load("wppconnect", "rest-status-session-qrcode")) and state["status"] == "QRCODE"
            await wpp.scan("mysession")
            assert await get(queue) == ("session-logged", load("wppconnect", "socketio-session-logged"))
            assert sorted(b["status"] for b in await bodies(sink, 2)) == ["inChat", "qrReadSuccess"]
            _, state2 = await rest(http, "GET", f"{base}/status-session", headers=h)
            assert state2["status"] == "CONNECTED" and state2["urlcode"] == state["urlcode"]  # old QR kept
            assert keys(state2) == keys(load("wppconnect", "rest-status-session-connected-after-qr"))
            assert await rest(http, "POST", f"{base}/close-session", headers=h) == (
                200, load("wppconnect", "rest-close-session-200"))
            assert await get(queue) == ("whatsapp-status", False)
            assert (await get(sink.queue))[2] == load("wppconnect", "webhook-closesession")
            # login data is kept: the next start restores without QR
            await rest(http, "POST", f"{base}/start-session", headers=h)
            assert sorted(b["status"] for b in await bodies(sink, 2)) == ["inChat", "isLogged"]
        finally:
            await client.disconnect()


async def test_wppconnect_session_dropped_after_close_and_autoclose(http: aiohttp.ClientSession, sink: Sink) -> None:
    async with WPPConnectEmulator() as wpp:
        wpp.set_webhook(sink.url)
        h = {"Authorization": f"Bearer {wpp.issue_token('mysession')}"}
        base = f"{wpp.url}/api/mysession"
        await rest(http, "POST", f"{base}/start-session", headers=h)
        await bodies(sink, 2)  # notLogged, qrcode
        await rest(http, "POST", f"{base}/close-session", headers=h)
        await get(sink.queue)  # closesession
        await rest(http, "POST", f"{base}/start-session", headers=h)
        not_logged, qrcode = sorted(await bodies(sink, 2), key=lambda b: b["event"] != "status-find")
        assert "session" not in not_logged and "session" not in qrcode  # the {status:null} quirk
        await wpp.autoclose("mysession")
        _, _, closed = await get(sink.queue)
        assert closed == {k: v for k, v in load("wppconnect", "webhook-status-find-browserClose").items()
                          if k != "session"}
        _, state = await rest(http, "GET", f"{base}/status-session", headers=h)
        assert keys(state) == keys(load("wppconnect", "rest-status-session-closed-after-autoclose"))
        assert state["status"] == "CLOSED" and state["urlcode"] == qrcode["urlcode"]


# ----- restart -----------------------------------------------------------------------------------
async def test_restart_on_same_port(http: aiohttp.ClientSession) -> None:
    wpp = WPPConnectEmulator()
    await wpp.start()
    port = wpp.port
    connected = asyncio.Event()
    client = socketio.AsyncClient(reconnection_delay=0.05, reconnection_delay_max=0.1, randomization_factor=0)
    client.on("connect", connected.set)
    await client.connect(wpp.url, transports=["websocket"])
    try:
        connected.clear()
        await wpp.stop()
        await wpp.start(port)
        assert wpp.port == port
        await asyncio.wait_for(connected.wait(), TIMEOUT)  # the client reconnected by itself
        status, _ = await rest(http, "POST", f"{wpp.url}/api/s/THISISMYSECURETOKEN/generate-token")
        assert status == 201
    finally:
        await client.disconnect()
        await wpp.stop()

    evo = EvolutionEmulator()
    evo.add_instance(NAME)
    await evo.start()
    port = evo.port
    await evo.emit_connection(NAME, "connecting")
    await evo.stop()
    await evo.start(port)
    try:
        late = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):  # namespaces are forgotten on restart
            await late.connect(f"{evo.url}?apikey={KEY}", namespaces=[f"/{NAME}"], transports=["websocket"])
        status, body = await rest(http, "GET", f"{evo.url}/instance/connectionState/{NAME}", headers={"apikey": KEY})
        assert status == 200 and body["instance"]["state"] == "connecting"
    finally:
        await evo.stop()


async def test_evolution_qr_limit_and_pairing_code(evo: EvolutionEmulator, http: aiohttp.ClientSession) -> None:
    evo.websocket_global, evo.qr_limit = True, 2
    client, queue = await socket_client(f"{evo.url}?apikey={KEY}", "/", ["qrcode.updated", "connection.update"])
    try:
        await rest(http, "GET", f"{evo.url}/instance/connect/{NAME}?number=5511999999999", headers={"apikey": KEY})
        await get(queue)  # connecting
        _, first = await get(queue)
        assert re.fullmatch(r"[0-9A-Z]{8}", first["data"]["qrcode"]["pairingCode"])
        await evo.emit_qr(NAME)
        await get(queue)
        await evo.emit_qr(NAME)  # count == limit: the limit shape replaces the 3rd QR
        assert (await get(queue))[1]["data"] == {"message": "QR code limit reached, please login again",
                                                 "statusCode": 500}
        assert (await get(queue))[1]["data"] == {"instance": NAME, "state": "refused", "statusReason": 428}
        assert evo.instances[NAME].state == "close" and evo.instances[NAME].qrcode == {"count": 0}
    finally:
        await client.disconnect()


async def test_wppconnect_logout_and_json_wrapper(http: aiohttp.ClientSession, sink: Sink) -> None:
    async with WPPConnectEmulator() as wpp:
        wpp.set_webhook(sink.url)
        h = {"Authorization": f"Bearer {wpp.issue_token('mysession')}"}
        base = f"{wpp.url}/api/mysession"
        wpp.start_session("mysession")
        await bodies(sink, 2)
        await wpp.scan("mysession")
        await bodies(sink, 2)
        # a request that says exactly "application/json" gets `session` injected by the server wrapper
        _, wrapped = await rest(http, "GET", f"{base}/status-session",
                                headers={**h, "Content-Type": "application/json"})
        assert wrapped["session"] == "mysession"
        assert await rest(http, "POST", f"{base}/logout-session", headers=h) == (
            200, load("wppconnect", "rest-logout-session-200"))
        got = await bodies(sink, 3)
        assert load("wppconnect", "webhook-logoutsession") in got
        assert sorted(b.get("status", "") for b in got) == ["", "browserClose", "disconnectedMobile"]
        assert await rest(http, "GET", f"{base}/status-session", headers=h) == (
            200, load("wppconnect", "rest-status-session-closed-unknown"))
