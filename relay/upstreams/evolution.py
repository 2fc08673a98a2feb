"""Evolution API v2: webhook/socket envelopes in, REST control out.

Facts behind the rules are in shared/protocols/evolution.md: the same envelope reaches every
transport (§0.1), ``count`` is not in events (§0.2), ``date_time`` is local time with a misleading
``Z`` (§2.2), the "QR limit reached" shape reuses ``qrcode.updated`` (§2.6), and ``connect``
answers errors with HTTP 200 and ``{"error": true}`` (§4.1).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import BadEventError, UpstreamError
from ..snapshot import Event, NewQR, Profile, Reason
from .http import request_json

NAME = "evolution"
STATES = {"connecting", "open", "close", "refused"}
# Baileys DisconnectReason codes (protocols §2.6), in words a shop owner can act on.
CLOSE_REASONS = {
    401: "logged out on the phone",
    402: "the WhatsApp account is not available",
    403: "WhatsApp refused this number",
    406: "the WhatsApp session was rejected",
    408: "the connection to WhatsApp timed out",
    428: "the QR code limit was reached",
    440: "the session was opened somewhere else",
    500: "the WhatsApp session is corrupt",
    515: "WhatsApp asked for a restart",
}


def event_name(raw: str) -> str:
    """``QRCODE_UPDATED`` or ``qrcode-updated`` → ``qrcode.updated`` (the v2 wire name)."""
    return raw.strip().lower().replace("_", ".").replace("-", ".")


def parse_time(raw: Any) -> int | None:
    """Evolution's ``date_time`` as comparable ms. The ``Z`` is a lie, so this is naive time:
    fine for ordering one gateway's events, meaningless against our clock."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.rstrip("Z").rstrip("z"))
    except ValueError:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=parsed.tzinfo)
    return int((parsed - epoch).total_seconds() * 1000)


def reason_for(code: Any, state: str) -> Reason | None:
    if state in ("open", "connecting"):
        return None
    if state == "refused":
        return Reason(code=code if isinstance(code, int) else 428, message=CLOSE_REASONS[428])
    if isinstance(code, int):
        return Reason(code=code, message=CLOSE_REASONS.get(code, f"closed by WhatsApp (code {code})"))
    return Reason(code=None, message="closed")


