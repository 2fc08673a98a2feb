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
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import webhook_allowed
from .core import Relay
from .errors import BadEventError, RelayError
from .gateways import evolution, wppconnect
from .gateways.payload import check_body
from .http import TooLarge, read_body
from .logs import Throttle
from .snapshot import Event
from .wire import decode

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


@dataclass(frozen=True)
class Answer:
    """A webhook's answer, whatever carries it (ASGI, or the HTTP fast path)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def error(cls, status: int, code: str, detail: str, **headers: str) -> "Answer":
        return cls(status, json.dumps({"error": code, "detail": detail}).encode(),
                   tuple((k.replace("_", "-"), v) for k, v in headers.items()))

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json",
                        headers=dict(self.headers))


STORED = {True: Answer(200, b'{"ok":true,"updated":true}'),
          False: Answer(200, b'{"ok":true,"updated":false}')}
IGNORED = Answer(200, b'{"ok":true,"ignored":true}')
RETRY = {"Retry_After": "5"}


class Webhooks:
    """``POST /webhooks/<upstream>[/{secret}][/{suffix}]``: authenticate, bound, parse, store."""

    def __init__(self, *, secret: str | None, max_body: int, max_inflight: int):
        self.secret = secret
        self.max_body = max_body
        self.inflight = asyncio.Semaphore(max_inflight)
        self.throttle = Throttle(WARN_EVERY)

    @staticmethod
    def route(path: str) -> tuple[str, str, Parser] | None:
        """(upstream, the rest of the path, its parser) for a webhook path, else None."""
        if not path.startswith("/webhooks/"):
            return None
        upstream, _, rest = path[len("/webhooks/"):].partition("/")
        parse = PARSERS.get(upstream)
        return (upstream, rest, parse) if parse is not None else None

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

    def allowed(self, upstream: str, rest_path: str, authorization: str | None) -> tuple[bool, list[str]]:
        """Is the request authentic? And the path's segments after the secret."""
        path_secret, rest = self.split_secret([s for s in rest_path.split("/") if s])
        return webhook_allowed(self.secret, authorization, path_secret), rest

    def unauthorized(self, core: Relay, upstream: str) -> Answer:
        core.metrics.count_webhook(upstream, "-", "unauthorized")
        self.warn_rejected(upstream, 401, "missing or wrong webhook secret")
        return Answer.error(401, "unauthorized", "missing or wrong webhook secret (send it as "
                            "'Authorization: Bearer <secret>' or as the path segment after "
                            f"/webhooks/{upstream}/)", WWW_Authenticate="Bearer")

    def too_large(self, core: Relay, upstream: str) -> Answer:
        core.metrics.count_webhook(upstream, "-", "too_large")
        self.warn_rejected(upstream, 413, f"body over {self.max_body} bytes")
        return Answer.error(413, "too_large", f"body over {self.max_body} bytes; subscribe the "
                            "webhook to QR and connection events only")

    async def answer(self, core: Relay, upstream: str, rest: list[str], parse: Parser, raw: bytes,
                     session: str | None) -> Answer:
        """The answer to an authentic webhook whose whole body is ``raw``."""
        metrics = core.metrics
        try:
            body = decode(raw)  # orjson, else json (the same answers, ~2x faster)
        except (ValueError, RecursionError) as exc:
            metrics.count_webhook(upstream, "-", "bad_json")
            self.warn_rejected(upstream, 400, "body is not JSON")
            detail = "nested too deep" if isinstance(exc, RecursionError) else str(exc)[:120]
            return Answer.error(400, "bad_json", f"body is not JSON: {detail}")
        hint = session or (rest[0] if upstream == "wppconnect" and rest else None)
        try:
            check_body(body)
            event = parse(body, hint)
        except BadEventError as exc:
            metrics.count_webhook(upstream, "-", "bad_event")
            self.warn_rejected(upstream, 400, exc.detail)
            return Answer.error(400, exc.code, exc.detail)
        if event is None:
            name = body.get("event") if isinstance(body, dict) else None
            metrics.count_webhook(upstream, _label(name), "ignored")
            return IGNORED
        return await self.store(core, upstream, event)

    async def store(self, core: Relay, upstream: str, event: Event) -> Answer:
        """Store under a bounded number of concurrent writers; 503 (retry later) when saturated."""
        metrics = core.metrics
        try:
            if self.inflight.locked():  # (wait_for costs a task: only when it must wait)
                await asyncio.wait_for(self.inflight.acquire(), SLOT_WAIT)
            else:
                await self.inflight.acquire()
        except asyncio.TimeoutError:
            metrics.count_webhook(upstream, event.cause, "busy")
            return Answer.error(503, "busy", "the relay is saturated; retry", **RETRY)
        try:
            updated = await core.ingest(event)
        except RelayError as exc:
            metrics.count_webhook(upstream, event.cause, "unavailable")
            return Answer.error(503, exc.code, exc.detail, **RETRY)
        except Exception as exc:  # e.g. Redis down: the gateway must retry, nothing is lost
            metrics.store_errors.inc()
            metrics.count_webhook(upstream, event.cause, "unavailable")
            held = self.throttle.ready("store")
            if held is not None:  # an outage fails every webhook: one line every few seconds
                log.error("could not store a %s event (answered 503, the gateway retries): %s%s",
                          event.cause, exc.__class__.__name__,
                          f" ({held} more since the last line)" if held else "")
            return Answer.error(503, "store_unavailable", "the relay could not store the event; "
                                "retry", **RETRY)
        finally:
            self.inflight.release()
        metrics.count_webhook(upstream, event.cause, "updated" if updated else "unchanged")
        return STORED[updated]


class WebhookEndpoint:
    """ASGI: ``POST /webhooks/<upstream>[/...]`` goes straight to :class:`Webhooks`, around the
    framework's routing and middleware; the rest passes through. (Under ``relay serve`` most
    webhooks never get here: relay/internals/http.py answers them without ASGI.)"""

    def __init__(self, app: ASGIApp, webhooks: Webhooks):
        self.app = app
        self.webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.webhooks.route(scope["path"]) if scope["type"] == "http" \
            and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        core: Relay = scope["state"]["core"]  # lifespan state (relay.app)
        try:
            answer = await self.handle(core, Request(scope, receive), *route)
        except Exception:  # a bug: say so in the log, answer like any other error
            log.exception("webhook handler failed")
            answer = Answer.error(500, "internal", "the relay failed to handle this webhook")
        await answer.response()(scope, receive, send)

    async def handle(self, core: Relay, request: Request, upstream: str, rest_path: str,
                     parse: Parser) -> Answer:
        hooks = self.webhooks
        ok, rest = hooks.allowed(upstream, rest_path, request.headers.get("authorization"))
        if not ok:
            return hooks.unauthorized(core, upstream)
        try:
            raw = await read_body(request, hooks.max_body)
        except TooLarge:
            return hooks.too_large(core, upstream)
        except ClientDisconnect:
            return Answer.error(400, "disconnected", "the client went away before sending the "
                                "whole body")
        return await hooks.answer(core, upstream, rest, parse, raw, request.query_params.get("session"))
