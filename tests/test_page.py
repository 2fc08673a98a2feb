"""The page in a real headless Chromium (Debian's), fed by webhooks posted to the real relay (no
gateway configured: no buttons that could not work). The browser's own language here is
English, so the page speaks English; tests/test_page_states.py covers every state in pt-BR, es
and en."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.browser import (
    ARTIFACTS,
    browser_fixture,
    decode_qr,
    page_url,
    shot,
    texts,
    watch_states,
)
from tests.support.clients import post, token
from tests.support.fixtures import evolution_event
from tests.support.relay import RelayServer, running_relay

pytestmark = pytest.mark.asyncio(loop_scope="module")
browser = browser_fixture()
EN = texts("en")

@pytest_asyncio.fixture(loop_scope="module")
async def relay() -> AsyncIterator[RelayServer]:
    async with running_relay() as server:
        yield server


async def open_page(browser: Any, relay: RelayServer, instance: str, tok: str) -> Any:
    page = await browser.new_page(viewport={"width": 480, "height": 900})
    await page.goto(page_url(relay.url, instance, tok))
    return page


async def test_page_shows_qr_with_countdown_then_connected(browser: Any, relay: RelayServer) -> None:
    page = await open_page(browser, relay, "my-instance", token("my-instance"))
    await page.wait_for_selector('[data-relay-state="waiting"]', timeout=15_000)
    await watch_states(page)

    body = evolution_event("webhook-qrcode-updated")
    sent = time.time() * 1000
    assert (await post(f"{relay.url}/webhooks/evolution", body))[0] == 200
    await page.wait_for_selector('[data-relay-state="scan"]', timeout=10_000)
    shown = await page.evaluate("() => window.__seen.scan")
    qr = page.locator("[data-relay-qr]")
    assert await qr.is_visible()
    # Drawn here from the code, not the gateway's picture, and it reads back as that code.
    assert await qr.get_attribute("data-relay-qr-kind") == "code"
    assert decode_qr(await qr.screenshot()) == [body["data"]["qrcode"]["code"]]
    box = await qr.bounding_box()
    assert box is not None and box["width"] >= 250  # large, not a thumbnail
    countdown = await page.locator("[data-relay-countdown]").inner_text()
    seconds = int("".join(ch for ch in countdown if ch.isdigit()))
    assert 30 <= seconds <= 45, countdown
    assert await page.locator("[data-relay-status]").inner_text() == EN["state.scan"]
    await shot(page, "en", "scan-webhook")

    await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-connection-update-open"))
    await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
    assert "Example Name" in await page.locator("[data-relay-status]").first.inner_text()
    assert not await qr.is_visible()
    await shot(page, "en", "connected-webhook")
    # Measured, never asserted (shared machines are noisy): written for the closing note.
    (ARTIFACTS / "webhook-to-browser-ms.txt").write_text(f"{shown - sent:.1f}\n")


async def test_page_explains_close_and_refusal(browser: Any, relay: RelayServer) -> None:
    page = await open_page(browser, relay, "my-instance", token("my-instance"))
    await page.wait_for_selector('[data-relay-state="waiting"]', timeout=15_000)
    await post(f"{relay.url}/webhooks/evolution", evolution_event("webhook-connection-update-close"))
    await page.wait_for_selector('[data-relay-state="closed"][data-relay-reason="logged_out"]', timeout=10_000)
    assert await page.locator("[data-relay-status]").first.inner_text() == EN["reason.logged_out"]
    # No gateway configured: nothing to press that could not work, and who to ask instead.
    assert not await page.locator("[data-relay-new-qr]").is_visible()
    assert await page.locator("[data-relay-hint]").inner_text() == EN["hint.contact"]
    refused = evolution_event("webhook-connection-update-close", date_time="2025-10-21T11:40:45.000Z")
    refused["data"].update(state="refused", statusReason=428)
    await post(f"{relay.url}/webhooks/evolution", refused)
    await page.wait_for_selector('[data-relay-state="refused"][data-relay-reason="qr_limit"]', timeout=10_000)
    assert await page.locator("[data-relay-status]").first.inner_text() == EN["reason.qr_limit"]


async def test_page_with_bad_or_foreign_token(browser: Any, relay: RelayServer) -> None:
    page = await open_page(browser, relay, "my-instance", "not-a-token")
    await page.wait_for_selector('[data-relay-state="unauthorized"]', timeout=15_000)
    page = await open_page(browser, relay, "my-instance", token("someone-else"))
    await page.wait_for_selector('[data-relay-state="forbidden"]', timeout=15_000)
