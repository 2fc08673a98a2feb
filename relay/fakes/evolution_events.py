"""The fake Evolution API v2's instances, events and transports (Socket.IO and webhooks), with the
shapes of fixtures/evolution; :mod:`relay.fakes.evolution` adds its REST routes.

See shared/protocols/evolution.md. Quirks kept on purpose: per-instance namespaces answer
"Invalid namespace" until the first emit since start; ``date_time`` is local time with ``Z``;
the global webhook never carries logout/remove events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
import socketio
from aiohttp import web

from . import templates as fixtures
from .base import GatewayEmulator, new_qr_string, qr_png_base64

DEFAULT_EVENTS = ["QRCODE_UPDATED", "CONNECTION_UPDATE", "LOGOUT_INSTANCE", "REMOVE_INSTANCE"]
# Config names that have no WEBHOOK_EVENTS_* flag: never sent by the global webhook (protocols §1).
NOT_GLOBAL = {"LOGOUT_INSTANCE", "REMOVE_INSTANCE", "STATUS_INSTANCE"}
QR_COLOR = "#198754"
_OPEN = fixtures.load("evolution", "webhook-connection-update-open")["data"]
DEFAULT_WUID: str = _OPEN["wuid"]
DEFAULT_PICTURE: str = _OPEN["profilePictureUrl"]


def config_name(event: str) -> str:
    """``qrcode.updated`` -> ``QRCODE_UPDATED``."""
    return event.replace(".", "_").replace("-", "_").upper()


def event_suffix(event: str) -> str:
    """``qrcode.updated`` -> ``qrcode-updated`` (webhook-by-events URL suffix)."""
    return config_name(event).replace("_", "-").lower()


@dataclass
class WebhookConfig:
    """A per-instance (or global) webhook target."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    by_events: bool = False
    jwt_key: str | None = None
    events: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))


@dataclass
class Instance:
    """In-memory state of one Evolution instance."""

    name: str
    token: str
    state: str = "close"  # close | connecting | open
    qrcode: dict[str, Any] = field(default_factory=lambda: {"count": 0})
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    wuid: str | None = None  # set at the first "open"; never cleared (becomes `sender`)
    phone: str = DEFAULT_WUID
    profile_name: str | None = None
    profile_picture_url: str | None = None
    ws_enabled: bool = True
    ws_events: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))
    generation: int = 0  # bumped whenever a pairing attempt ends; stops stale QR loops


