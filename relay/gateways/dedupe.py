"""The name a gateway event is deduplicated by: the same event by webhook, by socket and on every
retry gets the same key (relay/rules.py drops the copies).

The key is a hash of the JSON of what identifies the event, keys sorted. Its exact bytes matter
beyond one process: workers of two versions share the keys in Redis during a rolling update.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# json.dumps(parts, sort_keys=True, default=str) builds this encoder on every call; the same
# encoder, built once, gives the same text (a webhook's key was ~2 % of a worker's CPU).
_encode = json.JSONEncoder(sort_keys=True, default=str).encode


def dedupe_key(parts: list[Any]) -> str:
    """32 hex digits naming the event identified by ``parts``."""
    return hashlib.blake2b(_encode(parts).encode(), digest_size=16).hexdigest()
