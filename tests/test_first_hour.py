"""The first hour with the relay, as a new user meets it: `relay serve` says "ready" only once it
accepts connections, prints a getting-started block whose curl works, and refused browser
origins are said in the log."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.support.procs import free_port
from tests.support.relay import running_relay


def test_ready_means_accepting_and_the_getting_started_curl_works() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "relay ready on" in line:
                # Said once the port accepts: connecting right now must work, with no retry.
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
        else:
            pytest.fail("no 'relay ready' line:\n" + "".join(lines))
        while not any("Docker" in line for line in lines):  # the block's last line
            lines.append(proc.stderr.readline())
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}/?instance=my-instance&token=" in text
        assert f"http://127.0.0.1:{port}/webhooks/evolution" in text
        assert "RELAY_HOST=0.0.0.0" in text and "Docker" in text
        curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
        argv = shlex.split(curl)
        assert argv[:3] == ["curl", "-X", "POST"]
        done = subprocess.run(argv + ["-s", "-o", "/dev/null", "-w", "%{http_code}"],
                              capture_output=True, text=True, timeout=20)
        assert done.stdout == "200", done.stderr
        warned = [line for line in lines if "RELAY_WEBHOOK_SECRET is not set" in line]
        assert warned, "webhooks without a secret must be said at start-up"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_refused_origins_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="relay.origins")
    async with running_relay(allowed_origins=("https://app.example.com",)) as relay:
        async with aiohttp.ClientSession() as session:
            for origin in ("https://evil.example", "https://evil.example", "https://app.example.com",
                           relay.url):
                async with session.get(f"{relay.url}/healthz", headers={"Origin": origin}) as resp:
                    assert resp.status == 200
        await asyncio.sleep(0)
    refused = [r.getMessage() for r in caplog.records if r.name == "relay.origins"]
    assert len(refused) == 1 and "'https://evil.example'" in refused[0]
    assert re.search(r"RELAY_ALLOWED_ORIGINS", refused[0])
