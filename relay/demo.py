"""``relay demo``: DEVELOPMENT ONLY. The real relay plus a fake local Evolution gateway.

The fake gateway posts real-shaped webhooks (a new, clearly fake QR every few seconds) and
answers the REST calls the relay makes, so the whole path (webhook → state → page, and the
page's "New QR" → relay → gateway) runs for real. Its QR codes encode a text that says it is a
demo; nothing here is imported by ``relay serve``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import logging
import secrets
import sys
from datetime import datetime, timezone

import aiohttp
import segno
import uvicorn
from aiohttp import web

from .app import create_app
from .auth import mint_token
from .cli import UVICORN_WS
from .config import Settings

log = logging.getLogger("relay.demo")


def fake_qr(n: int) -> tuple[str, str]:
    """A QR whose text says what it is, as a PNG data URL like Evolution's."""
    code = f"RELAY-DEMO-NOT-A-WHATSAPP-CODE-{n}-{secrets.token_hex(4)}"
    buf = io.BytesIO()
    segno.make(code, error="m").save(buf, kind="png", scale=6, border=4, dark="#0b5d3b")
    return code, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class FakeEvolution:
    """Just enough of Evolution API v2 for the demo (shapes as in shared/protocols/evolution.md)."""

    def __init__(self, relay_url: str, webhook_secret: str, apikey: str, every: float):
        self.hook = f"{relay_url}/webhooks/evolution/{webhook_secret}"
        self.apikey = apikey
        self.every = every
        self.states: dict[str, str] = {}
        self.qrs: dict[str, dict[str, object]] = {}
        self.counter = itertools.count(1)
        self.http: aiohttp.ClientSession | None = None

    def envelope(self, event: str, instance: str, data: object) -> dict[str, object]:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"event": event, "instance": instance, "data": data, "destination": self.hook,
                "date_time": now, "server_url": "http://fake-evolution", "apikey": None}

    async def send(self, event: str, instance: str, data: object) -> None:
        assert self.http is not None
        try:
            async with self.http.post(self.hook, json=self.envelope(event, instance, data)) as resp:
                if resp.status >= 300:
                    log.warning("relay answered %d to a demo %s", resp.status, event)
        except aiohttp.ClientError as exc:
            log.warning("could not post a demo webhook: %s", exc)

    async def start_pairing(self, instance: str) -> None:
        self.states[instance] = "connecting"
        await self.send("connection.update", instance,
                        {"instance": instance, "state": "connecting", "statusReason": 200})
        await self.new_qr(instance)

    async def new_qr(self, instance: str) -> None:
        code, image = fake_qr(next(self.counter))
        self.qrs[instance] = {"pairingCode": None, "code": code, "base64": image}
        await self.send("qrcode.updated", instance,
                        {"qrcode": {"instance": instance, "pairingCode": None, "code": code, "base64": image}})

    async def rotate(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            for instance, state in list(self.states.items()):
                if state == "connecting":
                    await self.new_qr(instance)

    def app(self) -> web.Application:
        def authorized(request: web.Request) -> bool:
            return secrets.compare_digest(request.headers.get("apikey", ""), self.apikey)

        async def connect(request: web.Request) -> web.Response:
            if not authorized(request):
                return web.json_response({"status": 401, "error": "Unauthorized",
                                          "response": {"message": "Unauthorized"}}, status=401)
            name = request.match_info["name"]
            if self.states.get(name) == "open":
                return web.json_response({"instance": {"instanceName": name, "state": "open"}})
            if self.states.get(name) != "connecting":
                asyncio.get_running_loop().call_soon(
                    lambda: asyncio.ensure_future(self.start_pairing(name)))
                return web.json_response({"count": 0})  # like Evolution: the QR comes as an event
            return web.json_response({**self.qrs.get(name, {}), "count": 1})

        async def scan(request: web.Request) -> web.Response:
            name = request.query.get("instance", "")
            if self.states.get(name) != "connecting":
                return web.json_response({"ok": False, "detail": "no QR to scan"}, status=409,
                                         headers={"Access-Control-Allow-Origin": "*"})
            self.states[name] = "open"
            await self.send("connection.update", name, {
                "instance": name, "wuid": "5500000000000@s.whatsapp.net", "profileName": "Demo Phone",
                "profilePictureUrl": None, "state": "open", "statusReason": 200})
            return web.json_response({"ok": True}, headers={"Access-Control-Allow-Origin": "*"})

        async def logout(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.states[name] = "close"
            await self.send("connection.update", name, {"instance": name, "state": "close", "statusReason": 401})
            return web.json_response({"status": "SUCCESS", "error": False,
                                      "response": {"message": "Instance logged out"}})

        app = web.Application()
        app.router.add_get("/instance/connect/{name}", connect)
        app.router.add_delete("/instance/logout/{name}", logout)
        app.router.add_post("/scan", scan)
        return app


async def _main(host: str, port: int, instance: str, every: float) -> None:
    gateway_port = port + 1
    webhook_secret, apikey = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    settings = Settings.from_env({}).replace(
        host=host, port=port, webhook_secret=webhook_secret, admin_key=secrets.token_urlsafe(16),
        evolution_url=f"http://{host}:{gateway_port}", evolution_apikey=apikey)
    relay_url = f"http://{host}:{port}"
    fake = FakeEvolution(relay_url, webhook_secret, apikey, every)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, gateway_port).start()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_level="warning", access_log=False, **UVICORN_WS))
    async with aiohttp.ClientSession() as fake.http:
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
                return
            await asyncio.sleep(0.05)
        link = (f"{relay_url}/?instance={instance}&token={mint_token(settings.secret, [instance], 86400)}"
                f"&demo=http://{host}:{gateway_port}")
        print("DEMO MODE: a fake gateway with fake QR codes (they link nothing). Dev only.",
              file=sys.stderr)
        print(f"Open: {link}", file=sys.stderr, flush=True)
        await fake.start_pairing(instance)
        rotating = asyncio.ensure_future(fake.rotate())
        try:
            await serving
        finally:
            rotating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rotating
            await runner.cleanup()


def run_demo(host: str, port: int, instance: str, every: float) -> int:
    """Run until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(host, port, instance, every))
    return 0
