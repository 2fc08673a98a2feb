"""WPPConnect Server: webhook bodies and Socket.IO payloads → events.

Facts in shared/protocols/wppconnect.md: the webhook ``qrcode`` has no ``data:`` prefix while the
socket's has one (§8.8); ``session`` can be missing after a close-session (§8.2), so the URL may
name it; there is no "connected" webhook except ``status-find: inChat`` (§8.4); both spellings
``disconnectedMobile``/``desconnectedMobile`` exist (§4.3); events carry no timestamp.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import BadEventError
from ..snapshot import Event, NewQR, Reason

NAME = "wppconnect"
PNG_PREFIX = "data:image/png;base64,"

# status-find value → (snapshot state, reason or None, clear the QR?)
_CLOSED = "close"
STATUS_FIND: dict[str, tuple[str, Reason | None, bool]] = {
    "notLogged": ("connecting", None, False),
    "qrReadSuccess": ("connecting", None, True),
    "isLogged": ("connecting", None, True),
    "inChat": ("open", None, True),
    "qrReadFail": (_CLOSED, Reason(code="qrReadFail", message="the QR code could not be read"), True),
    "qrReadError": (_CLOSED, Reason(code="qrReadError", message="the phone could not be authenticated"), True),
    "autocloseCalled": (_CLOSED, Reason(code="autocloseCalled", message="the QR code was not scanned in time"), True),
    "browserClose": (_CLOSED, Reason(code="browserClose", message="the gateway closed the WhatsApp session"), True),
    "serverClose": (_CLOSED, Reason(code="serverClose", message="the gateway closed the WhatsApp session"), True),
    "phoneNotConnected": (_CLOSED, Reason(code="phoneNotConnected", message="the phone did not finish syncing"), True),
    "disconnectedMobile": (_CLOSED, Reason(code="disconnectedMobile", message="logged out on the phone"), True),
    # The spelling of wppconnect ≤ 1.37.6 / server ≤ 2.8.6.
    "desconnectedMobile": (_CLOSED, Reason(code="disconnectedMobile", message="logged out on the phone"), True),
}


def _key(parts: list[Any]) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(),
                           digest_size=16).hexdigest()


def _session(body: dict[str, Any], hint: str | None) -> str:
    session = body.get("session")
    if not isinstance(session, str) or not session.strip():
        session = hint
    if not isinstance(session, str) or not session.strip() or len(session) > 200:
        raise BadEventError("no session name: WPPConnect omits it after a close-session, so add "
                            "?session=<name> to the webhook URL")
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
        return Event(**common, state="connecting", clear_reason=True, clear_profile=True,
                     qr=NewQR(code=code if isinstance(code, str) and code else None, image=image),
                     dedupe_key=_key([session, name, code, image]))
    if name == "phoneCode":
        pairing = body.get("phoneCode")
        if not isinstance(pairing, str) or not pairing:
            raise BadEventError("phoneCode: needs 'phoneCode'")
        return Event(**common, state="connecting", clear_reason=True,
                     qr=NewQR(code=None, image=None, pairing_code=pairing))
    if name == "status-find":
        status = body.get("status")
        if not isinstance(status, str):
            raise BadEventError("status-find: 'status' must be a string")
        mapped = STATUS_FIND.get(status)
        if mapped is None:
            return None  # statuses of other forks (initBrowser, …) say nothing we can show
        state, reason, clear_qr = mapped
        return Event(**common, state=state, reason=reason, clear_reason=reason is None,
                     clear_qr=clear_qr, clear_profile=state == _CLOSED)
    if name == "closesession":
        return Event(**common, state=_CLOSED, clear_qr=True,
                     reason=Reason(code="closesession", message="the session was closed on the gateway"))
    return Event(**common, state=_CLOSED, clear_qr=True, clear_profile=True,
                 reason=Reason(code="logout", message="logged out"))
