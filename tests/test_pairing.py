"""Never spins forever: the pairing flow against what the real gateways do when they cannot reach
WhatsApp. The captured payloads are replayed with their real timing (webhook and Socket.IO), and
the emulators' "cannot reach WhatsApp" mode behaves like the capture (fixtures/CAPTURED.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.fakes import EvolutionEmulator, WPPConnectEmulator
from relay.reasons import MESSAGES
from tests.support.clients import SioViewer, connected_viewer, post, token
from tests.support.fixtures import SHARED
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess, running_relay

RAW = SHARED / "fixtures" / "evolution" / "captured-2.3.6" / "raw"
# The captured storm comes in bursts about every 5 s: with a 6 s wait, "no QR" is due during
# the second burst's silence, before the third; a clock that restarted on repeats would never
# get there.
WAIT = 6.0
WINDOW = 11.6  # three bursts of the capture, then its deletion


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (RAW / name).read_text().splitlines()]


def storm_then_deletion(all_rows: list[dict[str, Any]], keep: Any) -> list[tuple[float, dict[str, Any]]]:
    """(send at, row): the capture's first WINDOW seconds with their real timing, then its
    deletion tail moved to right after (the capture waited 40 s more in between)."""
    kept = [r for r in all_rows if keep(r)]
    t0 = kept[0]["recv_ts"]
    head = [(r["recv_ts"] - t0, r) for r in kept if r["recv_ts"] - t0 <= WINDOW]
    first_removal = next(r["recv_ts"] for r in kept if _event(r) in ("remove.instance", "instance.delete"))
    tail = [(WINDOW + 0.5 + r["recv_ts"] - first_removal, r) for r in kept if r["recv_ts"] >= first_removal]
    return head + tail


def _event(row: dict[str, Any]) -> str | None:
    body = row.get("body") or (row.get("args") or [{}])[0]
    return body.get("event") if isinstance(body, dict) else None


async def replay(plan: list[tuple[float, dict[str, Any]]], send: Any) -> dict[float, float]:
    """Send each row at its time; returns {row time: monotonic time it was sent}."""
    start = time.monotonic()
    sent = {}
    for at, row in plan:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        await send(row)
        sent[at] = time.monotonic()
    return sent


class Watch:
    """Every update a viewer gets, with the time it came (``seen``)."""

    def __init__(self, viewer: SioViewer):
        self.viewer = viewer
        self.seen = viewer.arrivals

    async def until(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        return await self.viewer.update_where(pred, timeout=timeout)

    def collect(self) -> None:
        self.viewer.drain()


def no_qr(snap: dict[str, Any]) -> bool:
    return snap["reason"] is not None and snap["reason"]["code"] == "no_qr"


def removed(snap: dict[str, Any]) -> bool:
    return snap["state"] == "close" and snap["reason"] is not None and snap["reason"]["code"] == "removed"


def burst_starts(plan: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """When each burst of the storm begins (a gap of over 2 s starts a new one)."""
    times = sorted(at for at, r in plan if _event(r) == "connection.update" and at <= WINDOW)
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 2.0]


def assert_storm_told_once(watch: Watch, third_burst_sent: float) -> None:
    """One "no QR" update, before the third burst, and no flapping around it."""
    stalls = [(t, s) for t, s in watch.seen if no_qr(s)]
    assert len(stalls) == 1, [s["reason"] for _, s in watch.seen]
    when, stall = stalls[0]
    assert stall["state"] == "connecting" and stall["qr"] is None
    assert stall["reason"]["message"] == MESSAGES["no_qr"]
    assert when < third_burst_sent, "the repeats restarted the watchdog's clock"
    states = [s["state"] for _, s in watch.seen]
    assert states[-1] == "close" and "close" not in states[:-1], states  # no flap, then the end


@pytest.mark.parametrize("run, instance", [("evo-run1-webhook-raw.jsonl", "relaytest"),
                                           ("evo-run2-webhook-raw.jsonl", "relaytwo")])
async def test_captured_webhooks_with_real_timing(run: str, instance: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    all_rows = rows(run)
    plan = storm_then_deletion(all_rows, lambda r: True)
    errors = [r for r in all_rows if r["path"] == "/errors"]
    async with running_relay(qr_wait=WAIT) as relay:
        viewer, [ack] = await connected_viewer(relay.url, token(instance), instance)
        watch = Watch(viewer)
        answers: list[int] = []

        async def send(row: dict[str, Any]) -> None:
            # /instance-hook[/connection-update] and /global, as the relay's URL plus the
            # by-events suffix the gateway appended (run 2 has webhook by events on).
            suffix = row["path"].split("/", 2)[2] if row["path"].count("/") > 1 else ""
            status, _ = await post(f"{relay.url}/webhooks/evolution/{suffix}".rstrip("/"), row["body"])
            answers.append(status)

        try:
            sent = await replay(plan, send)
            await watch.until(removed)
            watch.collect()
            for row in errors:  # the errors webhook: ignored, and its global key never logged
                assert await post(f"{relay.url}/webhooks/evolution", row["body"]) == (
                    200, {"ok": True, "ignored": True})
        finally:
            await viewer.close()
    assert set(answers) == {200} and len(answers) == len(plan)
    third = sent[burst_starts(plan)[2]]
    assert_storm_told_once(watch, third)
    assert ack["snapshot"]["state"] == "unknown"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(row["body"]["api_key"] not in logged for row in errors)
    assert sum("no QR code for instance" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture
async def evo() -> AsyncIterator[EvolutionEmulator]:
    emulator = EvolutionEmulator(tz_offset_hours=-3)
    emulator.whatsapp_reachable = False
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.mark.parametrize("run, mode", [("evo-run1-socketio-raw.jsonl", "instances"),
                                       ("evo-run2-socketio-global-raw.jsonl", "global")])
async def test_captured_socket_events_with_real_timing(run: str, mode: str, evo: EvolutionEmulator) -> None:
    all_rows = [r for r in rows(run) if r["kind"] == "event"]
    instance = all_rows[0]["args"][0]["instance"]
    evo.websocket_global = mode == "global"
    evo.add_instance(instance, state="connecting")  # looping: REST says "close"
    plan = storm_then_deletion(all_rows, lambda r: _event(r) != "instance.create")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                             evolution_socket=mode, probe_interval=0.3, qr_wait=WAIT) as relay:
        viewer, _ = await connected_viewer(relay.url, token(instance), instance)
        watch = Watch(viewer)
        try:
            sent = await replay(plan, lambda row: evo.send_raw(row["args"][0], webhook=False))
            await watch.until(removed)
            watch.collect()
        finally:
            await viewer.close()
    # The socket may connect after the first events (the namespace does not exist until the
    # first emit): what counts is what the viewer saw once the storm reached the relay.
    seen = [s for _, s in watch.seen if s["state"] != "unknown" and s["cause"] != "resync"]
    assert seen[0]["state"] == "connecting", [s["state"] for s in seen]
    third = sent[burst_starts(plan)[2]]
    watch.seen[:] = [(t, s) for t, s in watch.seen if s["state"] != "unknown" and s["cause"] != "resync"]
    assert_storm_told_once(watch, third)


async def _connect(url: str, instance: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/instances/{instance}/connect",
                                headers={"Authorization": f"Bearer {token(instance)}"}) as resp:
            return resp.status, await resp.json(content_type=None)


async def test_evolution_that_cannot_reach_whatsapp(evo: EvolutionEmulator,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Done when: the page's viewer learns within RELAY_QR_WAIT why there is no QR, and a
    deletion shows "removed"; a connect for the deleted instance is a 404 in Evolution's words."""
    caplog.set_level(logging.WARNING, logger="relay")
    evo.websocket_global = True
    evo.storm_period = 1.0
    evo.add_instance("shop")
    async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                             evolution_socket="global", probe_interval=0.3, qr_wait=2.0) as relay:
        evo.set_webhook(f"{relay.url}/webhooks/evolution")
        viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
        watch = Watch(viewer)
        try:
            status, body = await _connect(relay.url, "shop")
            assert status == 202 and body["state"] == "connecting"  # {"count":0}: accepted
            assert (await watch.until(no_qr))["state"] == "connecting"
            async with aiohttp.ClientSession() as session:
                async with session.delete(f"{evo.url}/instance/delete/shop",
                                          headers={"apikey": evo.apikey}) as resp:
                    assert resp.status == 200
            await watch.until(removed)
            status, body = await _connect(relay.url, "shop")
            assert status == 404 and body["detail"] == 'The "shop" instance does not exist'
        finally:
            await viewer.close()
    lines = [r.getMessage() for r in caplog.records if "no QR code for instance" in r.getMessage()]
    assert len(lines) == 1
    assert "'shop'" in lines[0] and "connectionState 'close'" in lines[0]
    assert int(lines[0].split(": ", 1)[1].split(" event")[0]) > 0  # the storm, counted


