"""Shared machinery for the gateway emulators: one aiohttp server carrying REST and Socket.IO on a
loopback port, fault injection, request recording and fire-and-forget webhook delivery."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from typing import Any, Awaitable, Callable, NamedTuple, Self

import aiohttp
import segno
import socketio
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What axios 1.x sends by default in Node (fixtures/evolution/webhook-request-headers-global.json).
AXIOS_HEADERS: dict[str, str] = {
    "Accept": "application/json, text/plain, */*",
    "Content-Type": "application/json",
    "User-Agent": "axios/1.12.2",
    "Accept-Encoding": "gzip, compress, deflate, br",
}


class RecordedRequest(NamedTuple):
    """One REST request as seen by an emulator (Socket.IO traffic is not recorded)."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]


class DeliveryRecord(NamedTuple):
    """Full detail of one finished webhook delivery (the last attempt)."""

    url: str
    headers: dict[str, str]
    body: Any
    status: int | None  # None: network error or timeout on every attempt
    attempts: int


def new_qr_string() -> str:
    """A fresh WhatsApp-style QR payload: ``2@<ref>,<noiseKey>,<identityKey>,<advSecret>`` (all base64)."""

    def b64(n: int) -> str:
        return base64.b64encode(os.urandom(n)).decode()

    return f"2@{b64(60)},{b64(32)},{b64(32)},{b64(32)}"


def qr_png_base64(text: str, dark: str = "#000000") -> str:
    """Render ``text`` as a real QR PNG (node-qrcode defaults: ECC M, scale 4, margin 4); bare base64."""
    buf = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buf, kind="png", scale=4, border=4, dark=dark)
    return base64.b64encode(buf.getvalue()).decode()


def js_json(body: Any) -> bytes:
    """Serialise like ``JSON.stringify``: compact separators, UTF-8, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class GatewayEmulator:
    """Base class: real HTTP + Socket.IO server on 127.0.0.1, restartable on the same port.

    Subclasses implement ``_add_routes`` and ``_setup_socketio`` and may override
    ``_check_socket_handshake`` (engine.io-level ``allowRequest``).
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.deliveries: list[tuple[int | None, Any]] = []
        self.delivery_log: list[DeliveryRecord] = []
        self.fail_with: tuple[int, Any] | None = None
        self.hang: bool = False
        self.retries: int = 0
        self.retry_delay: float = 0.2
        self.webhook_timeout: float = 5.0
        self.qr_delay: float = 0.05
        self.qr_interval: float | None = None
        self.sio: socketio.AsyncServer | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: set[asyncio.Task[Any]] = set()
        self._hung: set[asyncio.Task[Any]] = set()

    # ----- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port (valid after ``start``)."""
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._runner is not None

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:``port`` (0 = any free port). Also used to restart after ``stop``."""
        if self._runner is not None:
            raise RuntimeError("already running")
        self._on_start()
        self.sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*", namespaces="*")
        self._setup_socketio(self.sio)
        app = web.Application(middlewares=[self._middleware])
        self.sio.attach(app)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._http = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stop like a killed process: sockets drop (clients reconnect), pending work is cancelled."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        for task in list(self._tasks) + list(self._pending) + list(self._hung):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._pending, return_exceptions=True)
        self._hung.clear()
        if self.sio is not None:
            await self.sio.shutdown()
        await runner.cleanup()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- hooks for subclasses --------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _setup_socketio(self, sio: socketio.AsyncServer) -> None:
        raise NotImplementedError

    def _on_start(self) -> None:
        """Reset per-process state after a (re)start."""

    def _check_socket_handshake(self, request: web.Request) -> bool:
        return True

    # ----- HTTP plumbing ---------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/socket.io"):
            if "sid" not in request.query and not self._check_socket_handshake(request):
                # engine.io's answer when allowRequest refuses the handshake
                return web.json_response({"code": 4, "message": "Forbidden"}, status=403)
            return await handler(request)
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), dict(request.query))
        )
        if self.hang:
            task = asyncio.current_task()
            assert task is not None
            self._hung.add(task)
            try:
                await asyncio.Event().wait()  # never answers; stop() cancels it
            finally:
                self._hung.discard(task)
        if self.fail_with is not None:
            status, body = self.fail_with
            return self._json(body, status)
        return await handler(request)

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=js_json(body), status=status, content_type="application/json")

    @staticmethod
    async def _read_json(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return {}
        return body if isinstance(body, dict) else {}

    # ----- background work -------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run an owned background task (cancelled on ``stop``)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)  # a coroutine or a future
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _socket_emit(self, event: str, data: Any, namespace: str = "/") -> None:
        if self.sio is not None and self.running:
            await self.sio.emit(event, data, namespace=namespace)

    def _post_webhook(self, url: str, headers: dict[str, str], body: Any) -> None:
        """Fire-and-forget POST (like an un-awaited axios call); see ``drain``."""
        if not self.running:
            return
        task = asyncio.create_task(self._deliver(url, headers, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, headers: dict[str, str], body: Any) -> None:
        assert self._http is not None
        status: int | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
                async with self._http.post(url, data=js_json(body), headers=headers, timeout=timeout) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = None
            retryable = status is None or status >= 500
            if not retryable or attempt > self.retries:
                break
            await asyncio.sleep(self.retry_delay)
        self.deliveries.append((status, body))
        self.delivery_log.append(DeliveryRecord(url, headers, body, status, attempt))

    async def drain(self) -> None:
        """Wait until every webhook delivery started so far (including retries) has finished."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
