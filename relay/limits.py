"""How often one caller may do one thing: a fixed window per key, with a bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict


class PerKey:
    """At most ``limit`` events per ``window`` seconds for each key (in this process); keys are
    forgotten least recently used first past ``max_keys``."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, key: str) -> float:
        """0 when the event may happen now (and is counted), else the seconds to wait."""
        now = time.monotonic()
        start, count = self._windows.pop(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._windows[key] = (start, count + (count < self.limit))
        if len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return 0.0 if count < self.limit else self.window - (now - start)
