"""Clients for bench/hardening.py: many webhooks over a few pipelined keep-alive connections
(cheap for the client on a 2-core machine), and a light Socket.IO viewer over a raw websocket
(tests/support/rawsio.py's handshake) that keeps every update, ack and close with its time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets

from tests.support.rawsio import WS_PATH, handshake


def http_post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 POST request, as bytes."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Answers:
    """Statuses of many requests (0: no answer), and the 5xx ones with their bodies."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[tuple[int, int, bytes]] = field(default_factory=list)  # (index, status, body)
    seconds: float = 0.0

    def record(self, index: int, status: int, body: bytes) -> None:
        self.statuses[status] += 1
        if status >= 500 or status in (0, 431):  # 431: see row 4 (pipelined bodies)
            self.errors.append((index, status, body[:300]))

    def fivexx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    def text(self) -> str:
        return ", ".join(f"{n}×{s or 'no answer'}" for s, n in sorted(self.statuses.items()))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head[9:12])
    length, chunked = 0, False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(length) if length else b""
    return status, body, "connection: close" in head


async def _pipeline(port: int, items: list[tuple[int, bytes]], window: int, out: Answers) -> None:
    """Send ``items`` over one keep-alive connection, ``window`` requests in flight; a request
    left unanswered by a closed connection is sent again on a new one (three tries)."""
    pending = deque((index, raw, 0) for index, raw in items)
    while pending:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        batch = list(pending)
        pending.clear()
        inflight: deque[tuple[int, bytes, int]] = deque()
        room = asyncio.Semaphore(window)

        async def send() -> None:
            for item in batch:
                await room.acquire()
                inflight.append(item)
                writer.write(item[1])
                await writer.drain()

        sender = asyncio.create_task(send())
        answered = 0
        try:
            while answered < len(batch):
                status, body, close = await read_response(reader)
                index, _, _ = inflight.popleft()
                out.record(index, status, body)
                answered += 1
                room.release()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            writer.close()
        for item in inflight:  # sent, never answered
            if item[2] >= 2:
                out.record(item[0], 0, b"")
            else:
                pending.append((item[0], item[1], item[2] + 1))
        pending.extend(batch[answered + len(inflight):])  # never sent


async def post_many(port: int, requests: Sequence[bytes], conns: int = 4, window: int = 32,
                    answers: Answers | None = None) -> Answers:
    """Every request in ``requests`` (raw HTTP, see :func:`http_post`), spread over ``conns``
    pipelined connections; returns the statuses."""
    out = answers or Answers()
    start = time.monotonic()
    shards = [[(i, r) for i, r in enumerate(requests) if i % conns == k] for k in range(conns)]
    await asyncio.gather(*(_pipeline(port, shard, window, out) for shard in shards if shard))
    out.seconds += time.monotonic() - start
    return out


class RawViewer:
    """A Socket.IO viewer on one websocket: CONNECT with a token, subscribe, then record."""

    def __init__(self) -> None:
        self.ws: Any = None
        self.updates: list[tuple[float, dict[str, Any]]] = []  # (monotonic, snapshot)
        self.latest: dict[str, Any] | None = None
        self.paused_at: float | None = None  # first snapshot saying upstream.ok = false
        self.disconnect_at: float | None = None  # Socket.IO DISCONNECT (41) from the server
        self.closed_at: float | None = None
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 1
        self.reader: asyncio.Task[None] | None = None

    def _show(self, snapshot: dict[str, Any]) -> None:
        now = time.monotonic()
        self.updates.append((now, snapshot))
        if self.latest is None or snapshot.get("seq", 0) >= self.latest.get("seq", 0):
            self.latest = snapshot
        if not snapshot.get("upstream", {}).get("ok", True) and self.paused_at is None:
            self.paused_at = now

    def _packet(self, msg: Any) -> None:
        if not isinstance(msg, str):
            return
        if msg.startswith("42"):
            event = json.loads(msg[2:])
            if isinstance(event, list) and event and event[0] == "update":
                self._show(event[1])
        elif msg.startswith("43"):
            digits = "".join(c for c in msg[2:12] if c.isdigit())
            fut = self.acks.pop(int(digits), None) if digits else None
            if fut is not None and not fut.done():
                fut.set_result(json.loads(msg[2 + len(digits):])[0])
        elif msg.startswith("41"):
            self.disconnect_at = time.monotonic()

    async def open(self, port: int, token: str, instance: str) -> dict[str, Any]:
        """Connect and subscribe ``instance``; returns the subscribe ack."""
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}{WS_PATH}", compression=None,
                                           max_size=None, open_timeout=20)
        ack = await handshake(self.ws, token, instance, self._packet)
        self._show(ack["snapshot"])
        self.reader = asyncio.create_task(self._read())
        return ack

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg == "2":
                    await self.ws.send("3")
                else:
                    self._packet(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed_at = time.monotonic()

    async def call(self, event: str, data: Any, timeout: float = 5.0) -> Any:
        """Emit with an ack; the ack, or "closed"/"no ack" when none came."""
        ack_id, self.next_id = self.next_id, self.next_id + 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = fut
        try:
            await self.ws.send(f"42{ack_id}" + json.dumps([event, data]))
            return await asyncio.wait_for(fut, timeout)
        except websockets.ConnectionClosed:
            return "closed"
        except asyncio.TimeoutError:
            return "closed" if self.closed_at is not None else "no ack"

    @property
    def code(self) -> str | None:
        qr = self.latest.get("qr") if self.latest else None
        return qr.get("code") if isinstance(qr, dict) else None

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.reader, 2)
