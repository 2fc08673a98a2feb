"""The pairing watchdog's timers: one per instance this worker watches, due when its record says
the wait for a QR is over. What happens then is the core's business (:meth:`Relay.stall`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .snapshot import now_ms

# The loop's timers run on its monotonic clock and may fire a millisecond before a deadline
# set by the wall clock (seen with uvloop): a little later, the rules agree it is due.
MARGIN = 0.005


class Watchdog:
    """Timers keyed by instance; a deadline that already fired is not armed again.

    An instance's deadline moves later with almost every event (each new QR). Its timer is not
    moved each time (a cancel and a new timer per event, ~3 % of a worker's CPU at 1,000
    webhooks/s): it stays set for the earlier moment and, when that comes, sets itself again
    for the deadline wanted by then. Only a deadline that moves earlier resets it."""

    def __init__(self, fire: Callable[[str], None]):
        self._fire = fire
        self._wanted: dict[str, int] = {}  # instance -> its deadline (ms, our clock)
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}  # -> (set for, handle)
        self._fired: dict[str, int] = {}

    def arm(self, instance: str, deadline: int | None) -> None:
        """Fire at ``deadline`` (ms, our clock); None disarms (the instance is not waiting)."""
        if deadline is None:
            self.disarm(instance)
            return
        now = now_ms()
        if self._fired.get(instance) == deadline and now >= deadline:
            return  # done (a timer that fired early, by the loop's clock, is armed again)
        self._wanted[instance] = deadline
        current = self._timers.get(instance)
        if current is not None:
            if current[0] <= deadline:
                return  # it comes first, then sets itself again for ``deadline``
            current[1].cancel()
        self._set(instance, deadline, now)

    def _set(self, instance: str, deadline: int, now: int) -> None:
        delay = max(0.0, (deadline - now) / 1000) + MARGIN
        handle = asyncio.get_running_loop().call_later(delay, self._due, instance, deadline)
        self._timers[instance] = (deadline, handle)

    def _due(self, instance: str, set_for: int) -> None:
        self._timers.pop(instance, None)
        deadline = self._wanted.get(instance)
        if deadline is None:
            return
        if deadline > set_for:  # moved later since the timer was set
            self._set(instance, deadline, now_ms())
            return
        del self._wanted[instance]
        self._fired[instance] = deadline
        self._fire(instance)

    def disarm(self, instance: str) -> None:
        self._wanted.pop(instance, None)
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
        self._wanted.clear()
