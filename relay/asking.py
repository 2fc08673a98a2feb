"""Pages asking a gateway for a QR (or a pairing code): how often, and how many at once.

A page or a script in a loop must not hammer the gateway: one viewer token asks at most
``PER_MINUTE`` times a minute (in this process), and the same request for an unchanged instance
reaches the gateway at most once per ``GAP`` seconds across workers. "Unchanged" is the
snapshot's ``seq``: once anything happened to the instance (a QR came, it was removed, the
gateway went down), asking again goes through at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .errors import RateLimited, RelayError
from .limits import PerKey
from .snapshot import Snapshot
from .state.contracts import Coordination

GAP = 3.0  # seconds between two identical asks for an unchanged instance
PER_MINUTE = 10  # asks one viewer token may make


class Asks:
    """The gate in front of a gateway's ``connect`` for asks that come from pages."""

    def __init__(self, coordination: Coordination, read: Callable[[str], Awaitable[Snapshot]]):
        self.coordination = coordination
        self.read = read  # the instance's current snapshot, read from the store
        self._callers = PerKey(PER_MINUTE, 60.0)

    async def ask(self, instance: str, number: str | None, caller: str,
                  send: Callable[[], Awaitable[None]]) -> Snapshot:
        """Run ``send`` (the gateway call) unless ``caller`` asked too often (RateLimited) or
        the same ask is already on its way (then the current snapshot is the answer). The key
        is held for the seq before the ask (asks in flight) and for the seq the gateway's
        answer led to (repeats); a gateway error frees it, so that the caller may try again."""
        wait = self._callers.allow(caller)
        if wait:
            raise RateLimited("too many requests for a new QR from this page; wait a moment", wait)
        kind = f"phone:{number}" if number else "qr"
        current = await self.read(instance)
        key = f"connect:{instance}:{current['seq']}:"
        if not await self.coordination.claim(key + kind, GAP):
            return current
        if number:  # switching to a code: a QR may be asked for again at once
            await self.coordination.release(key + "qr")
        try:
            await send()
        except RelayError:
            await self.coordination.release(key + kind)
            raise
        after = await self.read(instance)
        if after["seq"] != current["seq"]:
            await self.coordination.claim(f"connect:{instance}:{after['seq']}:{kind}", GAP)
        return after
