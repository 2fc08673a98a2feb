"""End to end on the embedded default: relay under uvicorn, webhooks over HTTP, python-socketio
viewers over websocket, SSE and REST with real HTTP clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import socketio

from tests.support.clients import SioViewer, connected_viewer, post, token
from tests.support.fixtures import evolution_event
from tests.support.relay import RelayServer

T0 = "2025-10-21T11:40:39.123Z"
T1 = "2025-10-21T11:40:40.000Z"
T2 = "2025-10-21T11:40:41.000Z"


async def test_late_subscriber_gets_current_qr_in_ack(relay: RelayServer) -> None:
    status, body = await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated"))
    assert (status, body) == (200, {"ok": True, "updated": True})
    viewer, [ack] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
    try:
        assert ack["ok"] is True
        snap = ack["snapshot"]
        assert snap["state"] == "connecting"
        assert snap["qr"]["code"].startswith("2@PLACEHOLDER")
        assert snap["qr"]["image"].startswith("data:image/png;base64,")
        assert snap["cause"] == "qrcode.updated"
    finally:
        await viewer.close()


async def test_qr_then_open_reach_viewer_and_qr_disappears(relay: RelayServer) -> None:
    viewer, [ack] = await connected_viewer(relay.url, token("my-instance"), "my-instance")
    try:
        assert ack["snapshot"]["state"] == "unknown"
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T0))
        qr = await viewer.next_update()
        assert qr["qr"] is not None and qr["seq"] > ack["snapshot"]["seq"]
        await post(f"{relay.url}/webhooks/evolution/connection-update",
                   evolution_event("webhook-connection-update-open", date_time=T1))
        opened = await viewer.next_update()
        assert opened["state"] == "open" and opened["qr"] is None
        assert opened["profile"]["name"] == "Example Name"
        assert opened["seq"] > qr["seq"]
    finally:
        await viewer.close()


async def test_two_instances_never_leak(relay: RelayServer) -> None:
    a, _ = await connected_viewer(relay.url, token("alpha"), "alpha")
    b, _ = await connected_viewer(relay.url, token("beta"), "beta")
    try:
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="alpha",
                                                                      code="2@alpha,x,y,z"))
        got = await a.next_update()
        assert got["instance"] == "alpha"
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="beta",
                                                                      code="2@beta,x,y,z"))
        got_b = await b.next_update()
        assert got_b["instance"] == "beta" and got_b["qr"]["code"] == "2@beta,x,y,z"
        # alpha's viewer got nothing about beta (beta's update was delivered, so it would be here).
        assert a.drain() == []
        assert b.drain() == []
    finally:
        await a.close()
        await b.close()


async def test_bad_token_is_refused(relay: RelayServer) -> None:
    for bad in ["nonsense", token("x", secret="another-secret-another-secret-0123"), token("x", ttl=-10)]:
        viewer = SioViewer()
        with pytest.raises(socketio.exceptions.ConnectionError) as info:
            await viewer.connect(relay.url, bad)
        assert viewer.connect_errors == [{"message": "unauthorized"}], info.value
    viewer = SioViewer()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await viewer.connect(relay.url, None)
    assert viewer.connect_errors == [{"message": "unauthorized"}]


async def test_wrong_instance_is_forbidden(relay: RelayServer) -> None:
    viewer, [ack, bad] = await connected_viewer(relay.url, token("mine"), "mine", "theirs")
    try:
        assert ack["ok"] is True
        assert bad == {"ok": False, "error": {"code": "forbidden",
                                              "message": "this token does not cover instance 'theirs'"}}
        # And nothing of "theirs" reaches this viewer.
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="theirs"))
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="mine"))
        got = await viewer.next_update()
        assert got["instance"] == "mine"
        assert viewer.drain() == []
    finally:
        await viewer.close()


async def test_wildcard_token_and_unsubscribe(relay: RelayServer) -> None:
    viewer, [ack] = await connected_viewer(relay.url, token("*"), "anything")
    try:
        assert ack["ok"] is True
        assert await viewer.sio.call("unsubscribe", {"instance": "anything"}) == {"ok": True}
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="anything"))
        await viewer.subscribe("marker")
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", instance="marker"))
        got = await viewer.next_update()
        assert got["instance"] == "marker"  # the unsubscribed instance's update never came
    finally:
        await viewer.close()


async def test_retried_event_yields_no_second_update(relay: RelayServer) -> None:
    viewer, _ = await connected_viewer(relay.url, token("my-instance"), "my-instance")
    try:
        qr = evolution_event("webhook-qrcode-updated", date_time=T0)
        assert (await post(f"{relay.url}/webhooks/evolution", qr))[1]["updated"] is True
        await viewer.next_update()
        for _ in range(3):  # Evolution re-sends on timeouts: same event, same answer, no update
            assert await post(f"{relay.url}/webhooks/evolution", qr) == (200, {"ok": True, "updated": False})
        marker = evolution_event("webhook-connection-update-open", date_time=T1)
        await post(f"{relay.url}/webhooks/evolution", marker)
        assert (await viewer.next_update())["state"] == "open"  # the next thing seen is the marker
    finally:
        await viewer.close()


async def test_old_qr_arriving_after_open_does_not_win(relay: RelayServer) -> None:
    viewer, _ = await connected_viewer(relay.url, token("my-instance"), "my-instance")
    try:
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-connection-update-open", date_time=T2))
        assert (await viewer.next_update())["state"] == "open"
        # A QR stuck in Evolution's retries, older than the open: accepted (200) but ignored.
        late = evolution_event("webhook-qrcode-updated", date_time=T1, code="2@late,a,b,c")
        assert await post(f"{relay.url}/webhooks/evolution", late) == (200, {"ok": True, "updated": False})
        status, snap = await _get_json(f"{relay.url}/v1/instances/my-instance", token("my-instance"))
        assert status == 200 and snap["state"] == "open" and snap["qr"] is None
        assert viewer.drain() == []
    finally:
        await viewer.close()


async def test_sse_stream_starts_with_snapshot_then_updates(relay: RelayServer) -> None:
    await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated", date_time=T0))
    url = f"{relay.url}/v1/instances/my-instance/events?token={token('my-instance')}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        first = await _read_sse_event(resp)
        assert first["event"] == "update"
        snap = json.loads(first["data"])
        assert snap["qr"] is not None and first["id"] == str(snap["seq"])
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-connection-update-open", date_time=T1))
        second = await _read_sse_event(resp)
        assert json.loads(second["data"])["state"] == "open"
        assert int(second["id"]) > int(first["id"])


async def test_rest_routes(relay: RelayServer) -> None:
    tok = token("my-instance")
    status, body = await _get_json(f"{relay.url}/v1/instances/my-instance/qr.svg", tok)
    assert status == 404 and body["error"] == "no_qr"
    await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{relay.url}/v1/instances/my-instance/qr.svg",
                               headers={"Authorization": f"Bearer {tok}"}) as resp:
            assert resp.status == 200 and resp.headers["content-type"] == "image/svg+xml"
            assert resp.headers["cache-control"] == "no-store"
            assert (await resp.text()).startswith("<svg")
        async with session.get(f"{relay.url}/v1/instances/my-instance") as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
        async with session.get(f"{relay.url}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"{relay.url}/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True
        async with session.get(f"{relay.url}/metrics") as resp:
            text = await resp.text()
            assert 'relay_webhooks_total{event="qrcode.updated",outcome="updated",upstream="evolution"} 1.0' in text
        async with session.post(f"{relay.url}/v1/instances/my-instance/connect",
                                headers={"Authorization": f"Bearer {tok}"}) as resp:
            assert resp.status == 501 and (await resp.json())["error"] == "no_gateway"


async def test_expired_qr_is_never_served() -> None:
    from tests.support.relay import running_relay

    async with running_relay(qr_ttl=1.0) as relay:
        await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-qrcode-updated"))
        status, snap = await _get_json(f"{relay.url}/v1/instances/my-instance", token("my-instance"))
        assert snap["qr"] is not None
        await asyncio.sleep(max(0.0, snap["qr"]["expiresAt"] / 1000 - __import__("time").time()) + 0.05)
        status, snap = await _get_json(f"{relay.url}/v1/instances/my-instance", token("my-instance"))
        assert status == 200 and snap["qr"] is None and snap["state"] == "connecting"


async def _get_json(url: str, tok: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {tok}"}) as resp:
            return resp.status, await resp.json(content_type=None)


async def _read_sse_event(resp: aiohttp.ClientResponse) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().rstrip("\n")
        if not line:
            if "data" in fields:
                return fields
            continue
        if line.startswith(":") or line.startswith("retry:"):
            continue
        key, _, value = line.partition(": ")
        fields[key] = value


async def test_no_per_message_deflate_even_when_offered(relay: RelayServer) -> None:
    """Browsers always offer permessage-deflate; a zlib context per viewer doubled memory."""
    import websockets

    url = f"ws://127.0.0.1:{relay.port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, compression="deflate") as ws:
        assert "sec-websocket-extensions" not in ws.response.headers
        assert (await ws.recv()).startswith("0")
