"""The gateways' payloads as they send them (shared/fixtures, never edited), and bodies built
from them."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RELAY_SHARED_DIR", REPO.parent / "shared"))


def fixture(kind: str, name: str) -> Any:
    """A payload exactly as the gateway sends it (``kind``: evolution or wppconnect)."""
    return json.loads((SHARED / "fixtures" / kind / f"{name.removesuffix('.json')}.json").read_text())


def fixture_paths(kind: str) -> list[Path]:
    return sorted((SHARED / "fixtures" / kind).glob("*.json"))


def evolution_event(name: str, *, instance: str = "my-instance", date_time: str | None = None,
                    code: str | None = None, image: str | None = None) -> dict[str, Any]:
    """An Evolution webhook fixture, with the instance / time / QR code / QR image changed
    where asked."""
    body: dict[str, Any] = copy.deepcopy(fixture("evolution", name))
    body["instance"] = instance
    if isinstance(body.get("data"), dict) and "instance" in body["data"]:
        body["data"]["instance"] = instance
    if date_time is not None:
        body["date_time"] = date_time
    if code is not None or image is not None:
        qr = body["data"]["qrcode"]
        qr["instance"] = instance
        if code is not None:
            qr["code"] = code
        if image is not None:
            qr["base64"] = image
    return body