class EvolutionEvents(GatewayEmulator):
    """In-process Evolution API v2 (Baileys) gateway, without its REST routes."""

    def __init__(self, apikey: str = "EVO-GLOBAL-KEY", websocket_global: bool = False,
                 tz_offset_hours: float = -3) -> None:
        super().__init__()
        self.apikey = apikey
        self.websocket_global = websocket_global
        self.tz_offset_hours = tz_offset_hours
        self.connect_wait: float = 0.0
        self.qr_limit: int = 30
        self.server_url: str | None = None  # None: this emulator's url
        self.expose_apikey: bool = True
        self.instances: dict[str, Instance] = {}
        self.events: list[dict[str, Any]] = []  # every envelope, websocket form
        self.live_namespaces: set[str] = set()
        # False: like Evolution 2.3.6 on a host that cannot reach WhatsApp (fixtures/CAPTURED.md):
        # a pairing loops through bursts of `connecting` forever, with no QR and no close, while
        # REST says `close`; logout answers 400 and the loop goes on.
        self.whatsapp_reachable = True
        self.connect_errors: dict[str, str] = {}  # instance → what `connect` answers as its error
        self.storm_period, self.storm_burst, self.storm_gap = 5.0, 11, 0.025
        self._webhooks: dict[str | None, WebhookConfig] = {}
        self._global_webhook: WebhookConfig | None = None

    # ----- configuration ---------------------------------------------------------------------
    def add_instance(self, name: str, state: str = "close", token: str | None = None) -> Instance:
        """Create an instance (token defaults to an upper-case UUID, like Evolution's ``hash``)."""
        inst = Instance(name=name, token=token or str(uuid.uuid4()).upper(), state=state)
        if state == "open":
            inst.wuid, inst.profile_name, inst.profile_picture_url = DEFAULT_WUID, "Example Name", DEFAULT_PICTURE
        self.instances[name] = inst
        return inst

    def set_webhook(self, url: str | None, *, headers: dict[str, str] | None = None, by_events: bool = False,
                    jwt_key: str | None = None, global_: bool = False, instance: str | None = None,
                    events: list[str] | None = None) -> None:
        """Configure a webhook. ``global_``: the env global webhook (no custom headers, destination
        always suffixed, never LOGOUT/REMOVE). Otherwise a per-instance row, for ``instance`` or, when
        None, for every instance without its own row. ``url=None`` removes it. ``events=[]`` = all."""
        cfg = None if url is None else WebhookConfig(url, dict(headers or {}), by_events, jwt_key,
                                                     list(DEFAULT_EVENTS if events is None else events))
        if global_:
            self._global_webhook = cfg
        elif cfg is None:
            self._webhooks.pop(instance, None)
        else:
            self._webhooks[instance] = cfg

    def _inst(self, name: str) -> Instance:
        if name not in self.instances:
            raise KeyError(f"unknown instance {name!r}")
        return self.instances[name]

    # ----- envelope and transports -----------------------------------------------------------
    def _date_time(self) -> str:
        t = datetime.now(timezone.utc) + timedelta(hours=self.tz_offset_hours)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    @staticmethod
    def _shape(transport: str, values: dict[str, Any]) -> dict[str, Any]:
        """Fill the fixture envelope of ``transport`` (websocket|webhook), keeping its key order."""
        env: dict[str, Any] = fixtures.load("evolution", f"{transport}-connection-update-open")
        for key in list(env):
            if key in ("data", "apikey") or values.get(key) is not None:
                env[key] = values.get(key)
            else:
                del env[key]  # undefined in JS -> dropped by JSON.stringify
        return env

    async def _emit(self, name: str, event: str, data: Any) -> dict[str, Any]:
        inst = self.instances.get(name)
        values = {"event": event, "instance": name, "data": data, "date_time": self._date_time(),
                  "sender": inst.wuid if inst else None,
                  "server_url": self.server_url or (self.url if self.running else "http://localhost:8080"),
                  "apikey": inst.token if inst and self.expose_apikey else None}
        envelope = self._shape("websocket", values)
        self.events.append(envelope)
        await self._socket_out(name, event, envelope)
        self._webhook_out(name, event, values, None)
        return envelope

    async def send_raw(self, envelope: dict[str, Any], *, socket: bool = True, webhook: bool = True) -> None:
        """Send ``envelope`` verbatim (e.g. a fixture), routed by its ``instance`` and ``event``."""
        name, event = envelope["instance"], envelope["event"]
        if socket:
            await self._socket_out(name, event, envelope)
        if webhook:
            self._webhook_out(name, event, None, envelope)

    async def _socket_out(self, name: str, event: str, envelope: dict[str, Any]) -> None:
        if self.websocket_global:
            await self._socket_emit(event, envelope, "/")
        inst = self.instances.get(name)
        enabled, events = (inst.ws_enabled, inst.ws_events) if inst else (True, DEFAULT_EVENTS)
        if enabled and (not events or config_name(event) in events):
            self.live_namespaces.add(f"/{name}")  # io.of('/<name>') is only called here
            await self._socket_emit(event, envelope, f"/{name}")

    def _webhook_out(self, name: str, event: str, values: dict[str, Any] | None,
                     raw: dict[str, Any] | None) -> None:
        cfg = self._webhooks.get(name) or self._webhooks.get(None)
        suffix = event_suffix(event)
        if cfg and (not cfg.events or config_name(event) in cfg.events):
            body = raw or self._shape("webhook", {**(values or {}), "destination": cfg.url})
            url = f"{cfg.url}/{suffix}" if cfg.by_events else cfg.url
            self._post_webhook(url, self._instance_headers(cfg), body)
        g = self._global_webhook
        if g and config_name(event) not in NOT_GLOBAL and (not g.events or config_name(event) in g.events):
            destination = cfg.url if cfg else f"{g.url}/{suffix}"
            body = raw or self._shape("webhook", {**(values or {}), "destination": destination})
            url = f"{g.url}/{suffix}" if g.by_events else g.url
            self._post_webhook(url, fixtures.load("evolution", "webhook-request-headers-global"), body)

    @staticmethod
    def _instance_headers(cfg: WebhookConfig) -> dict[str, str]:
        items = list(fixtures.load("evolution", "webhook-request-headers-global").items())
        custom = dict(cfg.headers)
        key = custom.pop("jwt_key", None) or cfg.jwt_key
        if key:
            now = int(time.time())
            claims = {"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}
            custom["Authorization"] = "Bearer " + jwt.encode(claims, key, algorithm="HS256")
        return {**dict(items[:2]), **custom, **dict(items[2:])}

    # ----- event helpers ---------------------------------------------------------------------
    async def emit_qr(self, name: str, *, pairing_code: str | None = None) -> dict[str, Any]:
        """New QR (unique ``code``, real PNG data URL, count+1); at ``qr_limit`` does ``emit_qr_limit``."""
        inst = self._inst(name)
        if inst.qrcode.get("count", 0) >= self.qr_limit:
            return await self.emit_qr_limit(name)
        code = self.qr_text()
        qr = fixtures.load("evolution", "rest-instance-connect-200-qr")
        qr.update(pairingCode=pairing_code, code=code, base64="data:image/png;base64," + qr_png_base64(code, QR_COLOR),
                  count=inst.qrcode.get("count", 0) + 1)
        inst.qrcode, inst.state = qr, "connecting"
        data = fixtures.load("evolution", "webhook-qrcode-updated")["data"]
        data["qrcode"].update(instance=name, pairingCode=pairing_code, code=code, base64=qr["base64"])
        return await self._emit(name, "qrcode.updated", data)

    async def emit_qr_limit(self, name: str) -> dict[str, Any]:
        """Limit-reached ``qrcode.updated`` then ``connection.update refused 428``; count reset, state close.
        Returns the ``qrcode.updated`` envelope."""
        inst = self._inst(name)
        envelope = await self._emit(name, "qrcode.updated",
                                    {"message": "QR code limit reached, please login again", "statusCode": 500})
        await self.emit_connection(name, "refused", 428)
        inst.qrcode = {"count": 0}
        return envelope

    async def emit_connection(self, name: str, state: str, status_reason: int = 200) -> dict[str, Any]:
        """``connection.update`` (connecting|open|close|refused); ``refused`` leaves the state ``close``."""
        inst = self._inst(name)
        if state == "open":
            inst.wuid = inst.phone
            inst.profile_name = inst.profile_name or "Example Name"
        data: dict[str, Any] = {"instance": name}
        if state == "open" or (state == "refused" and inst.wuid):
            data.update(wuid=inst.wuid, profileName=inst.profile_name, profilePictureUrl=inst.profile_picture_url)
        data.update(state=state, statusReason=status_reason)
        if state != "connecting":
            inst.generation += 1
        inst.state = "close" if state == "refused" else state
        return await self._emit(name, "connection.update", data)

    async def scan(self, name: str, profile_name: str = "Example Name", *, wuid: str = DEFAULT_WUID,
                   picture_url: str | None = DEFAULT_PICTURE) -> dict[str, Any]:
        """The phone scans: ``connecting(200)`` (after the 515 restart) then ``open(200)``; returns open."""
        inst = self._inst(name)
        inst.phone, inst.profile_name, inst.profile_picture_url = wuid, profile_name, picture_url
        await self.emit_connection(name, "connecting")
        return await self.emit_connection(name, "open")

    async def logout(self, name: str) -> dict[str, Any]:
        """Non-reconnectable close (401): ``status.instance``, ``logout.instance``, ``connection.update
        close 401``; returns the last. The QR object is kept (stale-QR quirk)."""
        at = self._date_time()
        lost = {"error": {"data": None, "isBoom": True, "isServer": False, "output": {
            "statusCode": 401, "payload": {"statusCode": 401, "error": "Unauthorized",
                                           "message": "Intentional Logout"}, "headers": {}}}, "date": at}
        await self._emit(name, "status.instance", {
            "instance": name, "status": "closed", "disconnectionAt": at, "disconnectionReasonCode": 401,
            "disconnectionObject": json.dumps(lost, separators=(",", ":"))})
        await self._emit(name, "logout.instance", None)
        return await self.emit_connection(name, "close", 401)

    def qr_text(self) -> str:
        """The text of the next QR (a WhatsApp-shaped one; the demo makes it say it is fake)."""
        return new_qr_string()

    # ----- Socket.IO -------------------------------------------------------------------------
    def _on_start(self) -> None:
        self.live_namespaces = set()  # a fresh Socket.IO server knows only "/"

    def _setup_socketio(self, sio: socketio.AsyncServer) -> None:
        sio.on("connect", namespace="*")(self._on_connect)

    async def _on_connect(self, namespace: str, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if namespace != "/" and namespace not in self.live_namespaces:
            raise socketio.exceptions.ConnectionRefusedError("Invalid namespace")

    def _check_socket_handshake(self, request: web.Request) -> bool:
        key = request.query.get("apikey") or request.headers.get("apikey")
        return key is not None and (key == self.apikey or any(i.token == key for i in self.instances.values()))


