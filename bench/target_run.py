"""Benchmarking one target: private Redis (one redis-server, or a 3-master Redis Cluster for
``relay-cluster``), the server, idle viewers (RSS per viewer), then one open-loop webhook step per
rate, each measured into a report ``Row``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from params import Params
from reconnect_probes import StallSamples, gc_note, relay_gc_pauses
from report import Row, percentile, text_table
from restarts import relay_stalls
from scoring import StepScore, expected, score
from stores import RedisStore, new_store
from targets import Server, TargetUnavailable, start_node, start_relay
from viewers import ViewerPool, ViewerSpec
from webhooks import BodyFactory, WebhookLoad

from tests.support.clients import token
from tests.support.procs import http_status
from tests.support.proctree import cpu_seconds, machine_busy_seconds, process_tree, settled_rss

LAG_GAUGE = "relay_loop_lag_max_seconds"
MARKER_LETTER = {"relay-cluster": "C"}  # else the target's initial (R, N)


class TargetRun:
    """Everything about benchmarking one target; ``run()`` appends its rows."""

    def __init__(self, name: str, params: Params, run_tag: str, log_dir: Path) -> None:
        self.name = name
        self.p = params
        self.run_tag = run_tag
        self.log_dir = log_dir
        self.marker = f"BENCH{run_tag}{MARKER_LETTER.get(name, name[:1].upper())}E"
        self.instances = [f"bench-{i:04d}" for i in range(params.instances)]
        self.factory = BodyFactory(int(params.body_kb * 1024), self.marker)
        self.redis: RedisStore | None = None
        self.server: Server | None = None
        self.pool: ViewerPool | None = None
        self.load: WebhookLoad | None = None
        self.next_eid = 0
        self.viewers_of: list[list[int]] = [[] for _ in range(params.instances)]
        self.kb_per_viewer: float | None = None
        self.kb_marginal: float | None = None
        self._redis_log_seen: dict[Path, int] = {}
        self.setup_notes: list[str] = []

    async def run(self, rows: list[Row]) -> None:
        """Measure every rate into ``rows``; whatever was started is stopped, whatever happens."""
        try:
            await self._setup()
            await self._steps(rows)
        finally:
            await self._cleanup()

    async def _setup(self) -> None:
        p = self.p
        self.redis = redis = new_store("cluster" if self.name == "relay-cluster" else "redis",
                                       self.log_dir)
        await asyncio.to_thread(redis.start)  # stopped by _cleanup, even if interrupted
        if self.name == "node":
            self.server = await asyncio.to_thread(start_node, p.workers, redis, f"bench{self.run_tag}",
                                                  self.log_dir, p.start_timeout)
        else:
            # At INFO the relay logs each stall of 50 ms or more with its CPU meanwhile (notes).
            self.server = await asyncio.to_thread(start_relay, p.workers, redis, self.log_dir,
                                                  p.start_timeout, {"RELAY_LOG_LEVEL": "info"},
                                                  self.name)
        server = self.server
        await self._settle_workers(server)
        print(f"[{self.name}] up on ports {server.ports}, {redis.describe()}", flush=True)

        rss0 = await self._stable_rss()  # before any viewer exists
        specs = [ViewerSpec(index=i, port=server.ports[(i // p.instances) % len(server.ports)],
                            instance=self.instances[i % p.instances]) for i in range(p.clients)]
        # Viewers connect in two halves, so that besides the per-viewer average asked for we get
        # the marginal cost of the second half. The average also carries one-time effects (V8
        # young-generation growth; V8's memory reducer handing back ~20 MiB of startup garbage
        # per Node process at an unpredictable moment, which can even make it negative); the
        # marginal, measured after the first connect storm, is the stable figure across runs.
        self.pool = ViewerPool(token("*"), self.marker)
        half = max(1, p.clients // 2)
        parts = [(specs[:half], (p.client_procs + 1) // 2), (specs[half:], max(1, p.client_procs // 2))]
        if not parts[1][0]:
            parts = [(specs, p.client_procs)]
        ok: list[int] = []
        errors: list[str] = []
        rss_half, second_ok = rss0, 0
        t0 = time.monotonic()
        for n_part, (part, procs) in enumerate(parts):
            self.pool.add(part, procs)
            got, errs = await self.pool.wait_ready(timeout=60 + len(part) / 20)
            ok += got
            errors += errs
            if n_part == 0:
                rss_half = await self._stable_rss()
            else:
                second_ok = len(got)
        for i in ok:
            self.viewers_of[i % p.instances].append(i)
        print(f"[{self.name}] {len(ok)}/{p.clients} viewers subscribed in "
              f"{time.monotonic() - t0:.1f}s" + (f"; errors: {errors[:3]}" if errors else ""), flush=True)
        if not ok:
            raise TargetUnavailable(f"no viewer could connect and subscribe: {errors[:3]}")
        if len(ok) < p.clients:
            self.setup_notes.append(f"only {len(ok)}/{p.clients} viewers subscribed ({errors[:2]})")

        rss1 = await self._stable_rss()  # every viewer connected and idle
        self.kb_per_viewer = (rss1 - rss0) / 1024 / len(ok)
        if second_ok:
            self.kb_marginal = (rss1 - rss_half) / 1024 / second_ok
        self.setup_notes.append(f"server RSS {rss0 / 2**20:.1f} -> {rss_half / 2**20:.1f} (half the "
                                f"viewers) -> {rss1 / 2**20:.1f} MiB (all)")
        print(f"[{self.name}] {self.setup_notes[-1]}; KB/viewer: average {self.kb_per_viewer:.1f}, "
              f"marginal {self.kb_marginal or 0:.1f}", flush=True)
        self.load = WebhookLoad(server.ports, self.instances, self.factory, p.http_pool,
                                p.http_timeout, int(time.time() * 1000))

    async def _steps(self, rows: list[Row]) -> None:
        p = self.p
        assert self.server is not None
        if p.warmup > 0 and p.rates:
            warm = await self._step(min(p.rates), p.warmup)
            print(f"[{self.name}] warm-up (unmeasured): {warm.offered:g} ev/s, "
                  f"p50 {warm.p50_ms or 0:.1f} ms, lost {warm.lost}, non-2xx {warm.non2xx}", flush=True)
        for rate in p.rates:
            if not self.server.alive():
                print(f"[{self.name}] server died; skipping remaining rates", flush=True)
                break
            row = await self._step(rate, p.duration)
            row.notes += self._redis_warnings()
            if rate == p.rates[0]:
                row.notes = self.setup_notes + row.notes
            rows.append(row)
            print(text_table([row]).splitlines()[-1], flush=True)
            for note in row.notes:
                print(f"    note: {note}", flush=True)

    def _redis_warnings(self) -> list[str]:
        """New redis-server complaints since the last call (every node of a cluster), e.g. a
        pub/sub subscriber that fell behind and was disconnected (client-output-buffer-limit
        pubsub, 32 MB)."""
        assert self.redis is not None
        kicked: list[str] = []
        for path in self.redis.log_paths():
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            new, self._redis_log_seen[path] = lines[self._redis_log_seen.get(path, 0):], len(lines)
            kicked += [ln for ln in new if "output buffer limits" in ln]
        if not kicked:
            return []
        kinds = sorted({"pubsub" if " flags=P " in ln else "normal" for ln in kicked})
        return [f"redis closed {len(kicked)} client connection(s) ({', '.join(kinds)}) for exceeding "
                "client-output-buffer-limit: a subscriber fell behind"]

    async def _drain(self, first: int, n: int) -> str:
        """After a lossy step, wait (bounded by --drain) until deliveries stop arriving."""
        assert self.pool is not None
        t0 = time.monotonic()
        last, quiet_since = -1, t0
        while time.monotonic() - t0 < self.p.drain:
            got, _ = await self.pool.count()
            if got != last:
                last, quiet_since = got, time.monotonic()
            elif time.monotonic() - quiet_since >= 1.5:
                break
            await asyncio.sleep(0.25)
        d = await self.pool.collect()
        later = sum(1 for eid in d.eids if first <= eid < first + n)
        return (f"drain: {later} more deliveries of this step arrived in the "
                f"{time.monotonic() - t0:.1f} s after the grace period (cap --drain {self.p.drain:g} s)")

    async def _stable_rss(self) -> int:
        """Server-tree RSS once it has stayed within 1 MiB for --rss-settle s (at most 3x that):
        V8 hands back start-up garbage late, and an early sample would charge it to the viewers
        (we saw negative KB/viewer with short windows)."""
        assert self.server is not None
        rss, _ = await asyncio.to_thread(settled_rss, self.server.root_pids, self.p.rss_settle,
                                         2**20, 3 * self.p.rss_settle + 2, 0.5)
        return rss

    async def _settle_workers(self, server: Server) -> None:
        """With W workers behind one port, /healthz=200 from one worker is not all of them."""
        if not server.name.startswith("relay") or server.workers <= 1:
            await asyncio.sleep(0.5)
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(process_tree(server.root_pids)) < server.workers + 1:
            await asyncio.sleep(0.2)
        # A few fresh-connection health checks that may land on different workers.
        for _ in range(4 * server.workers):
            await asyncio.to_thread(http_status, f"http://127.0.0.1:{server.ports[0]}/healthz")
        await asyncio.sleep(1.0)

    async def _step(self, rate: float, duration: float) -> Row:
        """One open-loop rate step and its measurements."""
        assert self.server and self.redis and self.pool and self.load
        first = self.next_eid
        await self.pool.start_step(first)
        server_pids = process_tree(self.server.root_pids)
        redis_pids = self.redis.pids  # every node of a cluster
        client_pids = self.pool.pids + [os.getpid()]

        def cpu() -> tuple[float, float, float, float, float]:
            return (cpu_seconds(server_pids), cpu_seconds(redis_pids), cpu_seconds(client_pids),
                    cpu_seconds([os.getpid()]), machine_busy_seconds())

        by_node0 = [cpu_seconds([pid]) for pid in redis_pids]
        relay = self.name != "node"
        logs = {proc.log_path: proc.log_path.stat().st_size for proc in self.server.procs} \
            if relay else {}
        gc0 = await relay_gc_pauses(self.server.ports[0]) if relay else None
        before, w0, t0_ns = cpu(), time.monotonic(), time.time_ns()
        res = await self.load.run(first, rate, duration)
        self.next_eid += res.count
        owed = expected(res, self.viewers_of)
        deadline = max(res.send_ns) + int(self.p.grace * 1e9)
        # Wait for deliveries, but no longer than the grace period after the last send.
        while time.time_ns() < deadline and (await self.pool.count())[0] < owed:
            await asyncio.sleep(0.1)
        after, wall = cpu(), time.monotonic() - w0
        by_node = [cpu_seconds([pid]) - c0 for pid, c0 in zip(redis_pids, by_node0)]
        srv, red, cli, gen, machine = (b - a for a, b in zip(before, after))
        d = await self.pool.collect()
        sc = score(res, d, deadline, self.viewers_of, rate)

        notes = [f"client cores: webhook generator {gen / wall:.2f}, viewers {(cli - gen) / wall:.2f}"]
        pause = "n/a"
        lag = await self.load.scrape_metric(self.server.ports[0], LAG_GAUGE,
                                            samples=3 * self.server.workers + 2)
        if lag is not None:
            pause = f"{max(lag) * 1e3:.1f}" if lag else "none"
            notes.append(f"{LAG_GAUGE} samples (ms): {sorted({round(v * 1e3, 1) for v in lag})}")
        if relay:
            logged = StallSamples()
            logged.add_logged(relay_stalls(logs))
            if worst := logged.noted(t0_ns, time.time_ns()):
                notes.append("relay stalls of 50 ms or more it logged, largest first (ran = the "
                             f"worker's CPU in the stall's window; at = from the step's start): {worst}")
            notes.append(gc_note(gc0, await relay_gc_pauses(self.server.ports[0])))
        notes += self._step_notes(res.errors, res.max_schedule_lag_ms, sc, d.unmatched, d.disconnects)
        if not sc.accepted:
            notes.insert(0, f"no 2xx: statuses {sorted(set(res.status))[:5]}")
        if sc.missing:
            # Not part of the figures: tells "slow" from "never", and keeps one step's backlog
            # out of the next step's latency and CPU.
            notes.append(await self._drain(first, res.count))
        per_event = sc.accepted or res.count
        if len(by_node) > 1:  # how the Redis work spread over a cluster's masters
            notes.append("redis CPU by node, ms/event: "
                         + " / ".join(f"{c * 1e3 / per_event:.3f}" for c in by_node))
        return Row(
            target=self.name, workers=self.server.workers, offered=rate, achieved=sc.achieved,
            p50_ms=percentile(sc.lat_ms, 0.50), p99_ms=percentile(sc.lat_ms, 0.99),
            max_ms=sc.lat_ms[-1] if sc.lat_ms else None, lost=max(0, sc.expected - len(sc.lat_ms)),
            non2xx=res.count - sc.accepted, cpu_ms_per_event=srv * 1e3 / per_event,
            kb_per_viewer=self.kb_per_viewer, kb_marginal=self.kb_marginal,
            redis_ms_per_event=red * 1e3 / per_event, server_pause_ms=pause, client_gap_ms=sc.gap_ms,
            client_cores=cli / wall if wall > 0 else 0.0,
            other_cores=max(0.0, machine - srv - red - cli) / wall if wall > 0 else 0.0, notes=notes)

    @staticmethod
    def _step_notes(errors: dict[str, int], schedule_lag_ms: float, sc: StepScore, unmatched: int,
                    disconnects: int) -> list[str]:
        notes: list[str] = []
        if errors:
            notes.append(f"HTTP errors: {errors}")
        if schedule_lag_ms > 5:
            notes.append(f"load generator fell {schedule_lag_ms:.1f} ms behind its schedule")
        if sc.missing:
            notes.append(f"lost {sc.missing}: {sc.superseded} superseded by a newer update of the same "
                         f"instance, {sc.missing - sc.superseded} not; viewers left showing a stale "
                         f"final state: {sc.stale_final}")
        odd = {**sc.odd, "updates without marker": unmatched, "viewer disconnects": disconnects}
        notes += [f"{label}: {count}" for label, count in odd.items() if count]
        return notes

    async def _cleanup(self) -> None:
        """Viewers first (clean websocket closes), then the server, then Redis."""
        if self.load is not None:
            await self.load.close()
        if self.pool is not None:
            await self.pool.close()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