def parse(body: Any, *, instance_hint: str | None = None) -> Event | None:
    """One envelope (webhook body or socket message) → an :class:`Event`.

    Returns None for well-formed events the relay does not need (messages, contacts, …).
    Raises :class:`BadEventError` with a reason for anything that is not an Evolution envelope.
    """
    if not isinstance(body, dict):
        raise BadEventError("body must be a JSON object (an Evolution event envelope)")
    raw_event = body.get("event")
    if not isinstance(raw_event, str) or not raw_event.strip():
        raise BadEventError("missing 'event' (expected e.g. \"qrcode.updated\")")
    instance = body.get("instance", instance_hint)
    if not isinstance(instance, str) or not instance.strip() or len(instance) > 200:
        raise BadEventError("missing 'instance' (the Evolution instance name)")
    name = event_name(raw_event)
    data = body.get("data")
    ts = parse_time(body.get("date_time"))
    # The same event reaches us by webhook and by socket (different key order, `destination`
    # only on webhooks), and again on every retry: key on what identifies it. A QR is
    # identified by its code, so its ~6 KB image need not be serialised for the key.
    qr = data.get("qrcode") if isinstance(data, dict) else None
    qr_code = qr.get("code") if isinstance(qr, dict) else None
    ident = ["qr", qr_code, qr.get("pairingCode")] if isinstance(qr, dict) and isinstance(
        qr_code, str) else data
    key_src = json.dumps([name, instance, body.get("date_time"), ident], sort_keys=True, default=str)
    key = hashlib.blake2b(key_src.encode(), digest_size=16).hexdigest()
    common: dict[str, Any] = dict(upstream=NAME, instance=instance, cause=name, gateway_ts=ts,
                                  dedupe_key=key)

    if name == "qrcode.updated":
        if not isinstance(data, dict):
            raise BadEventError("qrcode.updated needs a 'data' object")
        qr = data.get("qrcode")
        if isinstance(qr, dict):
            code, image = qr.get("code"), qr.get("base64")
            if not isinstance(code, str) or not code:
                raise BadEventError("qrcode.updated: data.qrcode.code must be a non-empty string")
            if image is not None and not isinstance(image, str):
                raise BadEventError("qrcode.updated: data.qrcode.base64 must be a string")
            if isinstance(image, str) and image and not image.startswith("data:"):
                image = "data:image/png;base64," + image  # webhookBase64 variants send it bare
            pairing = qr.get("pairingCode")
            return Event(**common, state="connecting",
                         qr=NewQR(code=code, image=image or None,
                                  pairing_code=pairing if isinstance(pairing, str) else None),
                         clear_reason=True, clear_profile=True)
        if "message" in data or "statusCode" in data:
            # QRCODE_LIMIT reached: Evolution stops producing QRs until connect is called again.
            message = data.get("message")
            return Event(**common, state="refused", clear_qr=True,
                         reason=Reason(code=428, message=CLOSE_REASONS[428]
                                       if not isinstance(message, str) else
                                       "the QR code limit was reached"))
        raise BadEventError("qrcode.updated: data has neither 'qrcode' nor the limit 'message'")

    if name == "connection.update":
        if not isinstance(data, dict):
            raise BadEventError("connection.update needs a 'data' object")
        state = data.get("state")
        if state not in STATES:
            raise BadEventError(f"connection.update: unknown state {str(state)[:40]!r}")
        if state == "open":
            profile = Profile(wuid=_str(data.get("wuid")), name=_str(data.get("profileName")),
                              pictureUrl=_str(data.get("profilePictureUrl")))
            return Event(**common, state="open", clear_qr=True, clear_reason=True, profile=profile)
        if state == "connecting":
            # A new socket: the previous socket's QR can no longer be scanned.
            return Event(**common, state="connecting", clear_qr=True, clear_reason=True)
        return Event(**common, state=state, clear_qr=True, clear_profile=True,
                     reason=reason_for(data.get("statusReason"), state))

    if name == "logout.instance":
        return Event(**common, state="close", clear_qr=True, clear_profile=True,
                     reason=Reason(code="logout", message="logged out"))
    if name == "remove.instance":
        return Event(**common, state="close", clear_qr=True, clear_profile=True,
                     reason=Reason(code="removed", message="the instance was deleted on the gateway"))
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class EvolutionClient:
    """The few REST calls the relay makes to Evolution, with errors in the gateway's own words."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, apikey: str, timeout: float):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.apikey = apikey
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str) -> Any:
        status, body = await request_json(self.session, method, self.base_url, path,
                                          gateway="Evolution", timeout=self.timeout,
                                          headers={"apikey": self.apikey})
        if status == 401:
            raise UpstreamError("Evolution refused the API key (check RELAY_EVOLUTION_APIKEY)",
                                code="gateway_unauthorized", status=502)
        if status == 404:
            raise UpstreamError(_message(body) or "instance not found on Evolution",
                                code="instance_not_found", status=404)
        if status >= 400:
            raise UpstreamError(_message(body) or f"Evolution answered HTTP {status}",
                                code="gateway_error", status=502)
        if isinstance(body, dict) and body.get("error") is True:
            # connect/restart catch their own errors and answer 200 (protocols §4.1).
            raise UpstreamError(_message(body) or "Evolution reported an error",
                                code="gateway_error", status=502)
        return body

    async def connect(self, instance: str) -> Event | None:
        """Ask for a (new) QR. The answer may hold it, or ``{"count":0}`` (it comes later)."""
        body = await self._call("GET", f"/instance/connect/{quote(instance, safe='')}")
        return connect_answer(instance, body)

    async def connection_state(self, instance: str) -> Event | None:
        body = await self._call("GET", f"/instance/connectionState/{quote(instance, safe='')}")
        state = (body or {}).get("instance", {}).get("state") if isinstance(body, dict) else None
        if state not in STATES:
            return None
        return Event(upstream=NAME, instance=instance, cause="resync", state=state,
                     clear_qr=state != "connecting", clear_reason=state in ("open", "connecting"))

    async def logout(self, instance: str) -> None:
        await self._call("DELETE", f"/instance/logout/{quote(instance, safe='')}")

    async def fetch_instances(self) -> list[str]:
        body = await self._call("GET", "/instance/fetchInstances")
        if not isinstance(body, list):
            return []
        names = [row.get("name") or row.get("instanceName") for row in body if isinstance(row, dict)]
        return [n for n in names if isinstance(n, str) and n]


def connect_answer(instance: str, body: Any) -> Event | None:
    """Turn a ``GET /instance/connect`` answer into an event (or None for ``{"count":0}``)."""
    if not isinstance(body, dict):
        return None
    inner = body.get("instance")
    if isinstance(inner, dict) and inner.get("state") == "open":
        return Event(upstream=NAME, instance=instance, cause="connect", state="open", clear_qr=True,
                     clear_reason=True)
    code = body.get("code")
    if isinstance(code, str) and code:
        image = body.get("base64") if isinstance(body.get("base64"), str) else None
        pairing = body.get("pairingCode") if isinstance(body.get("pairingCode"), str) else None
        return Event(upstream=NAME, instance=instance, cause="connect", state="connecting",
                     qr=NewQR(code=code, image=image, pairing_code=pairing), clear_reason=True)
    return None


def _message(body: Any) -> str | None:
    """Evolution's error text: ``response.message`` (string or list) or ``message``."""
    if not isinstance(body, dict):
        return None
    msg = body.get("response", {}).get("message") if isinstance(body.get("response"), dict) else None
    msg = msg if msg is not None else body.get("message")
    if isinstance(msg, list):
        msg = "; ".join(str(m) for m in msg)
    if isinstance(msg, str) and msg and msg != "[object Object]":
        return msg[:300]
    return None
