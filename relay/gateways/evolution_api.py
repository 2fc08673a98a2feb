"""Evolution API v2 REST: the few calls the relay makes (shared/protocols/evolution.md §4).

``connect`` and ``restart`` answer their own errors with HTTP 200 and ``{"error": true}`` (§4.1),
and ``connect`` may answer ``{"count":0}`` before the QR exists (§4.3).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import UpstreamError
from ..snapshot import Event, NewQR
from .evolution import NAME, STATES
from .http import request_json


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

    async def connect(self, instance: str, number: str | None = None) -> Event | None:
        """Ask for a (new) QR, with ``number`` also a pairing code. The answer may hold it, or
        ``{"count":0}`` (it comes later as an event)."""
        query = f"?number={quote(number, safe='')}" if number else ""
        body = await self._call("GET", f"/instance/connect/{quote(instance, safe='')}{query}")
        return connect_answer(instance, body)

    async def state_of(self, instance: str) -> Any:
        """``connectionState``'s ``instance.state`` as Evolution says it (any JSON value)."""
        body = await self._call("GET", f"/instance/connectionState/{quote(instance, safe='')}")
        return (body or {}).get("instance", {}).get("state") if isinstance(body, dict) else None

    async def connection_state(self, instance: str) -> Event | None:
        state = await self.state_of(instance)
        if state not in STATES:
            return None
        return Event(upstream=NAME, instance=instance, cause="resync", state=state,
                     clear_qr=state != "connecting")

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
        return Event(upstream=NAME, instance=instance, cause="connect", state="open", clear_qr=True)
    code = body.get("code")
    if isinstance(code, str) and code:
        image = body.get("base64") if isinstance(body.get("base64"), str) else None
        pairing = body.get("pairingCode") if isinstance(body.get("pairingCode"), str) else None
        return Event(upstream=NAME, instance=instance, cause="connect", state="connecting",
                     qr=NewQR(code=code, image=image, pairing_code=pairing))
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
