"""Pacing for what a storm of connections brings: handshakes, first messages, subscribes and
closings, done a few milliseconds' worth per turn of the event loop.

After a network blip or a restart every viewer comes back within a second or two. Done as it
arrives, their work piles up into turns of the event loop that last hundreds of milliseconds, and
everything else (webhooks, updates to viewers already back, pings) waits behind them. Through the
pacer, each turn does at most ``budget`` seconds of it, in arrival order, and leaves the rest for
the next turns: the newcomers wait a little longer, nobody else notices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("relay.viewers")
BUDGET = 0.005  # seconds of paced work per turn of the event loop
# What starting a task is charged: its first step runs in a later turn, unmeasured here (a
# subscribe's first step costs about this much).
TASK_COST = 0.0001


class Pacer:
    """A FIFO of small jobs run at most ``budget`` seconds' worth per turn of the event loop."""

    def __init__(self, budget: float = BUDGET):
        self.budget = budget
        self._jobs: deque[tuple[Callable[[], object], float]] = deque()
        self._spent = 0.0
        self._turn_open = False
        self._draining = False

    def run(self, job: Callable[[], object], cost: float = 0.0) -> None:
        """Run ``job`` now if this turn has budget left and no job waits before it, else in a
        later turn, in order. ``cost``: what it is charged at least (see TASK_COST)."""
        if self._jobs or self.spent():
            self._jobs.append((job, cost))
            self._schedule()
        else:
            self._do(job, cost)

    def spent(self) -> bool:
        """Has this turn used its budget? (Also for work paced by its own loop: a task that
        yields with ``await asyncio.sleep(0)`` when it has.)"""
        if not self._turn_open:
            self._turn_open = True
            asyncio.get_running_loop().call_soon(self._next_turn)
        return self._spent >= self.budget

    def charge(self, seconds: float) -> None:
        self.spent()
        self._spent += seconds

    def pending(self) -> int:
        return len(self._jobs)

    def _next_turn(self) -> None:
        self._turn_open = False
        self._spent = 0.0

    def _do(self, job: Callable[[], object], cost: float) -> None:
        started = time.perf_counter()
        try:
            job()
        except Exception:  # one viewer's trouble must not stop the others' jobs
            log.exception("a paced job failed")
        self.charge(max(cost, time.perf_counter() - started))

    def _schedule(self) -> None:
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._draining = False
        while self._jobs:
            if self.spent():
                self._schedule()
                return
            self._do(*self._jobs.popleft())
