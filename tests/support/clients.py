"""Real clients: a python-socketio viewer and a webhook sender."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import socketio

from relay.auth import mint_token

from .relay import SECRET


def token(*instances: str, ttl: int = 3600, secret: str = SECRET) -> str:
    return mint_token(secret, list(instances), ttl)


class SioViewer:
    """A browser stand-in: Socket.IO over websocket, collecting every ``update``."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.arrivals: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic(), snapshot)
        self.connect_errors: list[Any] = []
        self.sio.on("update", self._on_update)
        self.sio.on("connect_error", self.connect_errors.append)

    async def _on_update(self, snapshot: dict[str, Any]) -> None:
        self.arrivals.append((time.monotonic(), snapshot))
        await self.updates.put(snapshot)

    async def connect(self, url: str, tok: str | None) -> None:
        await self.sio.connect(url, transports=["websocket"], auth={"token": tok} if tok else None,
                               wait_timeout=10)

    async def subscribe(self, instance: str) -> dict[str, Any]:
        return await self.sio.call("subscribe", {"instance": instance}, timeout=10)  # type: ignore[no-any-return]

    async def next_update(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.updates.get(), timeout)

    async def update_where(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first update (from now) that satisfies ``pred``."""
        async def wait() -> dict[str, Any]:
            while True:
                snap = await self.updates.get()
                if pred(snap):
                    return snap
        return await asyncio.wait_for(wait(), timeout)

    def drain(self) -> list[dict[str, Any]]:
        items = []
        while not self.updates.empty():
            items.append(self.updates.get_nowait())
        return items

    async def close(self) -> None:
        await self.sio.disconnect()


async def connected_viewer(url: str, tok: str, *instances: str) -> tuple[SioViewer, list[dict[str, Any]]]:
    viewer = SioViewer()
    await viewer.connect(url, tok)
    acks = [await viewer.subscribe(i) for i in instances]
    return viewer, acks


async def post(url: str, body: Any, *, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with session.post(url, headers=headers, **kwargs) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, await resp.text()
