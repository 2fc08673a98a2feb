"""Evolution API v2 emulator: REST, Socket.IO and webhooks with the shapes of fixtures/evolution.

See shared/protocols/evolution.md. This module adds the REST routes (§4) to the events and
transports of :mod:`relay.fakes.evolution_events`. Quirks kept on purpose: ``{"count":0}`` from
``/instance/connect``; the REST QR object is never cleared (stale QR after logout); the guard
answers 404 for an unknown instance before it checks the key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import templates as fixtures
from .evolution_events import (
    DEFAULT_EVENTS,
    DEFAULT_PICTURE,
    DEFAULT_WUID,
    EvolutionEvents,
    Instance,
    config_name,
    event_suffix,
)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # pairing codes' alphabet
Handler = Callable[["EvolutionEmulator", web.Request, Instance], Awaitable[web.Response]]
__all__ = ["DEFAULT_PICTURE", "DEFAULT_WUID", "EvolutionEmulator", "Instance", "config_name",
           "event_suffix"]


def _guarded(handler: Handler) -> Callable[["EvolutionEmulator", web.Request], Awaitable[web.Response]]:
    """Run the auth guard first and hand the handler the resolved instance."""

    async def wrapper(self: "EvolutionEmulator", request: web.Request) -> web.Response:
        inst = self._guard(request)
        return inst if isinstance(inst, web.Response) else await handler(self, request, inst)

    return wrapper


class EvolutionEmulator(EvolutionEvents):
    """In-process Evolution API v2 (Baileys) gateway: events, transports and REST."""

    def set_websocket(self, name: str, *, enabled: bool = True, events: list[str] | None = None) -> None:
        """Per-instance websocket config (``events=[]`` with enabled = all events)."""
        inst = self._inst(name)
        inst.ws_enabled = enabled
        inst.ws_events = list(DEFAULT_EVENTS if events is None else events) if enabled else []

    async def remove(self, name: str) -> dict[str, Any]:
        """Like ``DELETE /instance/delete``: logout if needed, ``instance.delete``, ``remove.instance``;
        then the instance is gone. Returns the ``remove.instance`` envelope."""
        inst = self._inst(name)
        if not self.whatsapp_reachable and inst.state == "connecting":
            return await self._remove_looping(inst)
        if inst.state in ("open", "connecting"):
            await self.logout(name)
        await self._emit(name, "instance.delete", {"instanceName": name, "instanceId": inst.id})
        envelope = await self._emit(name, "remove.instance", None)
        del self.instances[name]
        return envelope

    async def _remove_looping(self, inst: Instance) -> dict[str, Any]:
        """A deletion during the `connecting` loop, in the order captured from 2.3.6."""
        name = inst.name
        inst.generation += 1
        envelope = await self._emit(name, "remove.instance", None)
        await self._emit(name, "instance.delete", {"instanceName": name, "instanceId": inst.id})
        await self._emit(name, "logout.instance", None)
        await self.emit_connection(name, "close", 401)
        await self._emit(name, "status.instance", {
            "instance": name, "status": "closed", "disconnectionAt": self._date_time(),
            "disconnectionReasonCode": 401, "disconnectionObject": "{}"})
        del self.instances[name]
        return envelope

    def start_pairing(self, name: str, number: str | None = None) -> None:
        """What ``GET /instance/connect`` does for a closed instance: connecting, then QRs."""
        self._begin_pairing(self._inst(name), number)

    def _begin_pairing(self, inst: Instance, number: str | None) -> None:
        inst.state = "connecting"
        inst.generation += 1
        self._spawn(self._pairing(inst, inst.generation, number))

    async def _pairing(self, inst: Instance, gen: int, number: str | None) -> None:
        if not self.whatsapp_reachable:
            await self._connecting_loop(inst, gen)
            return
        await self.emit_connection(inst.name, "connecting")
        await asyncio.sleep(self.qr_delay)
        while self.instances.get(inst.name) is inst and inst.state == "connecting" and inst.generation == gen:
            code = "".join(secrets.choice(CROCKFORD) for _ in range(8)) if number else None
            await self.emit_qr(inst.name, pairing_code=code)
            if self.qr_interval is None:
                return
            await asyncio.sleep(self.qr_interval)

    async def _connecting_loop(self, inst: Instance, gen: int) -> None:
        """WhatsApp unreachable: bursts of `connecting` (statusReason 200) every few seconds,
        forever, never a QR, never a close (the capture's 2.3 events a second)."""
        while self.instances.get(inst.name) is inst and inst.generation == gen:
            for _ in range(self.storm_burst):
                if self.instances.get(inst.name) is not inst or inst.generation != gen:
                    return
                await self.emit_connection(inst.name, "connecting")
                await asyncio.sleep(self.storm_gap)
            await asyncio.sleep(self.storm_period)

    # ----- REST ------------------------------------------------------------------------------
    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._h_root)
        r.add_get("/instance/fetchInstances", self._h_fetch)
        r.add_get("/instance/connect/{name}", self._h_connect)
        r.add_get("/instance/connectionState/{name}", self._h_state)
        r.add_delete("/instance/logout/{name}", self._h_logout)
        r.add_delete("/instance/delete/{name}", self._h_delete)
        r.add_post("/instance/restart/{name}", self._h_restart)
        r.add_post("/webhook/set/{name}", self._h_webhook_set)
        r.add_post("/websocket/set/{name}", self._h_websocket_set)

    def _guard(self, request: web.Request) -> Instance | web.Response:
        """Guard order of auth.guard.ts: instance exists (404) before the apikey check (401)."""
        name = request.match_info["name"]
        inst = self.instances.get(name)
        if inst is None:
            body = fixtures.load("evolution", "rest-error-404-instance-not-found")
            body["response"]["message"] = [f'The "{name}" instance does not exist']
            return self._json(body, 404)
        if request.headers.get("apikey") not in (self.apikey, inst.token):
            return self._json(fixtures.load("evolution", "rest-error-401-unauthorized"), 401)
        return inst

    def _rest_state(self, inst: Instance) -> str:
        """What REST reports: `close` while the unreachable loop says `connecting`."""
        return "close" if not self.whatsapp_reachable and inst.state == "connecting" else inst.state

    def _state_body(self, inst: Instance) -> dict[str, Any]:
        body = fixtures.load("evolution", f"rest-instance-connection-state-200-{self._rest_state(inst)}")
        body["instance"]["instanceName"] = inst.name
        return body

    async def _h_root(self, request: web.Request) -> web.Response:
        return self._json({"status": 200, "message": "Welcome to the Evolution API, it is working!",
                           "version": "2.3.6", "clientName": "evolution_exchange", "manager": f"{self.url}/manager",
                           "documentation": "https://doc.evolution-api.com", "whatsappWebVersion": "2.3000.1028950000"})

    async def _h_fetch(self, request: web.Request) -> web.Response:
        key = request.headers.get("apikey")
        rows = [i for i in self.instances.values() if key == self.apikey or key == i.token]
        if not rows and key != self.apikey:
            return self._json(fixtures.load("evolution", "rest-error-401-unauthorized"), 401)
        wanted = request.query.get("instanceName")
        return self._json([self._row(i) for i in rows if wanted in (None, i.name)])

    def _row(self, i: Instance) -> dict[str, Any]:
        at = "2025-10-21T11:40:39.123Z"
        return {"id": i.id, "name": i.name, "connectionStatus": i.state, "ownerJid": i.wuid,
                "profileName": i.profile_name, "profilePicUrl": i.profile_picture_url,
                "integration": "WHATSAPP-BAILEYS", "number": None, "businessId": None, "token": i.token,
                "clientName": "evolution_exchange", "disconnectionReasonCode": None, "disconnectionObject": None,
                "disconnectionAt": None, "createdAt": at, "updatedAt": at, "Chatwoot": None, "Proxy": None,
                "Rabbitmq": None, "Nats": None, "Sqs": None,
                "Websocket": {"id": f"ws-{i.id}", "enabled": i.ws_enabled, "events": i.ws_events,
                              "createdAt": at, "updatedAt": at, "instanceId": i.id},
                "Setting": fixtures.load("evolution", "rest-instance-create-201-qr-ready")["settings"],
                "_count": {"Message": 0, "Contact": 0, "Chat": 0}}

    @_guarded
    async def _h_connect(self, request: web.Request, inst: Instance) -> web.Response:
        if inst.name in self.connect_errors:  # connect catches its own errors: HTTP 200 (§4.1)
            return self._json({"error": True, "message": self.connect_errors[inst.name]})
        if inst.state == "open":
            body = fixtures.load("evolution", "rest-instance-connect-200-already-open")
            body["instance"]["instanceName"] = inst.name
            return self._json(body)
        if inst.state == "close":
            self._begin_pairing(inst, request.query.get("number"))
            if self.connect_wait > 0:
                await asyncio.sleep(self.connect_wait)  # real Evolution: 2 s
        return self._json(dict(inst.qrcode))

    @_guarded
    async def _h_state(self, request: web.Request, inst: Instance) -> web.Response:
        return self._json(self._state_body(inst))

    @_guarded
    async def _h_logout(self, request: web.Request, inst: Instance) -> web.Response:
        if self._rest_state(inst) == "close":
            body = fixtures.load("evolution", "rest-instance-logout-400-not-connected")
            body["response"]["message"] = [f'The "{inst.name}" instance is not connected']
            return self._json(body, 400)
        inst.generation += 1
        self._spawn(self.logout(inst.name))  # 2.3.6 does not await the logout
        return self._json(fixtures.load("evolution", "rest-instance-logout-200"))

    @_guarded
    async def _h_delete(self, request: web.Request, inst: Instance) -> web.Response:
        await self.remove(inst.name)
        return self._json(fixtures.load("evolution", "rest-instance-delete-200"))

    @_guarded
    async def _h_restart(self, request: web.Request, inst: Instance) -> web.Response:
        if inst.state == "close":
            return self._json(fixtures.load("evolution", "rest-instance-restart-200-error-when-closed"))
        return self._json(self._state_body(inst) if inst.state == "open" else dict(inst.qrcode))

    @_guarded
    async def _h_webhook_set(self, request: web.Request, inst: Instance) -> web.Response:
        wh = (await self._read_json(request)).get("webhook") or {}
        enabled = bool(wh.get("enabled"))
        headers = dict(wh.get("headers") or {})
        self.set_webhook(wh.get("url") if enabled else None, headers=headers, by_events=bool(wh.get("byEvents")),
                         instance=inst.name, events=list(wh.get("events") or []))
        row = fixtures.load("evolution", "rest-webhook-set-201")
        row.update(url=wh.get("url"), headers=headers, enabled=enabled, events=wh.get("events") or [],
                   webhookByEvents=bool(wh.get("byEvents")), webhookBase64=bool(wh.get("base64")), instanceId=inst.id)
        return self._json(row, 201)

    @_guarded
    async def _h_websocket_set(self, request: web.Request, inst: Instance) -> web.Response:
        ws = (await self._read_json(request)).get("websocket") or {}
        self.set_websocket(inst.name, enabled=bool(ws.get("enabled")), events=list(ws.get("events") or []))
        row = fixtures.load("evolution", "rest-websocket-set-201")
        row.update(enabled=inst.ws_enabled, events=inst.ws_events, instanceId=inst.id)
        return self._json(row, 201)
