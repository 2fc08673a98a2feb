"""WPPConnect Server: every shared fixture through the parsers and the rules, then end to end with
the emulator (real HTTP + Socket.IO), the relay under uvicorn and python-socketio viewers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.errors import BadEventError, UpstreamError
from relay.reasons import MESSAGES
from relay.rules import apply
from relay.snapshot import Event, Record
from relay.wire import dump_record, load_record
from relay.gateways import wppconnect, wppconnect_api
from relay.fakes import WPPConnectEmulator
from tests.support.clients import SioViewer, connected_viewer, post, token
from tests.support.fixtures import fixture, fixture_paths
from tests.support.relay import RelayServer, running_relay

TTL = 45_000
S = "mysession"
ALL = [p.stem for p in fixture_paths("wppconnect")]
WEBHOOKS = [n for n in ALL if n.startswith("webhook-")]
SOCKETS = [n for n in ALL if n.startswith("socketio-")]
STATUS_SESSION = [n for n in ALL if n.startswith("rest-status-session-")]
# Other REST answers, each checked by a named test below.
OTHER_REST = {"rest-auth-401-bad-token", "rest-auth-401-no-token", "rest-check-connection-session-false",
              "rest-check-connection-session-true", "rest-close-session-200", "rest-generate-token-201",
              "rest-generate-token-400-bad-secret", "rest-logout-session-200",
              "rest-logout-session-404-not-connected", "rest-qrcode-session-not-available",
              "rest-qrcode-session-not-started", "rest-show-all-sessions-200",
              "rest-start-session-first-call", "rest-start-session-waitQrCode",
              "rest-start-session-waitQrCode-phone"}
PNG = "data:image/png;base64,"


def snap_of(event: Event | None) -> dict[str, Any]:
    assert event is not None
    result = apply(None, event, qr_ttl_ms=TTL, default_upstream="wppconnect")
    assert result is not None and result[1]
    record = result[0]
    return dict(record.snapshot)


# ----- fixtures through the parsers ------------------------------------------------------------
def test_every_fixture_is_covered() -> None:
    assert len(ALL) >= 30  # the suite really reads the shared fixtures
    assert set(ALL) == set(WEBHOOKS) | set(SOCKETS) | set(STATUS_SESSION) | OTHER_REST


@pytest.mark.parametrize("name", WEBHOOKS)
def test_every_webhook_fixture(name: str) -> None:
    body = fixture("wppconnect", name)
    if body["event"] == "status-find" and wppconnect.STATUS_FIND[body["status"]][0] is None:
        event = wppconnect.parse_webhook(body)  # keeps the state: see the test after next
        assert event is not None and event.state is None and event.clear_qr
        return
    snap = snap_of(wppconnect.parse_webhook(body))
    assert snap["instance"] == S and snap["upstream"]["name"] == "wppconnect" and snap["cause"] == body["event"]
    if body["event"] == "qrcode":
        assert snap["state"] == "connecting"
        assert snap["qr"]["code"] == body["urlcode"]
        assert snap["qr"]["image"] == PNG + body["qrcode"]  # the webhook's is bare base64 (§8.8)
    elif body["event"] == "status-find":
        state, code, words, clear_qr = wppconnect.STATUS_FIND[body["status"]]
        assert snap["state"] == state and snap["qr"] is None
        assert (snap["reason"] or {}).get("code") == code
        if code is not None:
            assert snap["reason"]["gateway"] == {"status": body["status"]}
            assert snap["reason"]["message"] == (words or MESSAGES[code])
    else:  # closesession, logoutsession
        assert snap["state"] == "close" and snap["reason"]["message"]


@pytest.mark.parametrize("status, state, code", [
    ("notLogged", "connecting", None), ("inChat", "open", None), ("qrReadFail", "close", "scan_failed"),
    ("qrReadError", "close", "scan_failed"), ("autocloseCalled", "close", "timed_out"),
    ("browserClose", "close", "closed"),  # with no QR before it: see test_rules for the other case
    ("serverClose", "close", "closed"), ("phoneNotConnected", "close", "closed"),
    ("disconnectedMobile", "close", "logged_out"),
    ("desconnectedMobile", "close", "logged_out"),  # wppconnect <= 1.37.6 (§4.3)
])
def test_every_status_find_value(status: str, state: str, code: str | None) -> None:
    body = fixture("wppconnect", "webhook-status-find") | {"status": status}
    snap = snap_of(wppconnect.parse_webhook(body))
    assert snap["state"] == state
    assert (snap["reason"] or {}).get("code") == code
    if code is not None:
        assert snap["reason"]["message"]


@pytest.mark.parametrize("status", ["qrReadSuccess", "isLogged"])
def test_scanned_and_restored_clear_the_qr_but_never_undo_open(status: str) -> None:
    qr = wppconnect.parse_webhook(fixture("wppconnect", "webhook-qrcode"))
    late = wppconnect.parse_webhook(fixture("wppconnect", "webhook-status-find") | {"status": status})
    opened = wppconnect.parse_webhook(fixture("wppconnect", "webhook-status-find-inChat"))
    assert qr is not None and late is not None and opened is not None
    first = apply(None, qr, qr_ttl_ms=45_000)
    assert first is not None
    scanned = apply(first[0], late, qr_ttl_ms=45_000)
    assert scanned is not None and scanned[0].snapshot["state"] == "connecting"
    assert scanned[0].snapshot["qr"] is None
    # Posted concurrently with no timestamps (§4.1): arriving after inChat, it changes nothing.
    done = apply(first[0], opened, qr_ttl_ms=45_000)
    assert done is not None
    after = apply(done[0], late, qr_ttl_ms=45_000)
    assert after is not None and after[1] is False and after[0].snapshot["state"] == "open"


def test_forks_status_values_are_ignored() -> None:
    assert wppconnect.parse_webhook(fixture("wppconnect", "webhook-status-find") | {"status": "initBrowser"}) is None
    assert wppconnect.parse_webhook({"event": "onmessage", "session": S}) is None


@pytest.mark.parametrize("name", ["webhook-qrcode", "webhook-status-find"])
def test_webhook_without_session_needs_the_url(name: str) -> None:
    body = fixture("wppconnect", name)
    del body["session"]  # as sent after a close-session (§8.2)
    with pytest.raises(BadEventError) as info:
        wppconnect.parse_webhook(body)
    assert "?session=" in info.value.detail
    event = wppconnect.parse_webhook(body, session_hint="from-url")
    assert event is not None and event.instance == "from-url"


def test_socket_fixtures() -> None:
    qr = fixture("wppconnect", "socketio-qrCode")
    snap = snap_of(wppconnect.parse_socket("qrCode", qr))
    assert snap["state"] == "connecting" and snap["qr"]["code"] is None and snap["qr"]["image"] == qr["data"]
    logged = snap_of(wppconnect.parse_socket("session-logged", fixture("wppconnect", "socketio-session-logged")))
    assert logged["state"] == "open" and logged["qr"] is None
    error = snap_of(wppconnect.parse_socket("session-error", fixture("wppconnect", "socketio-session-error")))
    assert error["instance"] == S and error["state"] == "close" and error["reason"]["code"] == "closed"
    assert error["reason"]["gateway"] == {"event": "session-error"}
    assert wppconnect.parse_socket("whatsapp-status", fixture("wppconnect", "socketio-whatsapp-status")) is None
    phone = snap_of(wppconnect.parse_socket("phoneCode", {"data": "ABCD-EFGH", "phone": "5511999999999",
                                                          "session": S}))
    assert phone["qr"]["pairingCode"] == "ABCD-EFGH" and phone["state"] == "connecting"
    hook = wppconnect.parse_webhook({"event": "phoneCode", "session": S, "phoneCode": "ABCD-EFGH",
                                     "phone": "5511999999999"})
    sock = wppconnect.parse_socket("phoneCode", {"data": "ABCD-EFGH", "phone": "5511999999999", "session": S})
    assert hook is not None and sock is not None and hook.dedupe_key == sock.dedupe_key  # one event
    assert set(SOCKETS) == {"socketio-qrCode", "socketio-session-logged", "socketio-session-error",
                            "socketio-whatsapp-status"}


def test_socket_edge_cases() -> None:
    anonymous = fixture("wppconnect", "socketio-qrCode")
    del anonymous["session"]  # after a close-session (§8.2)
    assert wppconnect.parse_socket("qrCode", anonymous) is None
    assert wppconnect.parse_socket("received-message", {"response": {"session": S}}) is None
    assert wppconnect.parse_socket("onack", {"id": 1}) is None
    with pytest.raises(BadEventError):
        wppconnect.parse_socket("qrCode", {"session": S})
    with pytest.raises(BadEventError):
        wppconnect.parse_socket("session-error", {"session": S})


def test_socket_qr_merges_with_webhook_qr_either_order() -> None:
    hook = wppconnect.parse_webhook(fixture("wppconnect", "webhook-qrcode"))
    sock = wppconnect.parse_socket("qrCode", fixture("wppconnect", "socketio-qrCode"))
    assert hook is not None and sock is not None
    for first, second in ((hook, sock), (sock, hook)):
        started = apply(None, first, qr_ttl_ms=TTL, at_ms=1_000)
        assert started is not None
        result = apply(started[0], second, qr_ttl_ms=TTL, at_ms=2_000)
        assert result is not None
        qr = result[0].snapshot["qr"]
        assert qr is not None and qr["code"] == hook.qr.code and qr["image"] == sock.qr.image  # type: ignore[union-attr]
        assert qr["expiresAt"] == 1_000 + TTL  # one QR, not two


@pytest.mark.parametrize("name", STATUS_SESSION)
def test_every_status_session_fixture(name: str) -> None:
    body = fixture("wppconnect", name)
    snap = snap_of(wppconnect_api.session_state(S, body, cause="resync"))
    expected = {"CLOSED": "close", "INITIALIZING": "connecting", "QRCODE": "connecting", "CONNECTED": "open"}
    assert snap["state"] == expected[body["status"]]
    if body["status"] == "QRCODE":
        assert snap["qr"]["code"] == body["urlcode"] and snap["qr"]["image"] == body["qrcode"]
    else:
        # CONNECTED/CLOSED still carry the old QR (§8.1): it must never come back.
        assert snap["qr"] is None


def test_status_values_without_a_fixture() -> None:
    phone = wppconnect_api.session_state(S, {"status": "PHONECODE", "qrcode": None}, cause="resync")
    assert phone is not None and phone.state == "connecting" and not phone.clear_qr
    assert wppconnect_api.session_state(S, {"status": "qrcode"}, cause="resync") is None  # waitQrCode shape
    assert wppconnect_api.session_state(S, None, cause="resync") is None


def test_start_session_answers() -> None:
    # The answer is the state BEFORE the start (§8.6): CLOSED means "starting now".
    first = wppconnect_api.session_state(S, fixture("wppconnect", "rest-start-session-first-call"), cause="connect",
                                     starting=True)
    assert first is not None and first.state == "connecting" and first.qr is None
    qr = wppconnect_api.session_state(S, fixture("wppconnect", "rest-status-session-qrcode"), cause="connect",
                                  starting=True)
    assert qr is not None and qr.qr is not None and qr.qr.code.startswith("2@")  # type: ignore[union-attr]
    old = wppconnect_api.session_state(S, fixture("wppconnect", "rest-status-session-connected-after-qr"),
                                   cause="connect", starting=True)
    assert old is not None and old.state == "open" and old.qr is None
    # waitQrCode shapes (never requested by the relay) say nothing it would use.
    for name in ("rest-start-session-waitQrCode", "rest-start-session-waitQrCode-phone"):
        assert wppconnect_api.session_state(S, fixture("wppconnect", name), cause="connect", starting=True) is None


def test_error_bodies_in_the_gateways_words() -> None:
    assert wppconnect_api._message(fixture("wppconnect", "rest-generate-token-400-bad-secret")) == wppconnect_api.BAD_SECRET
    assert wppconnect_api._message(fixture("wppconnect", "rest-logout-session-404-not-connected")) == \
        "A sessão do WhatsApp não está ativa."
    assert wppconnect_api._message(fixture("wppconnect", "rest-auth-401-bad-token")) == \
        "Check that the Session and Token are correct"
    assert wppconnect_api._message(fixture("wppconnect", "rest-auth-401-no-token")).startswith("Token is not present")  # type: ignore[union-attr]
    bad = wppconnect_api.WPPConnectClient._fail(400, fixture("wppconnect", "rest-generate-token-400-bad-secret"))
    assert bad.code == "gateway_unauthorized" and "RELAY_WPPCONNECT_SECRET_KEY" in bad.detail
    for name in ("rest-check-connection-session-false", "rest-check-connection-session-true",
                 "rest-close-session-200", "rest-logout-session-200", "rest-qrcode-session-not-available",
                 "rest-qrcode-session-not-started", "rest-generate-token-201", "rest-show-all-sessions-200"):
        assert isinstance(fixture("wppconnect", name), dict)  # success shapes: not errors


# ----- the REST client against the emulator ------------------------------------------------------
@pytest.fixture
async def emu() -> AsyncIterator[WPPConnectEmulator]:
    async with WPPConnectEmulator() as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def generated(emu: WPPConnectEmulator) -> int:
    return sum(r.path.endswith("/generate-token") for r in emu.requests)


async def test_client_caches_token_and_regenerates_once_on_401(emu: WPPConnectEmulator,
                                                                http: aiohttp.ClientSession) -> None:
    client = wppconnect_api.WPPConnectClient(http, emu.url, emu.secret_key, 5.0)
    first = await client.status_session(S)
    assert first is not None and first.state == "close"
    await client.status_session(S)
    assert generated(emu) == 1
    emu.tokens.clear()  # e.g. SECRET_KEY rotated on the server: every token is now refused
    assert await client.status_session(S) is not None
    assert generated(emu) == 2
    sent = [r for r in emu.requests if r.path.endswith("/status-session")]
    assert [r.headers["Authorization"].startswith("Bearer $2b$") for r in sent] == [True] * 4
    assert "Content-Type" not in sent[-1].headers  # no injected `session` key on GETs (§10)
    assert await client.show_all_sessions() == []


async def test_client_errors(emu: WPPConnectEmulator, http: aiohttp.ClientSession) -> None:
    wrong = wppconnect_api.WPPConnectClient(http, emu.url, "not-the-key", 5.0)
    for call in (wrong.status_session(S), wrong.show_all_sessions()):
        with pytest.raises(UpstreamError) as info:
            await call
        assert info.value.code == "gateway_unauthorized" and "RELAY_WPPCONNECT_SECRET_KEY" in info.value.detail
        assert "not-the-key" not in info.value.detail
    client = wppconnect_api.WPPConnectClient(http, emu.url, emu.secret_key, 0.3)
    with pytest.raises(UpstreamError) as info:
        await client.logout_session(S)
    assert (info.value.code, info.value.status) == ("gateway_error", 502)
    assert info.value.detail == "A sessão do WhatsApp não está ativa."
    emu.hang = True
    with pytest.raises(UpstreamError) as info:
        await client.status_session(S)
    assert (info.value.code, info.value.status) == ("gateway_timeout", 504)


# ----- end to end ------------------------------------------------------------------------------------
def wpp_relay(emu: WPPConnectEmulator, **changes: Any) -> Any:
    return running_relay(wppconnect_url=emu.url, wppconnect_secret_key=emu.secret_key, **changes)


async def following(relay_server: RelayServer) -> None:
    """Until the relay's lease holder follows the emulator's socket (connected and resynced)."""
    await asyncio.wait_for(relay_server.rt.gateways["wppconnect"].socket_connected.wait(), 10)


async def connect(relay_server: RelayServer, instance: str = S) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{relay_server.url}/v1/instances/{instance}/connect",
                                headers={"Authorization": f"Bearer {token(instance)}"}) as resp:
            return resp.status, await resp.json(content_type=None)


def has_code(snap: dict[str, Any]) -> bool:
    return snap["qr"] is not None and bool(snap["qr"]["code"])


async def test_webhook_end_to_end(emu: WPPConnectEmulator) -> None:
    async with wpp_relay(emu) as relay_server:
        emu.set_webhook(f"{relay_server.url}/webhooks/wppconnect")
        await following(relay_server)
        viewer, [ack] = await connected_viewer(relay_server.url, token(S), S)
        try:
            assert ack["snapshot"]["state"] == "unknown"
            assert (await connect(relay_server))[0] == 202
            qr = await viewer.update_where(has_code)  # only the webhook carries `urlcode`
            assert qr["state"] == "connecting" and qr["qr"]["image"].startswith(PNG)
            await emu.scan(S)
            opened = await viewer.update_where(lambda s: s["state"] == "open")
            assert opened["qr"] is None
            await emu.drain()
            await emu.disconnect_mobile(S)
            closed = await viewer.update_where(lambda s: s["state"] == "close" and s["reason"] is not None
                                               and s["reason"]["code"] == "logged_out")
            assert closed["reason"]["message"] == MESSAGES["logged_out"] and closed["qr"] is None
            await emu.drain()
            assert (await connect(relay_server))[0] == 202
            again = await viewer.update_where(has_code)
            assert again["qr"]["code"] != qr["qr"]["code"] and again["reason"] is None
            await emu.autoclose(S)  # only browserClose arrives (§5.3)
            timed_out = await viewer.update_where(lambda s: s["state"] == "close")
            # browserClose after a QR: it was not scanned in time.
            assert timed_out["reason"]["code"] == "timed_out" and timed_out["qr"] is None
        finally:
            await viewer.close()


async def test_socket_only_end_to_end(emu: WPPConnectEmulator) -> None:
    async with wpp_relay(emu) as relay_server:  # no webhook anywhere
        await following(relay_server)
        viewer, _ = await connected_viewer(relay_server.url, token(S), S)
        try:
            emu.start_session(S)  # started elsewhere: the relay learns it from the socket alone
            qr = await viewer.update_where(lambda s: s["qr"] is not None)
            assert qr["state"] == "connecting" and qr["qr"]["code"] is None
            assert qr["qr"]["image"] == PNG + str(emu.sessions[S].png)
            assert qr["cause"] == "qrCode"
            await emu.scan(S)
            opened = await viewer.update_where(lambda s: s["state"] == "open")
            assert opened["qr"] is None and opened["cause"] == "session-logged"
            await emu.session_error(S)
            failed = await viewer.update_where(lambda s: s["state"] == "close")
            assert failed["reason"]["code"] == "closed"
            assert emu.deliveries == []
        finally:
            await viewer.close()


async def test_anonymous_socket_qr_after_close_session_is_found_by_resync(emu: WPPConnectEmulator) -> None:
    async with wpp_relay(emu) as relay_server:
        await following(relay_server)
        viewer, _ = await connected_viewer(relay_server.url, token(S), S)
        try:
            assert (await connect(relay_server))[0] == 202
            await viewer.update_where(lambda s: s["qr"] is not None)
            await emu.close_session(S)  # leaves {status:null}: later events lack `session` (§8.2)
            assert (await connect(relay_server))[0] == 202
            # The socket's qrCode has no session; status-session (QRCODE) names it, with its code.
            qr = await viewer.update_where(lambda s: has_code(s) and s["qr"]["code"] == emu.sessions[S].urlcode)
            assert qr["cause"] == "resync" and qr["state"] == "connecting"
        finally:
            await viewer.close()


async def test_connect_unreachable_and_recovery(emu: WPPConnectEmulator) -> None:
    # A fast probe: the lease holder's probe is what clears the flag once the gateway is back.
    async with wpp_relay(emu, probe_interval=0.2) as relay_server:
        await following(relay_server)
        viewer, _ = await connected_viewer(relay_server.url, token(S), S)
        try:
            status, body = await connect(relay_server)
            assert status == 202 and body["instance"] == S
            assert [r.path for r in emu.requests if r.method == "POST"][-1] == f"/api/{S}/start-session"
            qr = await viewer.update_where(lambda s: s["qr"] is not None)
            assert qr["upstream"] == {"name": "wppconnect", "ok": True, "detail": None}
            port = emu.port
            await emu.stop()
            status, body = await connect(relay_server)
            assert status == 502 and set(body) == {"error", "detail"}
            assert body["error"] == "gateway_unreachable" and "WPPConnect" in body["detail"]
            down = await viewer.update_where(lambda s: s["upstream"]["ok"] is False)
            assert down["upstream"]["name"] == "wppconnect" and down["upstream"]["detail"]
            await emu.scan(S)  # while the relay can't hear it: nothing is delivered
            await emu.start(port)  # same port: the lease holder's probe clears the flag by itself
            # Missed events are never replayed: the resync after the probe's recovery (or the
            # socket's reconnect, whichever comes first) reads the scan over REST.
            back = await viewer.update_where(lambda s: s["upstream"]["ok"] is True and s["state"] == "open")
            assert back["upstream"]["detail"] is None and back["qr"] is None
            await following(relay_server)  # and the socket is followed again
        finally:
            await viewer.close()


async def test_bad_secret_key(emu: WPPConnectEmulator) -> None:
    async with running_relay(wppconnect_url=emu.url, wppconnect_secret_key="not-the-key") as relay_server:
        viewer, [ack] = await connected_viewer(relay_server.url, token(S), S)
        try:
            status, body = await connect(relay_server)
            assert status == 502 and body["error"] == "gateway_unauthorized"
            assert "RELAY_WPPCONNECT_SECRET_KEY" in body["detail"] and "not-the-key" not in body["detail"]
            # The probe found it at start-up (before this viewer came, or just after).
            down = ack["snapshot"] if ack["snapshot"]["upstream"]["ok"] is False else \
                await viewer.update_where(lambda s: s["upstream"]["ok"] is False)
            assert "RELAY_WPPCONNECT_SECRET_KEY" in down["upstream"]["detail"]
        finally:
            await viewer.close()


async def test_logout_not_connected_is_the_gateways_words(emu: WPPConnectEmulator) -> None:
    async with wpp_relay(emu, admin_key="admin-key-0123456789") as relay_server:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{relay_server.url}/v1/instances/{S}/logout",
                                    headers={"Authorization": "Bearer admin-key-0123456789"}) as resp:
                assert resp.status == 502
                assert await resp.json() == {"error": "gateway_error",
                                             "detail": "A sessão do WhatsApp não está ativa."}


async def test_webhook_routes_name_the_session() -> None:
    body = fixture("wppconnect", "webhook-status-find-inChat")
    del body["session"]
    async with running_relay(webhook_secret="hook-secret-0123456789") as relay_server:
        base = f"{relay_server.url}/webhooks/wppconnect"
        auth = {"Authorization": "Bearer hook-secret-0123456789"}
        status, answer = await post(base, body, headers=auth)
        assert status == 400 and set(answer) == {"error", "detail"} and "?session=" in answer["detail"]
        assert (await post(f"{base}?session=a", body, headers=auth))[0] == 200
        assert (await post(f"{base}/hook-secret-0123456789?session=b", body))[0] == 200
        assert (await post(f"{base}/hook-secret-0123456789/c", body))[0] == 200
        for name in "abc":
            viewer = SioViewer()
            await viewer.connect(relay_server.url, token(name))
            try:
                assert (await viewer.subscribe(name))["snapshot"]["state"] == "open"
            finally:
                await viewer.close()


def test_record_roundtrip() -> None:
    event = wppconnect.parse_webhook(fixture("wppconnect", "webhook-qrcode"))
    assert event is not None
    result = apply(None, event, qr_ttl_ms=TTL)
    assert result is not None
    assert load_record(dump_record(result[0])) == result[0]
