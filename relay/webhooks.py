"""Webhooks in: authenticate, bound, parse, store, answer.

Answers (DESIGN.md): 200 once the event is stored (or ignored), 400 with a reason for a body that
is not a known event shape, 401 bad secret, 413 too large, 503 when it could not be stored or the
relay is saturated, so the gateway retries and nothing accepted is lost. Never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import webhook_allowed
from .core import Relay
from .errors import BadEventError, RelayError
from .gateways import evolution, wppconnect
from .gateways.payload import check_body
from .http import TooLarge, error, read_body
from .logs import Throttle
from .snapshot import Event

log = logging.getLogger("relay.webhooks")
Parser = Callable[[Any, "str | None"], "Event | None"]
# How long a webhook may wait for a free slot before the relay says 503 (busy, retry later).
SLOT_WAIT = 2.0
WARN_EVERY = 10.0

PARSERS: dict[str, Parser] = {
    "evolution": lambda body, hint: evolution.parse(body),
    "wppconnect": lambda body, hint: wppconnect.parse_webhook(body, session_hint=hint),
}
# Ignored events worth counting by name; anything else is "other". Label values must stay a
# small fixed set, or any sender could grow the metrics without bound.
KNOWN_IGNORED = frozenset({
    "instance.create", "instance.delete", "status.instance", "application.startup",
    "messages.upsert", "messages.update", "contacts.update", "chats.update", "presence.update",
    "onmessage", "onack", "onpresencechanged", "unreadmessages",
})


def _label(name: Any) -> str:
    return name if name in KNOWN_IGNORED else "other"


class WebhookEndpoint:
    """ASGI: ``POST /webhooks/<upstream>[/...]`` goes straight to :meth:`handle`, around the
    framework's routing and middleware (a fifth of the hot path's CPU); the rest passes through."""

    def __init__(self, app: ASGIApp, *, secret: str | None, max_body: int, max_inflight: int):
        self.app = app
        self.secret = secret
        self.max_body = max_body
        self.inflight = asyncio.Semaphore(max_inflight)
        self.throttle = Throttle(WARN_EVERY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/webhooks/") and scope["method"] == "POST":
            upstream, _, rest = path[len("/webhooks/"):].partition("/")
            parse = PARSERS.get(upstream)
            if parse is not None:
                core: Relay = scope["state"]["core"]  # lifespan state (relay.app)
                try:
                    response = await self.handle(core, Request(scope, receive), upstream, rest, parse)
                except Exception:  # a bug: say so in the log, answer like any other error
                    log.exception("webhook handler failed")
                    response = error(500, "internal", "the relay failed to handle this webhook")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def warn_rejected(self, upstream: str, status: int, why: str) -> None:
        """Say in the log why a gateway's webhooks are refused (at most every 10 s per kind): a
        wrong secret or URL otherwise shows only as a gateway retrying forever. Never logs the
        body."""
        held = self.throttle.ready(f"{upstream}:{status}")
        if held is not None:
            log.warning("refused a webhook from %s with %d: %s%s", upstream, status, why,
                        f" ({held} more since the last line)" if held else "")

    def split_secret(self, segments: list[str]) -> tuple[str | None, list[str]]:
        """``/webhooks/<upstream>/{secret}[/{event-suffix}]``: peel the secret off when there."""
        if self.secret is not None and segments and webhook_allowed(self.secret, None, segments[0]):
            return segments[0], segments[1:]
        return None, segments

    async def handle(self, core: Relay, request: Request, upstream: str, rest_path: str,
                     parse: Parser) -> Response:
        metrics = core.metrics
        path_secret, rest = self.split_secret([s for s in rest_path.split("/") if s])
        if not webhook_allowed(self.secret, request.headers.get("authorization"), path_secret):
            metrics.webhooks.labels(upstream, "-", "unauthorized").inc()
            self.warn_rejected(upstream, 401, "missing or wrong webhook secret")
            return error(401, "unauthorized", "missing or wrong webhook secret (send it as "
                         "'Authorization: Bearer <secret>' or as the path segment after "
                         f"/webhooks/{upstream}/)", {"WWW-Authenticate": "Bearer"})
        try:
            raw = await read_body(request, self.max_body)
        except TooLarge:
            metrics.webhooks.labels(upstream, "-", "too_large").inc()
            self.warn_rejected(upstream, 413, f"body over {self.max_body} bytes")
            return error(413, "too_large", f"body over {self.max_body} bytes; subscribe the "
                         "webhook to QR and connection events only")
        except ClientDisconnect:
            return error(400, "disconnected", "the client went away before sending the whole body")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            metrics.webhooks.labels(upstream, "-", "bad_json").inc()
            self.warn_rejected(upstream, 400, "body is not JSON")
            detail = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:120]
            return error(400, "bad_json", f"body is not JSON: {detail}")
        hint = request.query_params.get("session") or (rest[0] if upstream == "wppconnect" and rest else None)
        try:
            check_body(body)
            event = parse(body, hint)
        except BadEventError as exc:
            metrics.webhooks.labels(upstream, "-", "bad_event").inc()
            self.warn_rejected(upstream, 400, exc.detail)
            return error(400, exc.code, exc.detail)
        if event is None:
            name = body.get("event") if isinstance(body, dict) else None
            metrics.webhooks.labels(upstream, _label(name), "ignored").inc()
            return JSONResponse({"ok": True, "ignored": True})
        return await self.store(core, upstream, event)

    async def store(self, core: Relay, upstream: str, event: Event) -> Response:
        """Store under a bounded number of concurrent writers; 503 (retry later) when saturated."""
        metrics = core.metrics
        try:
            await asyncio.wait_for(self.inflight.acquire(), SLOT_WAIT)
        except asyncio.TimeoutError:
            metrics.webhooks.labels(upstream, event.cause, "busy").inc()
            return error(503, "busy", "the relay is saturated; retry", {"Retry-After": "5"})
        try:
            updated = await core.ingest(event)
        except RelayError as exc:
            metrics.webhooks.labels(upstream, event.cause, "unavailable").inc()
            return error(503, exc.code, exc.detail, {"Retry-After": "5"})
        except Exception as exc:  # e.g. Redis down: the gateway must retry, nothing is lost
            metrics.store_errors.inc()
            metrics.webhooks.labels(upstream, event.cause, "unavailable").inc()
            held = self.throttle.ready("store")
            if held is not None:  # an outage fails every webhook: one line every few seconds
                log.error("could not store a %s event (answered 503, the gateway retries): %s%s",
                          event.cause, exc.__class__.__name__,
                          f" ({held} more since the last line)" if held else "")
            return error(503, "store_unavailable", "the relay could not store the event; retry",
                         {"Retry-After": "5"})
        finally:
            self.inflight.release()
        metrics.webhooks.labels(upstream, event.cause, "updated" if updated else "unchanged").inc()
        return JSONResponse({"ok": True, "updated": updated})
