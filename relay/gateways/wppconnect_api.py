"""WPPConnect Server REST: the calls the relay makes (shared/protocols/wppconnect.md §1, §2).

REST needs a per-session bearer token made from the secret key (§1); ``status-session`` keeps
serving the old QR after CONNECTED/CLOSED (§8.1) and ``start-session`` answers the state before
the start (§8.6).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import UpstreamError
from ..snapshot import Event, NewQR
from .http import request_json
from .wppconnect import CLOSED, NAME, image_url

# -- REST (protocols §1, §2) -------------------------------------------------------------------
# `client.status` → snapshot state (§2.1); `null`/no client is reported as CLOSED (§2.3).
SESSION_STATES = {"CLOSED": CLOSED, "INITIALIZING": "connecting", "QRCODE": "connecting",
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
            return Event(**common, state="connecting", clear_profile=True,
                         qr=NewQR(code=code, image=image))
        return Event(**common, state="connecting", clear_profile=True)
    if status == "PHONECODE":  # the link code is not in the answer: keep the one we have
        return Event(**common, state="connecting", clear_profile=True)
    if state == CLOSED and starting:
        return Event(**common, state="connecting", clear_qr=True, clear_profile=True)
    if state == CLOSED:
        # No reason here: the webhook's (more specific) one is kept.
        return Event(**common, state=CLOSED, clear_qr=True, clear_profile=True)
    return Event(**common, state=state, clear_qr=True,
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

    async def start_session(self, session: str, phone: str | None = None, *,
                            forget_phone: bool = False) -> Event | None:
        """``POST start-session``, with ``phone`` for a pairing code. Otherwise with an EMPTY
        body: a non-empty one replaces the session's stored config, its webhook included
        (§2.2, §8.9) — except with ``forget_phone``, when the stored config holds a phone
        number (an empty body would bring it back) and a QR is wanted instead. The answer is
        the state before the start."""
        body: dict[str, Any] = {"phone": phone} if phone else {"waitQrCode": False} if forget_phone else {}
        answer = await self._call("POST", session, "start-session", body)
        return session_state(session, answer, cause="connect", starting=True)

    async def close_session(self, session: str) -> None:
        """``POST close-session`` (keeps the login data; answers 500 during the QR phase, but
        still resets the session so that the next start-session starts, §2.1)."""
        await self._call("POST", session, "close-session")

    async def status_session(self, session: str) -> Event | None:
        """``GET status-session`` as an event (for resync). No body, so no Content-Type (§10)."""
        return session_state(session, await self.status_answer(session), cause="resync")

    async def status_answer(self, session: str) -> Any:
        """``GET status-session``'s answer as WPPConnect gives it."""
        return await self._call("GET", session, "status-session")

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
