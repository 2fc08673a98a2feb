"""Limits on what a gateway payload may carry, checked before anything is stored.

Bodies come from the network: one too deep, or holding text that is not valid UTF-8 (a lone
surrogate written as ``\\ud800``), must be a clear 400, never a 500 or a store error (which would
make the gateway retry it for twenty minutes). A WhatsApp QR code is ~250 characters and its PNG
a few KB: far larger ones are not QR codes, and would only fill memory and Redis.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadEventError

MAX_DEPTH = 32
MAX_QR_CODE = 2048
MAX_QR_IMAGE = 256 * 1024


def check_body(body: Any) -> None:
    """Raise :class:`BadEventError` for a body nested deeper than MAX_DEPTH or holding a string
    that UTF-8 cannot encode."""
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadEventError("the body holds text that is not valid UTF-8") from None
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadEventError(f"the body is nested deeper than {MAX_DEPTH} levels")
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for key, item in items:
                if key is not None:
                    stack.append((key, depth + 1))
                stack.append((item, depth + 1))


def qr_parts(code: str | None, image: str | None, where: str) -> tuple[str | None, str | None]:
    """A QR's code and image within bounds: a code too long to be WhatsApp's is refused; an
    image too large is dropped when the code is there (pages draw it from the code)."""
    if code is not None and len(code) > MAX_QR_CODE:
        raise BadEventError(f"{where}: the QR code is longer than {MAX_QR_CODE} characters")
    if image is not None and len(image) > MAX_QR_IMAGE:
        if code is None:
            raise BadEventError(f"{where}: the QR image is larger than {MAX_QR_IMAGE // 1024} KB")
        image = None
    return code, image
