"""The garbage collector's set-up, and its full passes kept out of reconnect storms.

A full pass of CPython's collector costs about a microsecond per live container object here
(measured with 5,000 viewers per worker: 45-190 ms of CPU for 35,000-85,000 objects), and a
reconnect storm is exactly what triggers one: every viewer that comes back leaves a few new
long-lived objects, and the collector makes a full pass once those reach a quarter of what it
already holds. At that moment every viewer waits.

So while viewers come and go in numbers (``STORM`` connections opened or closed within
``EVERY`` seconds), full passes are held back; the young generations, whose pauses stay short, go
on as usual. Once it has been quiet for ``QUIET`` seconds, the pass that was held back (if the
collector's count says one is due) is made at once, and CPython's own rule applies again. No
storm holds passes back longer than ``MAX_HOLD`` seconds, so garbage in reference cycles is
still found.
"""

from __future__ import annotations

import asyncio
import gc
import time

# Young generations small (a pause is as long as they are big: with 7,000/20/20, 10,000 viewers
# reconnecting at once made 100-250 ms pauses of generation 1; with 2,000/10/10 under 50 ms;
# 2,000/5/10 halves what a generation-1 pass may hold, with no measured change; BENCHMARKS.md).
THRESHOLDS = (2000, 5, 10)
NEVER = 1 << 30  # generation 2's threshold while held: never reached
STORM = 25  # viewer connections opened or closed within EVERY seconds (100/s) that make a storm
EVERY = 0.25
QUIET = 2.0  # seconds under the storm's rate before full passes are allowed again
MAX_HOLD = 30.0  # seconds a storm may hold them back, at most


def tune() -> None:
    """For a worker, once started: everything created so far lives as long as the process, so
    it is moved out of the collector's sight (``gc.freeze``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class Collector:
    """Holds full collections back during storms, and lets them go after (see the module)."""

    def __init__(self, *, storm: int = STORM, every: float = EVERY, quiet: float = QUIET,
                 max_hold: float = MAX_HOLD):
        self.storm_churn = storm
        self.every = every
        self.quiet = quiet
        self.max_hold = max_hold
        self.churn = 0  # connections opened or closed since the last check
        self.held_since: float | None = None
        self.last_storm = float("-inf")
        self._saved = THRESHOLDS

    def opened_or_closed(self) -> None:
        """A viewer's connection opened or closed."""
        self.churn += 1
        if self.churn >= self.storm_churn:
            self.storm()

    def storm(self) -> None:
        """Hold full passes back (from now until ``quiet`` seconds after the last call)."""
        now = time.monotonic()
        self.last_storm = now
        if self.held_since is None:
            self.held_since = now
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], NEVER)

    def check(self) -> None:
        """Let full passes go again after a quiet moment, or after a hold of ``max_hold``; the
        pass held back, if one is due, is made now."""
        now = time.monotonic()
        self.churn = 0
        if self.held_since is not None and (now - self.last_storm >= self.quiet
                                            or now - self.held_since >= self.max_hold):
            self.release()
            if gc.get_count()[2] > self._saved[2]:
                # Now that it is quiet, rather than in the middle of whatever comes next.
                gc.collect()

    def release(self) -> None:
        if self.held_since is not None:
            self.held_since = None
            gc.set_threshold(*self._saved)

    async def watch(self) -> None:
        """Forever: :meth:`check` every ``every`` seconds. A worker starts held: one started (or
        restarted) under load takes its share of the viewers at once, a storm of its own. The
        thresholds are restored when it ends."""
        self.storm()
        try:
            while True:
                await asyncio.sleep(self.every)
                self.check()
        finally:
            self.release()
