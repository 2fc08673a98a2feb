"""The fake WPPConnect Server's sessions, events and transports (broadcast Socket.IO and webhooks),
with the shapes of fixtures/wppconnect; :mod:`relay.fakes.wppconnect` adds its REST routes.

See shared/protocols/wppconnect.md. Quirks kept on purpose: ``urlcode`` (old QR) is never cleared;
after ``close-session`` the ``{status:null}`` entry makes later QR/status events omit ``session``
until CONNECTED; the ``autocloseCalled`` webhook is lost, only ``browserClose`` arrives.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from . import templates as fixtures
from .base import AXIOS_HEADERS, GatewayEmulator, new_qr_string, qr_png_base64

_BCRYPT_CHARS = "./" + string.ascii_letters + string.digits


@dataclass
class Session:
    """The in-memory ``clientsArray[session]`` entry."""

    name: str
    status: str | None = None  # None: the {status:null} entry left by close-session
    urlcode: str | None = None  # never cleared while the entry lives
    png: str | None = None  # bare base64 PNG of ``urlcode``
    anonymous: bool = False  # events omit ``session`` (close-session quirk) until CONNECTED
    generation: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class WPPConnectEvents(GatewayEmulator):
    """In-process WPPConnect Server gateway, without its REST routes."""

    def __init__(self, secret_key: str = "THISISMYSECURETOKEN") -> None:
        super().__init__()
        self.secret_key = secret_key
        self.version = "2.10.4"
        self.drop_session_after_close: bool = True
        self.webhook_url: str | None = None
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, str] = {}  # token -> session (tokens never expire)
        self.events: list[tuple[str, str, Any]] = []  # (transport "socket"|"webhook", event, payload)
        self._configs: dict[str, dict[str, Any]] = {}  # persisted start-session bodies (token store)
        # False: like WPPConnect 2.10.4 whose Chromium cannot load WhatsApp Web
        # (fixtures/CAPTURED.md): a started session stays INITIALIZING, with no event at all.
        self.whatsapp_reachable = True
        self._paired: set[str] = set()  # sessions with login data on disk (restore without QR)

    # ----- configuration ---------------------------------------------------------------------
    def set_webhook(self, url: str | None) -> None:
        """Global ``WEBHOOK_URL`` (a per-session ``webhook`` from start-session takes precedence)."""
        self.webhook_url = url

    def issue_token(self, session: str) -> str:
        """Mint a bcrypt-shaped opaque token valid for ``session`` (what generate-token returns)."""
        token = "$2b$10$" + "".join(secrets.choice(_BCRYPT_CHARS) for _ in range(53)).replace("/", "_")
        self.tokens[token] = session
        return token

    def _on_start(self) -> None:
        for sess in self.sessions.values():
            sess.anonymous = False  # the {status:null} placeholder does not survive a restart

    def _setup_socketio(self, sio: socketio.AsyncServer) -> None:
        """Only the root namespace exists; no auth, no rooms."""

        async def on_connect(namespace: str, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            if namespace != "/":
                raise socketio.exceptions.ConnectionRefusedError("Invalid namespace")

        sio.on("connect", namespace="*")(on_connect)

    # ----- transports ------------------------------------------------------------------------
    async def _broadcast(self, event: str, payload: Any) -> None:
        self.events.append(("socket", event, payload))
        await self._socket_emit(event, payload, "/")

    def _webhook(self, session: str, body: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        sess = self.sessions.get(session)
        if sess is not None and sess.anonymous:
            body.pop("session", None)
        self.events.append(("webhook", body["event"], body))
        target = url or self._configs.get(session, {}).get("webhook") or self.webhook_url
        if target:
            self._post_webhook(target, dict(AXIOS_HEADERS), body)
        return body

    def _entry(self, session: str) -> Session:
        return self.sessions.setdefault(session, Session(session))

    # ----- event helpers ---------------------------------------------------------------------
    async def emit_qr(self, session: str) -> dict[str, Any]:
        """New QR: status QRCODE, socket ``qrCode`` (data URL) then webhook ``qrcode`` (bare base64).
        Returns the webhook body."""
        sess = self._entry(session)
        sess.urlcode = new_qr_string()
        sess.png = qr_png_base64(sess.urlcode)
        sess.status = "QRCODE"
        for waiter in sess.waiters:
            if not waiter.done():
                waiter.set_result(None)
        sess.waiters.clear()
        payload = fixtures.load("wppconnect", "socketio-qrCode")
        payload.update(data="data:image/png;base64," + sess.png, session=session)
        if sess.anonymous:
            del payload["session"]
        await self._broadcast("qrCode", payload)
        body = fixtures.load("wppconnect", "webhook-qrcode")
        body.update(session=session, qrcode=sess.png, urlcode=sess.urlcode)
        return self._webhook(session, body)

    async def emit_phone_code(self, session: str, phone: str) -> dict[str, Any]:
        """Pairing-code login (start-session with ``phone``): status PHONECODE, socket
        ``phoneCode`` then webhook ``phoneCode`` (shapes of protocols §3, §4.2). Returns the
        webhook body."""
        sess = self._entry(session)
        sess.status = "PHONECODE"
        code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTVWXYZ0123456789") for _ in range(8))
        code = f"{code[:4]}-{code[4:]}"
        await self._broadcast("phoneCode", {"data": code, "phone": phone, "session": session})
        return self._webhook(session, {"event": "phoneCode", "session": session, "phoneCode": code,
                                       "phone": phone})

    async def status_find(self, session: str, status: str) -> dict[str, Any]:
        """Send a ``status-find`` webhook only (no state change; there is no socket event for it)."""
        body = fixtures.load("wppconnect", "webhook-status-find")
        body.update(session=session, status=status)
        return self._webhook(session, body)

    async def _connected(self, session: str) -> dict[str, Any]:
        sess = self._entry(session)
        sess.status, sess.anonymous = "CONNECTED", False
        self._paired.add(session)
        payload = fixtures.load("wppconnect", "socketio-session-logged")
        payload["session"] = session
        await self._broadcast("session-logged", payload)
        return payload

    async def scan(self, session: str) -> dict[str, Any]:
        """The phone scans: ``qrReadSuccess``, ``inChat``, status CONNECTED (urlcode kept), socket
        ``session-logged``. Returns the ``session-logged`` payload."""
        await self.status_find(session, "qrReadSuccess")
        await self.status_find(session, "inChat")
        return await self._connected(session)

    async def autoclose(self, session: str) -> dict[str, Any]:
        """QR timeout: status CLOSED (old urlcode kept), only ``browserClose`` is delivered (§5.3)."""
        sess = self._entry(session)
        sess.status = "CLOSED"
        sess.generation += 1
        return await self.status_find(session, "browserClose")

    async def disconnect_mobile(self, session: str, legacy_spelling: bool = False) -> dict[str, Any]:
        """Device unlinked on the phone: entry deleted, login data gone, ``disconnectedMobile`` (or
        ``desconnectedMobile``) then ``browserClose``. Returns the first webhook body."""
        sess = self.sessions.get(session)
        if sess is not None:
            sess.status = "CLOSED"
            sess.generation += 1
        body = await self.status_find(session, "desconnectedMobile" if legacy_spelling else "disconnectedMobile")
        self.sessions.pop(session, None)
        self._paired.discard(session)
        await self.status_find(session, "browserClose")
        return body

    async def session_error(self, session: str) -> None:
        """Socket ``session-error`` with the bare session name (``start()`` failed)."""
        await self._broadcast("session-error", session)

    async def close_session(self, session: str) -> None:
        """What ``close-session`` does: entry -> ``{status:null}``, ``whatsapp-status false``,
        ``closesession`` webhook. Login data is kept (next start restores without QR)."""
        self.sessions[session] = Session(session, anonymous=self.drop_session_after_close)
        await self._broadcast("whatsapp-status", False)
        body = fixtures.load("wppconnect", "webhook-closesession")
        body.update(session=session, message=f"Session: {session} disconnected")
        self.events.append(("webhook", "closesession", body))
        target = self._configs.get(session, {}).get("webhook") or self.webhook_url
        if target:
            self._post_webhook(target, dict(AXIOS_HEADERS), body)

    def start_session(self, session: str, body: dict[str, Any] | None = None) -> bool:
        """Start the session like ``start-session`` (only from no entry / null / CLOSED); False if not."""
        sess = self._entry(session)
        if sess.status not in (None, "CLOSED"):
            return False
        if body or session not in self._configs:
            self._configs[session] = dict(body or {})  # an empty body restores the stored config
        sess.status = "INITIALIZING"
        sess.generation += 1
        self._spawn(self._boot(sess, sess.generation))
        return True

    async def _boot(self, sess: Session, gen: int) -> None:
        def current() -> bool:
            return self.sessions.get(sess.name) is sess and sess.generation == gen

        await asyncio.sleep(self.qr_delay)
        if not current() or not self.whatsapp_reachable:
            return  # unreachable: INITIALIZING forever, no event at all (fixtures/CAPTURED.md)
        if sess.name in self._paired:
            await self.status_find(sess.name, "isLogged")
            await self.status_find(sess.name, "inChat")
            await self._connected(sess.name)
            return
        phone = self._configs.get(sess.name, {}).get("phone")
        if phone:
            await self.emit_phone_code(sess.name, str(phone))
            return
        await self.status_find(sess.name, "notLogged")
        while current() and sess.status in ("INITIALIZING", "QRCODE"):
            await self.emit_qr(sess.name)
            if self.qr_interval is None:
                return
            await asyncio.sleep(self.qr_interval)


    async def _after_logout(self, session: str, url: str | None) -> None:
        await asyncio.sleep(self.qr_delay)  # the library notices the unpairing ~1-2 s later
        for status in ("disconnectedMobile", "browserClose"):
            body = fixtures.load("wppconnect", "webhook-status-find")
            body.update(session=session, status=status)
            self._webhook(session, body, url)
        self._configs.pop(session, None)  # token store file deleted

