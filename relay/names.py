"""Instance names: the one check every entry point applies before a name goes anywhere."""

from __future__ import annotations

from typing import Any, TypeGuard

MAX_INSTANCE_NAME = 200


def valid_instance(name: Any) -> TypeGuard[str]:
    """A usable instance name: a non-empty string of at most 200 characters, no outer spaces."""
    return isinstance(name, str) and 0 < len(name) <= MAX_INSTANCE_NAME and name.strip() == name
