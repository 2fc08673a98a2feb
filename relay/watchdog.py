"""The pairing watchdog's timers: one per instance this worker watches, due when its record says
the wait for a QR is over. What happens then is the core's business (:meth:`Relay.stall`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .snapshot import now_ms


class Watchdog:
    """Timers keyed by instance; a deadline that already fired is not armed again."""

    def __init__(self, fire: Callable[[str], None]):
        self._fire = fire
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self._fired: dict[str, int] = {}

    def arm(self, instance: str, deadline: int | None) -> None:
        """Fire at ``deadline`` (ms, our clock); None disarms (the instance is not waiting)."""
        if deadline is None:
            self.disarm(instance)
            return
        current = self._timers.get(instance)
        if (current is not None and current[0] == deadline) or self._fired.get(instance) == deadline:
            return
        self.disarm(instance)
        delay = max(0.0, (deadline - now_ms()) / 1000)
        handle = asyncio.get_running_loop().call_later(delay, self._due, instance, deadline)
        self._timers[instance] = (deadline, handle)

    def _due(self, instance: str, deadline: int) -> None:
        self._timers.pop(instance, None)
        self._fired[instance] = deadline
        self._fire(instance)

    def disarm(self, instance: str) -> None:
        entry = self._timers.pop(instance, None)
        if entry is not None:
            entry[1].cancel()

    def forget(self, instance: str) -> None:
        """The last local viewer left: no timer, and no memory of what fired."""
        self.disarm(instance)
        self._fired.pop(instance, None)

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
