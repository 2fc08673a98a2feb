"""HTTP routes for browsers and operators: the page, snapshots, SSE, QR as SVG, control, health."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

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
from .errors import AuthError, RelayError

if TYPE_CHECKING:
    from .app import Runtime

SSE_KEEPALIVE = 15.0


def runtime(request: Request) -> "Runtime":
    return request.app.state.rt  # type: ignore[no-any-return]


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every HTTP error is JSON with a stable ``error`` code and a human ``detail``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def from_exc(exc: RelayError) -> JSONResponse:
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return error(exc.status, exc.code, exc.detail, headers)


def viewer_for(request: Request, instance: str) -> Viewer | JSONResponse:
    """The viewer token from ``Authorization: Bearer`` or ``?token=``, checked for this instance."""
    rt = runtime(request)
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    if admin_allowed(rt.settings.admin_key, request.headers.get("authorization")):
        return Viewer(instances=frozenset({"*"}), expires_at=0)
    try:
        viewer = verify_token(rt.settings.secret, token)
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
        return JSONResponse(await runtime(request).hub.snapshot(instance))
    except RelayError as exc:
        return from_exc(exc)


async def qr_svg(request: Request) -> Response:
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    try:
        snap = await runtime(request).hub.snapshot(instance)
    except RelayError as exc:
        return from_exc(exc)
    qr = snap["qr"]
    if qr is None or not qr["code"]:
        return error(404, "no_qr", "no live QR code for this instance right now")
    buf = io.BytesIO()
    segno.make(qr["code"], error="l").save(buf, kind="svg", scale=8, border=4, xmldecl=False)
    # A QR is a credential: never cache it anywhere.
    return Response(buf.getvalue(), media_type="image/svg+xml",
                    headers={"Cache-Control": "no-store"})


async def events(request: Request) -> Response:
    """SSE: ``event: update`` / ``id: <seq>`` / ``data: <snapshot>``; the first is the current one."""
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    hub = runtime(request).hub
    try:
        await hub.snapshot(instance)  # fail with a 503 now, not after the headers went out
    except RelayError as exc:
        return from_exc(exc)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for item in hub.sse(instance, keepalive=SSE_KEEPALIVE):
            if item is None:
                yield ": keepalive\n\n"
            else:
                seq, payload = item
                yield f"event: update\nid: {seq}\ndata: {payload}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def connect(request: Request) -> Response:
    """Ask the gateway for a (new) QR; 202 with the snapshot, the QR follows as an ``update``."""
    instance = request.path_params["instance"]
    checked = viewer_for(request, instance)
    if isinstance(checked, JSONResponse):
        return checked
    rt = runtime(request)
    try:
        gateway = await rt.gateway_for(instance)
        if gateway is None:
            return error(501, "no_gateway", "the relay has no gateway to ask: set RELAY_EVOLUTION_URL "
                         "(and RELAY_EVOLUTION_APIKEY) or RELAY_WPPCONNECT_URL")
        await gateway.connect(instance)
        return JSONResponse(await rt.hub.snapshot(instance), status_code=202)
    except RelayError as exc:
        return from_exc(exc)


async def logout(request: Request) -> Response:
    """Log the instance out on the gateway (admin key only)."""
    instance = request.path_params["instance"]
    rt = runtime(request)
    if rt.settings.admin_key is None:
        return error(403, "admin_disabled", "set RELAY_ADMIN_KEY to enable admin routes")
    if not admin_allowed(rt.settings.admin_key, request.headers.get("authorization")):
        return error(401, "unauthorized", "admin key required (Authorization: Bearer <key>)",
                     {"WWW-Authenticate": "Bearer"})
    try:
        gateway = await rt.gateway_for(instance)
        if gateway is None:
            return error(501, "no_gateway", "the relay has no gateway to ask: set RELAY_EVOLUTION_URL")
        await gateway.logout(instance)
        return JSONResponse(await rt.hub.snapshot(instance), status_code=202)
    except RelayError as exc:
        return from_exc(exc)


async def healthz(request: Request) -> Response:
    # The pid tells an operator (and the tests) which worker answered.
    return JSONResponse({"ok": True, "pid": os.getpid()})


async def readyz(request: Request) -> Response:
    """Ready when the store answers, the channel listener is up and the gateway is reachable."""
    rt = runtime(request)
    checks: dict[str, Any] = {"started": rt.started}
    try:
        checks["store"] = bool(rt.started and await rt.store.ping())
    except Exception:
        checks["store"] = False
    checks["listener"] = bool(rt.started and rt.broker.healthy)
    # Reported, not required: a relay whose gateway is down must stay in the balancer, or
    # nobody could be told that the gateway is down.
    gateways = []
    for gateway in rt.gateways.values():
        try:
            gateways.append(await gateway.shared_status())
        except Exception:
            gateways.append({"name": gateway.name, "ok": gateway.ok, "detail": gateway.detail})
    checks["gateways"] = gateways
    ok = checks["store"] and checks["listener"]
    return JSONResponse({"ok": bool(ok), "checks": checks}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(runtime(request).metrics.render(),
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