async def test_wppconnect_that_cannot_reach_whatsapp(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay")
    wpp = WPPConnectEmulator()
    wpp.whatsapp_reachable = False
    await wpp.start()
    try:
        async with running_relay(wppconnect_url=wpp.url, wppconnect_secret_key=wpp.secret_key,
                                 probe_interval=0.3, qr_wait=1.5) as relay:
            viewer, _ = await connected_viewer(relay.url, token("shop"), "shop")
            watch = Watch(viewer)
            try:
                status, body = await _connect(relay.url, "shop")
                assert status == 202 and body["state"] == "connecting"
                stalled = await watch.until(no_qr)
                assert stalled["upstream"]["name"] == "wppconnect"
            finally:
                await viewer.close()
    finally:
        await wpp.stop()
    lines = [r.getMessage() for r in caplog.records if "no QR code for instance" in r.getMessage()]
    assert len(lines) == 1 and "status-session 'INITIALIZING'" in lines[0]


async def test_two_workers_one_update_and_one_log_line_per_stall(
        evo: EvolutionEmulator, redis_server: RedisServer) -> None:
    evo.websocket_global = True
    evo.storm_period = 0.5
    evo.add_instance("shop")
    env = {"RELAY_REDIS_URL": redis_server.url, "RELAY_EVOLUTION_URL": evo.url,
           "RELAY_EVOLUTION_APIKEY": evo.apikey, "RELAY_EVOLUTION_SOCKET": "global",
           "RELAY_GATEWAY_PROBE_INTERVAL": "0.5", "RELAY_QR_WAIT": "1.5"}
    workers = [RelayProcess(env), RelayProcess(env)]
    for w in workers:
        w.start()
    viewers = []
    try:
        evo.set_webhook(f"{workers[0].url}/webhooks/evolution")
        watches = []
        for w in workers:
            viewer, _ = await connected_viewer(w.url, token("shop"), "shop")
            viewers.append(viewer)
            watches.append(Watch(viewer))
        status, _ = await _connect(workers[1].url, "shop")
        assert status == 202
        for watch in watches:
            await watch.until(no_qr)
        async with aiohttp.ClientSession() as session:
            async with session.delete(f"{evo.url}/instance/delete/shop",
                                      headers={"apikey": evo.apikey}) as resp:
                assert resp.status == 200
        for watch in watches:
            await watch.until(removed)
            watch.collect()
            assert sum(no_qr(s) for _, s in watch.seen) == 1
    finally:
        for viewer in viewers:
            await viewer.close()
        logs = [w.output() for w in workers]
        for w in workers:
            w.stop()
    assert sum(log.count("no QR code for instance 'shop'") for log in logs) == 1, logs
