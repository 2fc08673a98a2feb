"""Evolution API v2: webhook and socket envelopes → events.

Facts behind the rules are in shared/protocols/evolution.md: the same envelope reaches every
transport (§0.1), ``count`` is not in events (§0.2), ``date_time`` is local time with a misleading
``Z`` (§2.2), and the "QR limit reached" shape reuses ``qrcode.updated`` (§2.6).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import BadEventError
from ..names import HINT, valid_instance
from .dedupe import dedupe_key
from .payload import qr_parts
from ..reasons import Reason, reason
from ..snapshot import Event, NewQR, Profile

NAME = "evolution"
STATES = {"connecting", "open", "close", "refused"}
# Baileys DisconnectReason codes of a close (protocols §2.6) → reason code, and for the codes that
# only "closed" covers, the words a shop owner can act on.
CLOSE_CODES = {401: "logged_out", 408: "timed_out", 428: "qr_limit", 440: "replaced"}
CLOSE_WORDS = {
    402: "The WhatsApp account is not available.",
    403: "WhatsApp refused this number.",
    406: "WhatsApp rejected this session. Link the phone again.",
    500: "The WhatsApp session is damaged. Link the phone again.",
}
REMOVED = ("remove.instance", "instance.delete")


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


def close_reason(code: Any) -> Reason:
    """The reason of a ``connection.update`` close, from Evolution's ``statusReason``."""
    gateway = {"statusReason": code}
    if isinstance(code, int) and code in CLOSE_CODES:
        return reason(CLOSE_CODES[code], gateway)
    return reason("closed", gateway, CLOSE_WORDS.get(code) if isinstance(code, int) else None)


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
    name = event_name(raw_event)
    if name == "error":
        # Evolution's errors webhook: no instance, and its body carries the GLOBAL api key.
        # Nothing to show; answered 200 so that it is never retried, and never logged.
        return None
    instance = body.get("instance", instance_hint)
    if instance is None:
        raise BadEventError("missing 'instance' (the Evolution instance name)")
    if not valid_instance(instance):
        raise BadEventError(f"'instance': {HINT}")
    data = body.get("data")
    ts = parse_time(body.get("date_time"))
    # The same event reaches us by webhook and by socket (different key order, `destination`
    # only on webhooks), and again on every retry: key on what identifies it. A QR is
    # identified by its code, so its ~6 KB image need not be serialised for the key.
    qr = data.get("qrcode") if isinstance(data, dict) else None
    qr_code = qr.get("code") if isinstance(qr, dict) else None
    ident = ["qr", qr_code, qr.get("pairingCode")] if isinstance(qr, dict) and isinstance(
        qr_code, str) else data
    key = dedupe_key([name, instance, body.get("date_time"), ident])
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
            code, image = qr_parts(code, image or None, "qrcode.updated")
            pairing = qr.get("pairingCode")
            if isinstance(pairing, str) and len(pairing) > 64:
                raise BadEventError("qrcode.updated: data.qrcode.pairingCode is too long")
            return Event(**common, state="connecting",
                         qr=NewQR(code=code, image=image or None,
                                  pairing_code=pairing if isinstance(pairing, str) else None),
                         clear_profile=True)
        if "message" in data or "statusCode" in data:
            # QRCODE_LIMIT reached: Evolution stops producing QRs until connect is called again.
            said = {k: data[k] for k in ("statusCode", "message") if isinstance(data.get(k), (int, str))}
            return Event(**common, state="refused", clear_qr=True, reason=reason("qr_limit", said))
        raise BadEventError("qrcode.updated: data has neither 'qrcode' nor the limit 'message'")

    if name == "connection.update":
        if not isinstance(data, dict):
            raise BadEventError("connection.update needs a 'data' object")
        state = data.get("state")
        if not isinstance(state, str) or state not in STATES:
            raise BadEventError(f"connection.update: unknown state {str(state)[:40]!r}")
        if state == "open":
            profile = Profile(wuid=_str(data.get("wuid")), name=_str(data.get("profileName")),
                              pictureUrl=_str(data.get("profilePictureUrl")))
            return Event(**common, state="open", clear_qr=True, profile=profile)
        if state == "connecting":
            # A new socket: the previous socket's QR can no longer be scanned.
            return Event(**common, state="connecting", clear_qr=True)
        code = data.get("statusReason")
        why = reason("qr_limit", {"statusReason": code}) if state == "refused" else close_reason(code)
        return Event(**common, state=state, clear_qr=True, clear_profile=True, reason=why)

    if name == "logout.instance":
        return Event(**common, state="close", clear_qr=True, clear_profile=True,
                     reason=reason("logged_out", {"event": name}))
    if name in REMOVED:
        # The five events of a deletion come in any order (fixtures/CAPTURED.md); the rules keep
        # "removed" over the logout ones.
        return Event(**common, state="close", clear_qr=True, clear_profile=True,
                     reason=reason("removed", {"event": name}))
    return None


def _str(value: Any) -> str | None:
    """A profile field: a string, bounded (a picture URL is long, but not megabytes)."""
    return value[:2048] if isinstance(value, str) and value else None
