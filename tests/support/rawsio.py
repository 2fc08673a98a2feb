"""A light Socket.IO viewer: Engine.IO v4 / Socket.IO v5 spoken directly over ``websockets``.

Used where python-socketio's client would be too heavy or too polite: the benchmark's thousands
of viewers, and tests that need a viewer that misbehaves (stops reading, never connects).

    server: 0{"sid":..,"pingInterval":..}        (Engine.IO OPEN)
    client: 40{"token":"..."}                     (Socket.IO CONNECT "/" with auth)
    server: 40{"sid":".."}  | 44{"message":..}    (CONNECT ok | CONNECT_ERROR)
    client: 420["subscribe",{"instance":".."}]    (EVENT with ack id 0)
    server: 430[{"ok":true,"snapshot":..}]        (ACK id 0)
    server: 42["update",{..}]                     (an update)
    server: 2  -> client: 3                       (Engine.IO ping/pong)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

WS_PATH = "/socket.io/?EIO=4&transport=websocket"


class SetupError(Exception):
    """A viewer could not connect or subscribe; the message says at which step."""


async def handshake(ws: Any, token: str, instance: str,
                    on_update: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """OPEN → CONNECT(auth) → subscribe → ack, answering pings on the way; returns the ack.
    Updates that race the ack are handed to ``on_update``."""
    opened = await ws.recv()
    if not isinstance(opened, str) or not opened.startswith("0"):
        raise SetupError(f"expected Engine.IO open packet, got {str(opened)[:80]!r}")
    await ws.send("40" + json.dumps({"token": token}))
    while True:
        msg = await ws.recv()
        if msg == "2":
            await ws.send("3")
        elif isinstance(msg, str) and msg.startswith("40"):
            break
        elif isinstance(msg, str) and msg.startswith("44"):
            raise SetupError(f"connect refused: {msg[2:200]}")
        else:
            raise SetupError(f"unexpected packet before connect ack: {str(msg)[:80]!r}")
    await ws.send("420" + json.dumps(["subscribe", {"instance": instance}]))
    while True:
        msg = await ws.recv()
        if msg == "2":
            await ws.send("3")
        elif isinstance(msg, str) and msg.startswith("430"):
            ack = json.loads(msg[3:])
            payload = ack[0] if isinstance(ack, list) and ack else None
            if not (isinstance(payload, dict) and payload.get("ok") is True):
                raise SetupError(f"subscribe refused: {msg[3:200]}")
            return payload
        elif isinstance(msg, str) and msg.startswith("42"):
            on_update(msg)
        else:
            raise SetupError(f"unexpected packet before subscribe ack: {str(msg)[:80]!r}")
