"""HTTP routes for browsers and operators: the page, snapshots, SSE, QR as SVG, control, health."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator

import segno
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .auth import Viewer, admin_allowed, bearer, verify_token
from .config import Settings
from .core import Relay
from .errors import AuthError, RelayError
from .http import TooLarge, error, from_exc, read_body
from .names import HINT, valid_instance
from .phone import BadNumber, phone_number
from .wire import sse_update

SSE_KEEPALIVE = 15.0


def core(request: Request) -> Relay:
    return request.state.core  # type: ignore[no-any-return]


def config(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def viewer_for(request: Request, instance: str) -> Viewer | JSONResponse:
    """The viewer token from ``Authorization: Bearer`` or ``?token=``, checked for this instance
    (whose name is checked first)."""
    if not valid_instance(instance):
        return error(400, "bad_instance", HINT)
    settings = config(request)
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    if admin_allowed(settings.admin_key, request.headers.get("authorization")):
        return Viewer(instances=frozenset({"*"}), expires_at=0)
    try:
        viewer = verify_token(settings.secret, token)
    except AuthError as exc:
        return error(401, "unauthorized", exc.detail, {"WWW-Authenticate": "Bearer"})
    if not viewer.may_see(instance):
        return error(403, "forbidden", f"this token does not cover instance {instance!r}")
    return viewer


async def snapshot(request: Request) -> Response:
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    try:
        return JSONResponse(await core(request).snapshot(instance))
    except RelayError as exc:
        return from_exc(exc)


async def qr_svg(request: Request) -> Response:
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    try:
        snap = await core(request).snapshot(instance)
    except RelayError as exc:
        return from_exc(exc)
    qr = snap["qr"]
    if qr is None or not qr["code"]:
        return error(404, "no_qr", "no live QR code for this instance right now")
    buf = io.BytesIO()
    try:
        segno.make(qr["code"], error="l").save(buf, kind="svg", scale=8, border=4, xmldecl=False)
    except segno.DataOverflowError:  # stored before codes were bounded; no QR holds it
        return error(404, "no_qr", "this QR code cannot be drawn")
    # A QR is a credential: never cache it anywhere.
    return Response(buf.getvalue(), media_type="image/svg+xml",
                    headers={"Cache-Control": "no-store"})


async def events(request: Request) -> Response:
    """SSE: ``event: update`` / ``id: <seq>`` / ``data: <snapshot>``; the first is the current one."""
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    relay = core(request)
    try:
        await relay.snapshot(instance)  # fail with a 503 now, not after the headers went out
    except RelayError as exc:
        return from_exc(exc)
    # A stream lives no longer than its token (an admin key has no expiry).
    lifetime = checked.expires_at - time.time() if checked.expires_at else None

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        try:
            async with asyncio.timeout(lifetime):
                async for item in relay.sse(instance, keepalive=SSE_KEEPALIVE):
                    yield ": keepalive\n\n" if item is None else sse_update(*item)
        except TimeoutError:
            yield "event: expired\ndata: {}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def connect(request: Request) -> Response:
    """Ask the gateway for a (new) QR; 202 with the snapshot, the QR follows as an ``update``."""
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    # Pages are rate-limited per token (and per instance); the admin key is not.
    authorization = request.headers.get("authorization")
    caller = None if admin_allowed(config(request).admin_key, authorization) else \
        (bearer(authorization) or request.query_params.get("token"))
    try:
        number = await _number(request)
        return JSONResponse(await core(request).connect(instance, number, caller=caller),
                            status_code=202)
    except RelayError as exc:
        return from_exc(exc)


async def _number(request: Request) -> str | None:
    """The phone number of a ``connect`` that asks for a pairing code (``{"number": ...}``);
    None for a plain request for a QR (no body, or a body without ``number``)."""
    try:
        raw = await read_body(request, 4096)
    except TooLarge:
        raise BadNumber("the body of connect is at most {\"number\": \"<digits>\"}") from None
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadNumber("the body of connect must be JSON, e.g. {\"number\": \"5511999999999\"}") from None
    if not isinstance(body, dict) or body.get("number") in (None, ""):
        return None
    return phone_number(body["number"])


async def logout(request: Request) -> Response:
    """Log the instance out on the gateway (admin key only)."""
    instance = request.path_params["instance"]
    if not valid_instance(instance):
        return error(400, "bad_instance", HINT)
    settings = config(request)
    if settings.admin_key is None:
        return error(403, "admin_disabled", "set RELAY_ADMIN_KEY to enable admin routes")
    if not admin_allowed(settings.admin_key, request.headers.get("authorization")):
        return error(401, "unauthorized", "admin key required (Authorization: Bearer <key>)",
                     {"WWW-Authenticate": "Bearer"})
    try:
        return JSONResponse(await core(request).logout(instance), status_code=202)
    except RelayError as exc:
        return from_exc(exc)


async def healthz(request: Request) -> Response:
    # The pid tells an operator (and the tests) which worker answered.
    return JSONResponse({"ok": True, "pid": os.getpid()})


async def readyz(request: Request) -> Response:
    """200 when the store answers and the channel listener is up; 503 otherwise (see Relay.readiness)."""
    readiness = await core(request).readiness()
    return JSONResponse(readiness, status_code=200 if readiness["ok"] else 503)


async def metrics(request: Request) -> Response:
    return Response(core(request).metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


def routes(settings: Settings) -> list[BaseRoute]:
    web = settings.web_dir

    async def page(request: Request) -> Response:
        index = web / "index.html"
        if not index.is_file():
            return PlainTextResponse(f"The page is missing: no {index}. Set RELAY_WEB_DIR.", 503)
        if not (web / "vendor").is_dir():
            return PlainTextResponse("The page's scripts are not built: run `make web`.", 503)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/instances/{instance}", snapshot),
        Route("/v1/instances/{instance}/qr.svg", qr_svg),
        Route("/v1/instances/{instance}/events", events),
        Route("/v1/instances/{instance}/connect", connect, methods=["POST"]),
        Route("/v1/instances/{instance}/logout", logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=web, check_dir=False), name="static"),
    ]
