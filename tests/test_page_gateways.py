"""A real browser sees QRs and "connected" from emulated gateways with no webhook configured:
the relay follows Evolution's and WPPConnect's own Socket.IO streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.fakes import EvolutionEmulator, WPPConnectEmulator
from tests.support.browser import browser_fixture, decode_qr, shot
from tests.support.clients import token
from tests.support.relay import running_relay
from tests.test_page import open_page

pytestmark = pytest.mark.asyncio(loop_scope="module")
browser = browser_fixture()


async def test_browser_follows_evolution_socket_without_webhook(browser: Any) -> None:
    evo = EvolutionEmulator(websocket_global=True)
    evo.add_instance("shop")
    await evo.start()
    try:
        async with running_relay(evolution_url=evo.url, evolution_apikey=evo.apikey,
                                 evolution_socket="global", probe_interval=0.5) as relay:
            page = await open_page(browser, relay, "shop", token("shop"))
            await page.wait_for_selector('[data-relay-state="waiting"]', timeout=15_000)
            for _ in range(200):  # the relay's socket to the gateway is up
                if evo.sio.manager.rooms.get("/", {}).get(None):
                    break
                await asyncio.sleep(0.05)
            sent = await evo.emit_qr("shop")
            await page.wait_for_selector('[data-relay-state="scan"]', timeout=10_000)
            qr = page.locator("[data-relay-qr]")
            assert await qr.get_attribute("data-relay-qr-kind") == "code"  # drawn from the code
            assert decode_qr(await qr.screenshot()) == [sent["data"]["qrcode"]["code"]]
            await evo.scan("shop")
            await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
            assert evo.deliveries == []  # no webhook took part
            await shot(page, "en", "connected-evolution-socket")
    finally:
        await evo.stop()


async def test_browser_follows_wppconnect_socket_without_webhook(browser: Any) -> None:
    wpp = WPPConnectEmulator()
    await wpp.start()
    try:
        async with running_relay(wppconnect_url=wpp.url, wppconnect_secret_key=wpp.secret_key,
                                 probe_interval=0.5) as relay:
            gateway = relay.rt.gateways["wppconnect"]
            await asyncio.wait_for(gateway.socket_connected.wait(), 15)
            page = await open_page(browser, relay, "mysession", token("mysession"))
            # Nobody asked for a QR yet (no auto-connect here): the page offers to.
            await page.wait_for_selector('[data-relay-state="not-started"]', timeout=15_000)
            # The page's button: the relay calls start-session, the QR comes over the socket.
            await page.click("[data-relay-new-qr]")
            await page.wait_for_selector('[data-relay-state="scan"]', timeout=15_000)
            # WPPConnect's socket sends only the picture (its webhook would bring the code):
            # then, and only then, the gateway's picture is shown.
            qr = page.locator("[data-relay-qr]")
            assert await qr.get_attribute("data-relay-qr-kind") == "image"
            src = await page.locator("[data-relay-qr] img").get_attribute("src")
            assert src is not None and src.startswith("data:image/png;base64,")
            assert decode_qr(await qr.screenshot()) == [wpp.sessions["mysession"].urlcode]
            await shot(page, "en", "scan-wppconnect-image")
            await wpp.scan("mysession")
            await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
            assert wpp.deliveries == []  # no webhook took part
    finally:
        await wpp.stop()
