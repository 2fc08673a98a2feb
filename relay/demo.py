"""``relay demo``: DEVELOPMENT ONLY. The real relay plus a fake local Evolution gateway.

The fake gateway (:mod:`relay.fakes`, the same one the tests use) posts real-shaped webhooks (a
new, clearly fake QR every few seconds) and answers the REST calls the relay makes, so the whole
path (webhook → state → page, and the page's "New QR" → relay → gateway) runs for real. Its QR
codes encode a text that says it is a demo; nothing here is imported by ``relay serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys

import uvicorn
from aiohttp import web

from .app import create_app
from .auth import mint_token
from .config import Settings
from .fakes import EvolutionEmulator
from .server import front, log_config

log = logging.getLogger("relay.demo")
CORS = {"Access-Control-Allow-Origin": "*"}


class DemoGateway(EvolutionEmulator):
    """The fake Evolution, with fake-looking QRs and a ``POST /scan`` for the page's button."""

    def qr_text(self) -> str:
        return f"RELAY-DEMO-NOT-A-WHATSAPP-CODE-{secrets.token_hex(6)}"

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        app.router.add_post("/scan", self._h_scan)
        app.router.add_post("/logout", self._h_demo_logout)

    async def _h_scan(self, request: web.Request) -> web.Response:
        name = request.query.get("instance", "")
        inst = self.instances.get(name)
        if inst is None or inst.state != "connecting":
            return web.json_response({"ok": False, "detail": "no QR to scan"}, status=409, headers=CORS)
        await self.scan(name, "Demo Phone")
        return web.json_response({"ok": True}, headers=CORS)

    async def _h_demo_logout(self, request: web.Request) -> web.Response:
        """Like logging out on the phone: the page then offers a new QR."""
        name = request.query.get("instance", "")
        inst = self.instances.get(name)
        if inst is None or inst.state != "open":
            return web.json_response({"ok": False, "detail": "not connected"}, status=409, headers=CORS)
        inst.generation += 1
        await self.logout(name)
        return web.json_response({"ok": True}, headers=CORS)


async def _main(host: str, port: int, gateway_port: int, instance: str, every: float,
                log_level: str) -> None:
    gateway = DemoGateway(apikey=secrets.token_urlsafe(16), tz_offset_hours=0)
    gateway.qr_interval = every
    # A post can race the relay's keep-alive timeout (both ~5 s) and find the connection
    # closed ("Server disconnected"): it is sent again instead of being lost.
    gateway.retries = 2
    gateway.add_instance(instance)
    await gateway.start(gateway_port)
    webhook_secret = secrets.token_urlsafe(16)
    settings = Settings.from_env({}).replace(
        host=host, port=port, webhook_secret=webhook_secret, admin_key=secrets.token_urlsafe(16),
        evolution_url=gateway.url, evolution_apikey=gateway.apikey, log_level=log_level)
    relay_url = f"http://{host}:{port}"
    gateway.set_webhook(f"{relay_url}/webhooks/evolution/{webhook_secret}")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_config=log_config(log_level), log_level="warning",
                                           access_log=False, **front(settings)))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                return
            await asyncio.sleep(0.05)
        link = (f"{relay_url}/?instance={instance}&token={mint_token(settings.secret, [instance], 86400)}"
                f"&demo={gateway.url}")
        print("DEMO MODE: a fake gateway with fake QR codes (they link nothing). Dev only.",
              file=sys.stderr)
        print(f"Open: {link}", file=sys.stderr, flush=True)
        gateway.start_pairing(instance)
        await serving
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        await gateway.stop()


def run_demo(host: str, port: int, instance: str, every: float, log_level: str = "info",
             gateway_port: int | None = None) -> int:
    """Run until Ctrl-C (the fake gateway on ``gateway_port``, default the relay's port + 1)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(host, port, gateway_port or port + 1, instance, every, log_level))
    return 0
