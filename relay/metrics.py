"""Prometheus metrics, one registry per app (tests run several apps in one process).

With ``relay serve --workers N`` on one port, a scrape reaches one worker at random, so the server
turns on prometheus_client's multiprocess mode (a shared folder of value files, given here as
``multiprocess_dir``) and every scrape returns the sum over the workers (gauges say how they
combine).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

log = logging.getLogger("relay.metrics")


class Metrics:
    """The relay's instruments. Values are per worker process."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self.viewers = Gauge("relay_viewers", "Connected viewers (Socket.IO and SSE)", registry=r,
                             multiprocess_mode="livesum")
        self.subscribed = Gauge("relay_subscribed_instances",
                                "Instance subscriptions (summed over workers with viewers of them)",
                                registry=r, multiprocess_mode="livesum")
        self.webhooks = Counter("relay_webhooks_total", "Gateway events received",
                                ["upstream", "event", "outcome"], registry=r)
        self.delivered = Counter("relay_updates_delivered_total",
                                 "Snapshot updates handed to local viewers (per viewer)", registry=r)
        self.lag = Histogram("relay_delivery_lag_seconds",
                             "From the event being stored to its fan-out on this worker",
                             buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                             registry=r)
        self.listener_up = Gauge("relay_listener_up",
                                 "1 while the pub/sub listener is connected (lowest over workers)",
                                 registry=r, multiprocess_mode="livemin")
        self.store_errors = Counter("relay_store_errors_total", "Failed state-store (Redis) operations",
                                    registry=r)
        self.upstream_up = Gauge("relay_upstream_up", "1 while the gateway is reachable", ["upstream"],
                                 registry=r, multiprocess_mode="livemostrecent")
        self.slow_viewers = Counter("relay_slow_viewers_disconnected_total",
                                    "Viewers disconnected because they could not keep up", registry=r)
        self.loop_lag_max = Gauge("relay_loop_lag_max_seconds",
                                  "Longest event-loop stall since the previous scrape (max over workers)",
                                  registry=r, multiprocess_mode="livemax")
        self.gc_pause = Histogram("relay_gc_pause_seconds", "Garbage-collector pauses", ["generation"],
                                  buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1), registry=r)
        self._lag_peak = 0.0
        self._gc_started = 0.0
        self._gc_callback: Any = None

    def watch_gc(self) -> None:
        """Time every collection: pauses are a measured fact, not a guess."""

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_started = time.perf_counter()
                return
            took = time.perf_counter() - self._gc_started
            self.gc_pause.labels(str(info.get("generation", "?"))).observe(took)
            if took > 0.1:
                log.warning("garbage collection (generation %s) paused %.0f ms",
                            info.get("generation"), took * 1000)

        gc.callbacks.append(callback)
        self._gc_callback = callback

    def unwatch_gc(self) -> None:
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    def render(self) -> bytes:
        self.loop_lag_max.set(self._lag_peak)
        self._lag_peak = 0.0
        if self.multiprocess_dir:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    async def watch_loop_lag(self, interval: float = 0.02) -> None:
        """Measure event-loop stalls (GC pauses, blocking calls, a busy machine): how late a
        short sleep wakes. A stall of 50 ms or more is logged with how long this worker ran
        meanwhile: near the stall, its own work; far below, it waited for a CPU."""
        while True:
            start, ran = time.perf_counter(), time.thread_time()
            await asyncio.sleep(interval)
            late = time.perf_counter() - start - interval
            if late > self._lag_peak:
                self._lag_peak = late
            if late >= 0.05:
                ran = time.thread_time() - ran
                log.log(logging.WARNING if late > 0.25 else logging.INFO,
                        "event loop stalled for %.0f ms (this worker used %.0f ms of CPU in that %.0f ms window)",
                        late * 1000, ran * 1000, (late + interval) * 1000)
