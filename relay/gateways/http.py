"""One REST call to a gateway, with the failures every gateway shares turned into clear errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ..errors import UpstreamError


async def request_json(session: aiohttp.ClientSession, method: str, base_url: str, path: str, *,
                       gateway: str, timeout: aiohttp.ClientTimeout,
                       headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    """``(HTTP status, JSON body or None)``. A timeout becomes a 504 ``gateway_timeout``, a network
    failure a 502 ``gateway_unreachable``; both name the gateway and its base URL, never the path
    (some gateways put secrets in paths). What the status means is the caller's business."""
    try:
        async with session.request(method, f"{base_url}{path}", headers=headers, json=body,
                                   timeout=timeout) as resp:
            text = await resp.text()
            status = resp.status
    except asyncio.TimeoutError:
        raise UpstreamError(f"{gateway} did not answer within {timeout.total:g} s",
                            code="gateway_timeout", status=504) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"cannot reach {gateway} at {base_url}: {exc.__class__.__name__}",
                            code="gateway_unreachable", status=502) from None
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None
