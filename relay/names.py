"""Instance names: the one check every entry point applies before a name goes anywhere (a
store key, a channel, a gateway URL, a log line)."""

from __future__ import annotations

from typing import Any, TypeGuard

MAX_INSTANCE_NAME = 200
HINT = ("an instance name is 1 to 200 printable characters, without spaces around it, "
        "and not '*'")


def valid_instance(name: Any) -> TypeGuard[str]:
    """A usable instance name: a string of 1-200 printable characters (no control characters,
    no lone surrogates: it must be valid UTF-8), no outer spaces, and not ``*`` (which tokens
    use to mean "every instance")."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_INSTANCE_NAME and name.isprintable()
            and name.strip() == name and name != "*")
