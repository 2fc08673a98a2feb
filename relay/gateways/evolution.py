"""Evolution API v2: webhook and socket envelopes → events.

Facts behind the rules are in shared/protocols/evolution.md: the same envelope reaches every
transport (§0.1), ``count`` is not in events (§0.2), ``date_time`` is local time with a misleading
``Z`` (§2.2), and the "QR limit reached" shape reuses ``qrcode.updated`` (§2.6).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ..errors import BadEventError
from ..snapshot import Event, NewQR, Profile, Reason

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
