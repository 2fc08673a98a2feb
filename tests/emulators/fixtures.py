"""Access to the shared protocol fixtures (read-only JSON payloads captured from the gateways' code)."""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """Return the shared directory: ``$RELAY_SHARED_DIR`` if set, else ``<repo root>/../shared``."""
    env = os.environ.get("RELAY_SHARED_DIR")
    return Path(env) if env else _REPO_ROOT.parent / "shared"


@lru_cache(maxsize=None)
def _read(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load(kind: str, name: str) -> Any:
    """Return a fresh deep copy of fixture ``fixtures/<kind>/<name>.json`` (key order preserved).

    ``kind`` is ``"evolution"`` or ``"wppconnect"``; ``name`` may be given with or without ``.json``.
    """
    filename = name if name.endswith(".json") else f"{name}.json"
    return copy.deepcopy(_read(str(shared_dir() / "fixtures" / kind / filename)))
