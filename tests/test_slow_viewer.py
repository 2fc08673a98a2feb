"""Bounded queues: a viewer that stops reading is disconnected; the others are not held back."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import websockets

from tests.support.clients import connected_viewer, token
from tests.support.fixtures import evolution_event
from tests.support.rawsio import WS_PATH, handshake
from tests.support.relay import RelayServer


async def stalled_viewer(relay: RelayServer, instance: str) -> websockets.ClientConnection:
    """A Socket.IO client written by hand over a socket with a tiny receive buffer; after
    subscribing it never reads again, like a frozen browser tab."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", relay.port))
    ws = await websockets.connect(f"ws://127.0.0.1:{relay.port}{WS_PATH}", sock=sock,
                                  max_size=None, compression=None)
    await handshake(ws, token(instance), instance)
    return ws


async def test_a_stalled_viewer_is_disconnected(relay: RelayServer) -> None:
    stalled = await stalled_viewer(relay, "shop")
    healthy, _ = await connected_viewer(relay.url, token("shop"), "shop")
    big = "data:image/png;base64," + "A" * 120_000  # updates large enough to fill socket buffers
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(400):
                body = evolution_event("webhook-qrcode-updated", instance="shop", code=f"2@slow{i},a,b,c",
                                       date_time=f"2025-10-21T12:{i // 60:02d}:{i % 60:02d}.000Z")
                body["data"]["qrcode"]["base64"] = big
                async with session.post(f"{relay.url}/webhooks/evolution", json=body) as resp:
                    assert resp.status == 200
                # The healthy viewer keeps up with every update.
                got = await healthy.next_update()
                assert got["qr"]["code"] == f"2@slow{i},a,b,c"
                if relay.rt.metrics.slow_viewers._value.get() >= 1:
                    break
        for _ in range(100):
            if relay.rt.metrics.slow_viewers._value.get() >= 1:
                break
            await asyncio.sleep(0.05)
        assert relay.rt.metrics.slow_viewers._value.get() == 1
        assert relay.rt.metrics.viewers._value.get() == 1  # only the healthy one is left
        # The stalled TCP connection itself was cut: only the healthy viewer's is left.
        assert relay.app.front.stats() == {"connections": 1, "viewers": 1}
    finally:
        await healthy.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stalled.close(), 5)
