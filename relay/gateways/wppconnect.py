"""WPPConnect Server: webhook bodies and Socket.IO payloads → events.

Facts in shared/protocols/wppconnect.md: the webhook ``qrcode`` has no ``data:`` prefix while the
socket's has one (§8.8); ``session`` can be missing after a close-session (§8.2), so the URL may
name it; there is no "connected" webhook except ``status-find: inChat`` (§8.4); both spellings
``disconnectedMobile``/``desconnectedMobile`` exist (§4.3); events carry no timestamp.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import BadEventError
from ..names import HINT, valid_instance
from .dedupe import dedupe_key
from .payload import qr_parts
from ..reasons import reason
from ..snapshot import Event, NewQR

log = logging.getLogger("relay.wppconnect")
NAME = "wppconnect"
PNG_PREFIX = "data:image/png;base64,"

# status-find value → (snapshot state or None to keep it, reason code or None, its words when
# the code's default doesn't say enough, clear the QR?). WPPConnect's webhooks carry no timestamp
# and are posted concurrently (§4.1), so a late qrReadSuccess/isLogged could land after inChat:
# they only clear the QR and never move the state back from "open".
CLOSED = "close"
STATUS_FIND: dict[str, tuple[str | None, str | None, str | None, bool]] = {
    "notLogged": ("connecting", None, None, False),
    "qrReadSuccess": (None, None, None, True),
    "isLogged": (None, None, None, True),
    "inChat": ("open", None, None, True),
    "qrReadFail": (CLOSED, "scan_failed", None, True),
    "qrReadError": (CLOSED, "scan_failed", None, True),
    "autocloseCalled": (CLOSED, "timed_out", None, True),
    # After a QR timeout only browserClose reaches us (autocloseCalled is swallowed, §5.3); it
    # also comes when the browser dies for any other reason (see WEAK).
    "browserClose": (CLOSED, "closed", "The gateway closed WhatsApp.", True),
    "serverClose": (CLOSED, "closed", "The gateway closed WhatsApp.", True),
    "phoneNotConnected": (CLOSED, "closed", "The phone did not finish linking. Keep it online "
                                            "and try again.", True),
    "disconnectedMobile": (CLOSED, "logged_out", None, True),
    # The spelling of wppconnect ≤ 1.37.6 / server ≤ 2.8.6.
    "desconnectedMobile": (CLOSED, "logged_out", None, True),
}
# Generic closes that never hide a more telling reason already shown (browserClose follows
# disconnectedMobile and autocloseCalled, in either order).
WEAK = ("browserClose", "serverClose")


def _session(body: dict[str, Any], hint: str | None) -> str:
    session = body.get("session")
    if not isinstance(session, str) or not session.strip():
        session = hint
    if session is None or (isinstance(session, str) and not session.strip()):
        raise BadEventError("no session name: WPPConnect omits it after a close-session, so add "
                            "?session=<name> to the webhook URL")
    if not valid_instance(session):
        raise BadEventError(f"'session': {HINT}")
    return session


def image_url(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    return raw if raw.startswith("data:") else PNG_PREFIX + raw


def parse_webhook(body: Any, *, session_hint: str | None = None) -> Event | None:
    """A WPPConnect webhook body → event; None for events a QR screen does not need."""
    if not isinstance(body, dict):
        raise BadEventError("body must be a JSON object (a WPPConnect webhook)")
    name = body.get("event")
    if not isinstance(name, str) or not name:
        raise BadEventError("missing 'event' (expected e.g. \"qrcode\" or \"status-find\")")
    if name not in ("qrcode", "status-find", "closesession", "logoutsession", "phoneCode"):
        return None
    session = _session(body, session_hint)
    common: dict[str, Any] = dict(upstream=NAME, instance=session, cause=name)

    if name == "qrcode":
        code, image = body.get("urlcode"), image_url(body.get("qrcode"))
        if not (isinstance(code, str) and code) and image is None:
            raise BadEventError("qrcode: needs 'urlcode' or 'qrcode'")
        code, image = qr_parts(code if isinstance(code, str) and code else None, image, "qrcode")
        return Event(**common, state="connecting", clear_profile=True,
                     qr=NewQR(code=code if isinstance(code, str) and code else None, image=image),
                     dedupe_key=dedupe_key([session, name, code, image]))
    if name == "phoneCode":
        pairing = body.get("phoneCode")
        if not isinstance(pairing, str) or not pairing:
            raise BadEventError("phoneCode: needs 'phoneCode'")
        return Event(**common, state="connecting",
                     qr=NewQR(code=None, image=None, pairing_code=pairing),
                     dedupe_key=dedupe_key([session, "phoneCode", pairing]))  # = the socket's copy
    if name == "status-find":
        status = body.get("status")
        if not isinstance(status, str):
            raise BadEventError("status-find: 'status' must be a string")
        mapped = STATUS_FIND.get(status)
        if mapped is None:
            return None  # statuses of other forks (initBrowser, …) say nothing we can show
        state, code, words, clear_qr = mapped
        said = {"status": status}
        return Event(**common, state=state, reason=reason(code, said, words) if code else None,
                     reason_if_qr=reason("timed_out", said) if status == "browserClose" else None,
                     weak_reason=status in WEAK, clear_qr=clear_qr, clear_profile=state == CLOSED)
    if name == "closesession":
        return Event(**common, state=CLOSED, clear_qr=True, reason=reason(
            "closed", {"event": name}, "The WhatsApp session was closed on the gateway."))
    return Event(**common, state=CLOSED, clear_qr=True, clear_profile=True,
                 reason=reason("logged_out", {"event": name}))


# -- Socket.IO (protocols §3) ------------------------------------------------------------------
SOCKET_EVENTS = ("qrCode", "session-logged", "session-error", "phoneCode")


def parse_socket(event_name: str, data: Any) -> Event | None:
    """One Socket.IO event (name + first argument) → event; None for what the relay ignores.

    The socket broadcasts every session's events to every client, so ``session`` is the filter
    (§3). It is missing after a close-session (§8.2): such events are dropped here (the gateway
    resyncs instead). ``whatsapp-status`` carries only ``false`` and no session: ignored.
    Raises :class:`BadEventError` for a known event with an unusable payload.
    """
    if event_name == "session-error":
        # A bare string: the session whose start() failed (createSessionUtil.ts:257).
        if not valid_instance(data):
            raise BadEventError("session-error: the payload must be the session name")
        return Event(upstream=NAME, instance=data, cause=event_name, state=CLOSED, clear_qr=True,
                     clear_profile=True, reason=reason("closed", {"event": event_name},
                                                       "The gateway could not start WhatsApp."))
    if event_name not in SOCKET_EVENTS:
        return None
    if not isinstance(data, dict):
        raise BadEventError(f"{event_name}: the payload must be an object")
    session = data.get("session")
    if not valid_instance(session):
        log.debug("ignored a socket %s without a session name (after a close-session, §8.2)", event_name)
        return None
    common: dict[str, Any] = dict(upstream=NAME, instance=session, cause=event_name)
    if event_name == "qrCode":
        image = image_url(data.get("data"))
        if image is None:
            raise BadEventError("qrCode: 'data' must be the QR image")
        # No `urlcode` on the socket: an image-only QR, merged with the webhook's copy (which
        # has the code) by the rules.
        return Event(**common, state="connecting", clear_profile=True,
                     qr=NewQR(code=None, image=image), dedupe_key=dedupe_key([session, event_name, image]))
    if event_name == "phoneCode":
        pairing = data.get("data")
        if not isinstance(pairing, str) or not pairing:
            raise BadEventError("phoneCode: 'data' must be the link code")
        return Event(**common, state="connecting",
                     qr=NewQR(code=None, image=None, pairing_code=pairing),
                     dedupe_key=dedupe_key([session, "phoneCode", pairing]))
    if data.get("status") is not True:  # session-logged is always {status: true}
        return None
    return Event(**common, state="open", clear_qr=True)
