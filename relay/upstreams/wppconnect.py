"""WPPConnect Server: webhook bodies and Socket.IO payloads → events; REST control out.

Facts in shared/protocols/wppconnect.md: the webhook ``qrcode`` has no ``data:`` prefix while the
socket's has one (§8.8); ``session`` can be missing after a close-session (§8.2), so the URL may
name it; there is no "connected" webhook except ``status-find: inChat`` (§8.4); both spellings
``disconnectedMobile``/``desconnectedMobile`` exist (§4.3); events carry no timestamp. REST needs
a per-session bearer token made from the secret key (§1); ``status-session`` keeps serving the
old QR after CONNECTED/CLOSED (§8.1) and ``start-session`` answers the state before the start (§8.6).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import BadEventError, UpstreamError
from ..snapshot import Event, NewQR, Reason
from .http import request_json

log = logging.getLogger("relay.wppconnect")
NAME = "wppconnect"
PNG_PREFIX = "data:image/png;base64,"

# status-find value → (snapshot state or None to keep it, reason or None, clear the QR?)
# WPPConnect's webhooks carry no timestamp and are posted concurrently (§4.1), so a late
# qrReadSuccess/isLogged could land after inChat: they only clear the QR and never move the
# state back from "open".
_CLOSED = "close"
STATUS_FIND: dict[str, tuple[str | None, Reason | None, bool]] = {
    "notLogged": ("connecting", None, False),
    "qrReadSuccess": (None, None, True),
    "isLogged": (None, None, True),
    "inChat": ("open", None, True),
    "qrReadFail": (_CLOSED, Reason(code="qrReadFail", message="the QR code could not be read"), True),
    "qrReadError": (_CLOSED, Reason(code="qrReadError", message="the phone could not be authenticated"), True),
    "autocloseCalled": (_CLOSED, Reason(code="autocloseCalled", message="the QR code was not scanned in time"), True),
    # After a QR timeout only browserClose reaches us (autocloseCalled is swallowed, §5.3).
    "browserClose": (_CLOSED, Reason(code="browserClose", message="the gateway closed the WhatsApp "
                                     "session (a QR code not scanned in time ends it too)"), True),
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
                     qr=NewQR(code=None, image=None, pairing_code=pairing),
                     dedupe_key=_key([session, "phoneCode", pairing]))  # = the socket's copy
    if name == "status-find":
        status = body.get("status")
        if not isinstance(status, str):
            raise BadEventError("status-find: 'status' must be a string")
        mapped = STATUS_FIND.get(status)
        if mapped is None:
            return None  # statuses of other forks (initBrowser, …) say nothing we can show
        state, reason, clear_qr = mapped
        return Event(**common, state=state, reason=reason,
                     clear_reason=reason is None and state is not None,
                     clear_qr=clear_qr, clear_profile=state == _CLOSED,
                     keep_close_reason=status in ("browserClose", "serverClose"))
    if name == "closesession":
        return Event(**common, state=_CLOSED, clear_qr=True,
                     reason=Reason(code="closesession", message="the session was closed on the gateway"))
    return Event(**common, state=_CLOSED, clear_qr=True, clear_profile=True,
                 reason=Reason(code="logout", message="logged out"))


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
        if not isinstance(data, str) or not data.strip() or len(data) > 200:
            raise BadEventError("session-error: the payload must be the session name")
        return Event(upstream=NAME, instance=data, cause=event_name, state=_CLOSED, clear_qr=True,
                     clear_profile=True,
                     reason=Reason(code="session-error", message="the gateway could not start the WhatsApp session"))
    if event_name not in SOCKET_EVENTS:
        return None
    if not isinstance(data, dict):
        raise BadEventError(f"{event_name}: the payload must be an object")
    session = data.get("session")
    if not isinstance(session, str) or not session.strip() or len(session) > 200:
        log.debug("ignored a socket %s without a session name (after a close-session, §8.2)", event_name)
        return None
    common: dict[str, Any] = dict(upstream=NAME, instance=session, cause=event_name)
    if event_name == "qrCode":
        image = image_url(data.get("data"))
        if image is None:
            raise BadEventError("qrCode: 'data' must be the QR image")
        # No `urlcode` on the socket: an image-only QR, merged with the webhook's copy (which
        # has the code) by the rules.
        return Event(**common, state="connecting", clear_reason=True, clear_profile=True,
                     qr=NewQR(code=None, image=image), dedupe_key=_key([session, event_name, image]))
    if event_name == "phoneCode":
        pairing = data.get("data")
        if not isinstance(pairing, str) or not pairing:
            raise BadEventError("phoneCode: 'data' must be the link code")
        return Event(**common, state="connecting", clear_reason=True,
                     qr=NewQR(code=None, image=None, pairing_code=pairing),
                     dedupe_key=_key([session, "phoneCode", pairing]))
    if data.get("status") is not True:  # session-logged is always {status: true}
        return None
    return Event(**common, state="open", clear_qr=True, clear_reason=True)


# -- REST (protocols §1, §2) -------------------------------------------------------------------
# `client.status` → snapshot state (§2.1); `null`/no client is reported as CLOSED (§2.3).
SESSION_STATES = {"CLOSED": _CLOSED, "INITIALIZING": "connecting", "QRCODE": "connecting",
                  "PHONECODE": "connecting", "CONNECTED": "open"}


def session_state(session: str, body: Any, *, cause: str, starting: bool = False) -> Event | None:
    """A ``status-session`` (or ``start-session``) answer → event; None if it says nothing usable.

    ``qrcode``/``urlcode`` are trusted only while ``status`` is QRCODE: the server never clears
    ``urlcode``, so CONNECTED and CLOSED answers still carry the old QR (§8.1). ``starting``: the
    answer of a start-session, which describes the state *before* the start (§8.6): a CLOSED
    session is now starting, so it reads as connecting.
    """
    status = body.get("status") if isinstance(body, dict) else None
    state = SESSION_STATES.get(status) if isinstance(status, str) else None
    if state is None:
        return None
    common: dict[str, Any] = dict(upstream=NAME, instance=session, cause=cause)
    if status == "QRCODE":
        assert isinstance(body, dict)
        code, image = body.get("urlcode"), image_url(body.get("qrcode"))
        if isinstance(code, str) and code:
            # `qrcode` is the server's re-render of `urlcode` (§8.8): same code, other pixels.
            return Event(**common, state="connecting", clear_reason=True, clear_profile=True,
                         qr=NewQR(code=code, image=image))
        return Event(**common, state="connecting", clear_reason=True, clear_profile=True)
    if status == "PHONECODE":  # the link code is not in the answer: keep the one we have
        return Event(**common, state="connecting", clear_reason=True, clear_profile=True)
    if state == _CLOSED and starting:
        return Event(**common, state="connecting", clear_qr=True, clear_reason=True, clear_profile=True)
    if state == _CLOSED:
        # No reason here: the webhook's (more specific) one is kept.
        return Event(**common, state=_CLOSED, clear_qr=True, clear_profile=True)
    return Event(**common, state=state, clear_qr=True, clear_reason=True,
                 clear_profile=state != "open")


class WPPConnectClient:
    """The REST calls the relay makes to WPPConnect Server, errors in the gateway's own words.

    Every session route needs that session's bearer token (§1): generated once from the secret
    key and cached (tokens never expire; a changed SECRET_KEY invalidates them, hence one
    regenerate-and-retry on a 401). Neither tokens nor the secret (it is in some paths) nor QR
    data are ever logged or put in error details.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret_key: str, timeout: float):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.secret_key = secret_key
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens: dict[str, str] = {}

    async def _request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                       body: Any = None) -> tuple[int, Any]:
        # Never the URL in errors: some paths hold the secret key (request_json names the base).
        return await request_json(self.session, method, self.base_url, path, gateway="WPPConnect",
                                  timeout=self.timeout, headers=headers, body=body)

    @staticmethod
    def _fail(status: int, body: Any) -> UpstreamError:
        if status == 400 and _message(body) == BAD_SECRET:
            return UpstreamError(SECRET_HINT, code="gateway_unauthorized", status=502)
        return UpstreamError(_message(body) or f"WPPConnect answered HTTP {status}",
                             code="gateway_error", status=502)

    async def token(self, session: str, *, fresh: bool = False) -> str:
        """The session's bearer token: ``POST /api/{session}/{secret}/generate-token`` (§1)."""
        if not fresh and session in self._tokens:
            return self._tokens[session]
        status, body = await self._request(
            "POST", f"/api/{quote(session, safe='')}/{quote(self.secret_key, safe='')}/generate-token")
        if status >= 400:
            raise self._fail(status, body)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError("WPPConnect's generate-token answer has no token",
                                code="gateway_error", status=502)
        self._tokens[session] = token
        return token

    async def _call(self, method: str, session: str, action: str, body: Any = None) -> Any:
        """``/api/{session}/{action}`` with the session's token; one fresh token on a 401."""
        path = f"/api/{quote(session, safe='')}/{action}"
        for fresh in (False, True):
            token = await self.token(session, fresh=fresh)
            status, answer = await self._request(method, path, body=body,
                                                 headers={"Authorization": f"Bearer {token}"})
            if status != 401:
                break
            self._tokens.pop(session, None)
        if status == 401:
            raise UpstreamError("WPPConnect refused a fresh session token (check "
                                "RELAY_WPPCONNECT_SECRET_KEY)", code="gateway_unauthorized", status=502)
        if status >= 400:
            raise self._fail(status, answer)
        return answer

    async def start_session(self, session: str) -> Event | None:
        """``POST start-session`` with an EMPTY body: a non-empty one would replace the session's
        stored config, webhook included (§2.2, §8.9). The answer is the state before the start."""
        answer = await self._call("POST", session, "start-session", {})
        return session_state(session, answer, cause="connect", starting=True)

    async def status_session(self, session: str) -> Event | None:
        """``GET status-session`` as an event (for resync). No body, so no Content-Type (§10)."""
        answer = await self._call("GET", session, "status-session")
        return session_state(session, answer, cause="resync")

    async def logout_session(self, session: str) -> None:
        """``POST logout-session``. Not connected → 404 in Portuguese, raised as gateway_error."""
        await self._call("POST", session, "logout-session")

    async def show_all_sessions(self) -> list[str]:
        """``GET /api/{secret}/show-all-sessions``: the persisted session names (§2.8). Needs only
        the secret, so it proves reachability and the key without a bcrypt token (the probe)."""
        status, body = await self._request("GET", f"/api/{quote(self.secret_key, safe='')}/show-all-sessions")
        if status >= 400:
            raise self._fail(status, body)
        names = body.get("response") if isinstance(body, dict) else None
        return [n for n in names if isinstance(n, str) and n] if isinstance(names, list) else []


BAD_SECRET = "The SECRET_KEY is incorrect"
SECRET_HINT = "WPPConnect refused the secret key (check RELAY_WPPCONNECT_SECRET_KEY)"


def _message(body: Any) -> str | None:
    """WPPConnect's error text: ``message`` or ``error`` (§1, §2.7)."""
    if not isinstance(body, dict):
        return None
    for key in ("message", "error"):
        msg = body.get(key)
        if isinstance(msg, str) and msg:
            return msg[:300]
    return None
