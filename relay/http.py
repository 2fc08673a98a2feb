"""What every HTTP edge answers the same way: JSON errors with a stable code, bounded bodies."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import RateLimited, RelayError


class TooLarge(Exception):
    """The body is over its limit."""


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every HTTP error is JSON with a stable ``error`` code and a human ``detail``."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def from_exc(exc: RelayError) -> JSONResponse:
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return error(exc.status, exc.code, exc.detail, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)
