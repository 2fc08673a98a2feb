"""WPPConnect Server (v2.10.4) emulator: REST, broadcast Socket.IO and webhooks with the shapes of
fixtures/wppconnect.

See shared/protocols/wppconnect.md. This module adds the REST routes (§1, §2) to the events and
transports of :mod:`relay.fakes.wppconnect_events`. Quirks kept on purpose: the first
``start-session`` answers ``CLOSED``; ``status-session`` keeps showing the old QR after
CONNECTED/CLOSED; ``logout-session`` answers 404 in Portuguese when not connected.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web

from . import templates as fixtures
from .wppconnect_events import Session, WPPConnectEvents

__all__ = ["Session", "WPPConnectEmulator"]


class WPPConnectEmulator(WPPConnectEvents):
    """In-process WPPConnect Server gateway: events, transports and REST."""

    # ----- REST ------------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/{session}/{secretkey}/generate-token", self._h_token)
        r.add_get("/api/{secretkey}/show-all-sessions", self._h_all)
        r.add_post("/api/{session}/start-session", self._h_start)
        r.add_get("/api/{session}/status-session", self._h_status)
        r.add_get("/api/{session}/qrcode-session", self._h_qrcode)
        r.add_get("/api/{session}/check-connection-session", self._h_check)
        r.add_post("/api/{session}/logout-session", self._h_logout)
        r.add_post("/api/{session}/close-session", self._h_close)

    def _auth(self, request: web.Request) -> str | web.Response:
        """verifyToken: ``Authorization: <anything> <token>`` or ``/api/<session>:<token>/``."""
        session = request.match_info["session"]
        if ":" in session:
            session, token = session.split(":", 1)
        else:
            parts = request.headers.get("Authorization", "").split(" ")
            token = parts[1] if len(parts) > 1 else ""
            if not token:
                return self._json(fixtures.load("wppconnect", "rest-auth-401-no-token"), 401)
        if self.tokens.get(token) != session:
            return self._json(fixtures.load("wppconnect", "rest-auth-401-bad-token"), 401)
        return session

    def _reply(self, request: web.Request, session: str, body: Any, status: int = 200) -> web.Response:
        """The src/index.ts wrapper adds ``session`` when the request says exactly application/json."""
        if request.headers.get("Content-Type") == "application/json" and isinstance(body, dict):
            body.setdefault("session", session)
        return self._json(body, status)

    def _state_body(self, session: str) -> dict[str, Any]:
        """getSessionState / status-session body."""
        sess = self.sessions.get(session)
        if sess is None or sess.status is None:
            return fixtures.load("wppconnect", "rest-status-session-closed-unknown")
        body: dict[str, Any] = fixtures.load("wppconnect", "rest-status-session-connected-after-qr")
        body.update(status=sess.status, qrcode=f"data:image/png;base64,{sess.png}" if sess.urlcode else None,
                    urlcode=sess.urlcode, version=self.version)
        if sess.urlcode is None:
            del body["urlcode"]
        return body

    async def _h_token(self, request: web.Request) -> web.Response:
        session = request.match_info["session"]
        if request.match_info["secretkey"] != self.secret_key:
            return self._json(fixtures.load("wppconnect", "rest-generate-token-400-bad-secret"), 400)
        token = self.issue_token(session)
        body = fixtures.load("wppconnect", "rest-generate-token-201")
        body.update(session=session, token=token, full=f"{session}:{token}")
        return self._json(body, 201)

    async def _h_all(self, request: web.Request) -> web.Response:
        if request.match_info["secretkey"] != self.secret_key:
            return self._json(fixtures.load("wppconnect", "rest-generate-token-400-bad-secret"), 400)
        return self._json({"response": sorted(self._configs)})

    async def _h_start(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        body = await self._read_json(request)
        if session not in self.sessions and body.get("waitQrCode"):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._entry(session).waiters.append(waiter)
            self.start_session(session, body)
            await waiter  # hangs forever if the session restores without a QR (faithful)
            sess = self.sessions[session]
            answer = fixtures.load("wppconnect", "rest-start-session-waitQrCode")
            answer.update(qrcode=sess.png, urlcode=sess.urlcode, session=session)
            return self._reply(request, session, answer)
        answer = self._state_body(session)  # the state *before* starting
        self.start_session(session, body)
        return self._reply(request, session, answer)

    async def _h_status(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        return self._reply(request, session, self._state_body(session))

    async def _h_qrcode(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        sess = self.sessions.get(session)
        if sess is None:
            return self._reply(request, session, fixtures.load("wppconnect", "rest-qrcode-session-not-started"))
        if sess.urlcode and sess.png:
            return web.Response(body=base64.b64decode(sess.png), content_type="image/png")
        body = fixtures.load("wppconnect", "rest-qrcode-session-not-available")
        body["status"] = sess.status
        return self._reply(request, session, body)

    async def _h_check(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        sess = self.sessions.get(session)
        name = "true" if sess is not None and sess.status == "CONNECTED" else "false"
        return self._reply(request, session, fixtures.load("wppconnect", f"rest-check-connection-session-{name}"))

    async def _h_logout(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        sess = self.sessions.get(session)
        if sess is None or sess.status != "CONNECTED":
            return self._reply(request, session,
                               fixtures.load("wppconnect", "rest-logout-session-404-not-connected"), 404)
        url = self._configs.get(session, {}).get("webhook") or self.webhook_url
        del self.sessions[session]
        self._paired.discard(session)
        await self._broadcast("whatsapp-status", False)
        body = fixtures.load("wppconnect", "webhook-logoutsession")
        body.update(session=session, message=f"Session: {session} logged out")
        self._webhook(session, body, url)
        self._spawn(self._after_logout(session, url))
        return self._reply(request, session, fixtures.load("wppconnect", "rest-logout-session-200"))

    async def _h_close(self, request: web.Request) -> web.Response:
        session = self._auth(request)
        if isinstance(session, web.Response):
            return session
        sess = self.sessions.get(session)
        if sess is None:
            return self._json({"status": False, "message": "Error closing session", "error": {}}, 500)
        if not self.whatsapp_reachable and sess.status == "INITIALIZING":
            sess.status = "CLOSED"  # the captured 2.10.4: 500, and the browser keeps running
            return self._json({"status": False, "message": "Error closing session",
                               "error": {"level": "error"}}, 500)
        if sess.status is not None:
            await self.close_session(session)
        return self._reply(request, session, fixtures.load("wppconnect", "rest-close-session-200"))
