"""`relay demo`, as a developer runs it: fake QRs reach the page, "simulate scan" connects, "log
out" brings the page back to a new QR."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.browser import browser_fixture, decode_qr, shot
from tests.support.procs import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")
browser = browser_fixture()


async def test_demo_end_to_end(browser: Any) -> None:
    port = free_port()
    while True:  # the fake gateway takes the next port
        try:
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "relay", "demo", "--port", str(port), "--every", "1"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        link = None
        deadline = time.monotonic() + 20
        assert proc.stderr is not None
        while link is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            match = re.search(r"Open: (\S+)", line)
            if match:
                link = match.group(1)
        assert link, "demo printed no link"
        page = await browser.new_page()
        await page.goto(link)
        await page.wait_for_selector('[data-relay-state="scan"]', timeout=15_000)
        qr = page.locator("[data-relay-qr]")
        [text] = decode_qr(await qr.screenshot())
        assert text.startswith("RELAY-DEMO-NOT-A-WHATSAPP-CODE-")  # drawn from the demo's code
        first = await qr.get_attribute("data-relay-qr-version")
        await page.wait_for_function(  # the next fake QR replaces it
            "(first) => { const q = document.querySelector('[data-relay-qr]');"
            " return q && q.getAttribute('data-relay-qr-version') !== first; }", arg=first, timeout=15_000)
        await page.click("[data-relay-demo-scan]")
        await page.wait_for_selector('[data-relay-state="connected"]', timeout=10_000)
        assert "Demo Phone" in await page.locator("[data-relay-status]").first.inner_text()
        assert await page.locator("[data-relay-demo-scan]").is_hidden()  # nothing to scan
        await page.click("[data-relay-demo-logout]")
        await page.wait_for_selector('[data-relay-state="closed"][data-relay-reason="logged_out"]',
                                     timeout=10_000)
        await shot(page, "en", "demo-logged-out")
        await page.click("[data-relay-new-qr]")  # "Get a new QR code": the demo's REST connect
        await page.wait_for_selector('[data-relay-state="scan"]', timeout=15_000)
    finally:
        proc.terminate()
        proc.wait(10)
