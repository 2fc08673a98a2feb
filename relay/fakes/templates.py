"""The gateway payloads the fakes fill in: verbatim copies of shared/fixtures (the shapes the
real gateways send), kept in ``templates.json`` so that the fakes work from any install.

``tests/test_emulators.py`` fails if a copy differs from its fixture; refresh them with
``python -m relay.fakes.templates <path to shared/fixtures>``.
"""

from __future__ import annotations

import copy
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

FILE = Path(__file__).with_name("templates.json")
# The fixtures the fakes use (kind/name); `refresh` copies exactly these.
NAMES = {
    "evolution": [
        "rest-error-401-unauthorized", "rest-error-404-instance-not-found",
        "rest-instance-connect-200-already-open", "rest-instance-connect-200-qr",
        "rest-instance-connection-state-200-close", "rest-instance-connection-state-200-connecting",
        "rest-instance-connection-state-200-open", "rest-instance-create-201-qr-ready",
        "rest-instance-delete-200", "rest-instance-logout-200",
        "rest-instance-logout-400-not-connected", "rest-instance-restart-200-error-when-closed",
        "rest-webhook-set-201", "rest-websocket-set-201", "webhook-connection-update-open",
        "webhook-qrcode-updated", "webhook-request-headers-global",
        "websocket-connection-update-open",
    ],
    "wppconnect": [
        "rest-auth-401-bad-token", "rest-auth-401-no-token", "rest-check-connection-session-false",
        "rest-check-connection-session-true", "rest-close-session-200", "rest-generate-token-201",
        "rest-generate-token-400-bad-secret", "rest-logout-session-200",
        "rest-logout-session-404-not-connected", "rest-qrcode-session-not-available",
        "rest-qrcode-session-not-started", "rest-start-session-waitQrCode",
        "rest-status-session-closed-unknown", "rest-status-session-connected-after-qr",
        "socketio-qrCode", "socketio-session-logged", "webhook-closesession",
        "webhook-logoutsession", "webhook-qrcode", "webhook-status-find",
    ],
}


@lru_cache(maxsize=1)
def _all() -> dict[str, Any]:
    return json.loads(FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def load(kind: str, name: str) -> dict[str, Any]:
    """A fresh deep copy of the template ``<kind>/<name>`` (key order preserved)."""
    template: dict[str, Any] = copy.deepcopy(_all()[f"{kind}/{name.removesuffix('.json')}"])
    return template


def refresh(fixtures: Path) -> None:
    """Copy the fixtures the fakes use from ``shared/fixtures`` into ``templates.json``."""
    data = {f"{kind}/{name}": json.loads((fixtures / kind / f"{name}.json").read_text("utf-8"))
            for kind, names in NAMES.items() for name in names}
    FILE.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    refresh(Path(sys.argv[1]))
