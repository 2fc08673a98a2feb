"""Prometheus metrics, one registry per app (tests run several apps in one process).

With ``relay serve --workers N`` on one port, a scrape reaches one worker at random, so the server
turns on prometheus_client's multiprocess mode (a shared folder of value files, given here as
``multiprocess_dir``) and every scrape returns the sum over the workers (gauges say how they
combine).

In that mode every ``inc`` and ``observe`` takes a lock and writes into a memory-mapped file
(~3-5 µs). A webhook and its fan-out made five of them per worker, ~6 % of a worker's CPU at
1,000 webhooks/s. So the instruments of the hot path (webhooks by outcome, deliveries, delivery
lag, GC pauses) are tallied in plain numbers and handed over by :meth:`Metrics.flush`: before
every scrape, and by every worker once a second. A scrape sees the other workers' counts as of
at most a second ago.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from bisect import bisect_left
from collections import Counter as Tally
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
FLUSH_EVERY = 1.0  # seconds between two hand-overs of the tallies (see the module's doc)


class HistogramTally:
    """Observations of one histogram (or one labelled child), counted per bucket until
    :meth:`flush` adds them (prometheus_client's ``_sum`` and ``_buckets``, the values its own
    ``observe`` increments; the version is pinned in requirements/runtime.lock)."""

    def __init__(self, histogram: Histogram):
        self.histogram = histogram
        self.bounds: list[float] = list(histogram._upper_bounds)  # ends with +Inf
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount

    def flush(self) -> None:
        if any(self.counts):
            self.histogram._sum.inc(self.sum)
            for bucket, count in zip(self.histogram._buckets, self.counts):
                if count:
                    bucket.inc(count)
            self.counts = [0] * len(self.bounds)
            self.sum = 0.0


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
        # The hot path's tallies (see the module's doc).
        self._webhooks: Tally[tuple[str, str, str]] = Tally()
        self._delivered = 0
        self._lag = HistogramTally(self.lag)
        self._gc_pauses: dict[str, HistogramTally] = {}

    # -- the hot path ------------------------------------------------------------------------
    def count_webhook(self, upstream: str, event: str, outcome: str) -> None:
        """``relay_webhooks_total`` + 1."""
        self._webhooks[(upstream, event, outcome)] += 1

    def count_delivered(self, viewers: int) -> None:
        """``relay_updates_delivered_total`` + ``viewers``."""
        self._delivered += viewers

    def observe_lag(self, seconds: float) -> None:
        """One ``relay_delivery_lag_seconds`` observation."""
        self._lag.observe(seconds)

    def flush(self) -> None:
        """Hand the tallies over to prometheus_client (its shared files, in multiprocess mode)."""
        if self._webhooks:
            tally, self._webhooks = self._webhooks, Tally()
            for labels, count in tally.items():
                self.webhooks.labels(*labels).inc(count)
        if self._delivered:
            self.delivered.inc(self._delivered)
            self._delivered = 0
        self._lag.flush()
        for pauses in self._gc_pauses.values():
            pauses.flush()

    def watch_gc(self) -> None:
        """Time every collection: pauses are a measured fact, not a guess."""

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_started = time.perf_counter()
                return
            took = time.perf_counter() - self._gc_started
            generation = str(info.get("generation", "?"))
            pauses = self._gc_pauses.get(generation)
            if pauses is None:
                pauses = self._gc_pauses[generation] = HistogramTally(self.gc_pause.labels(generation))
            pauses.observe(took)
            if took > 0.1:
                log.warning("garbage collection (generation %s) paused %.0f ms",
                            info.get("generation"), took * 1000)

        gc.callbacks.append(callback)
        self._gc_callback = callback

    def unwatch_gc(self) -> None:
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    def render(self) -> bytes:
        self.flush()
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
        meanwhile: near the stall, its own work; far below, it waited for a CPU. Also hands the
        tallies over once a second (:meth:`flush`)."""
        flushed = time.perf_counter()
        while True:
            start, ran = time.perf_counter(), time.thread_time()
            if start - flushed >= FLUSH_EVERY:
                flushed = start
                self.flush()
            await asyncio.sleep(interval)
            late = time.perf_counter() - start - interval
            if late > self._lag_peak:
                self._lag_peak = late
            if late >= 0.05:
                ran = time.thread_time() - ran
                log.log(logging.WARNING if late > 0.25 else logging.INFO,
                        "event loop stalled for %.0f ms (this worker used %.0f ms of CPU in that %.0f ms window)",
                        late * 1000, ran * 1000, (late + interval) * 1000)
