"""One target through the reconnect storms: private Redis, the server, one seeded QR per
instance, N subscribed viewers, then each scenario under a steady webhook load, measured into
a ``Row`` (bench/reconnect_report.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reconnect_pool import ReconnectPool, Status
from reconnect_probes import (LAG_GAUGE, ConnTrace, HealthProbe, StallSamples, SteadyLoad, TreeCpu,
                              gc_note, node_lag_env, read_node_lag, relay_gc_pauses, sample_relay_lag)
from reconnect_report import Row, fmt_ms, pct
from reconnect_score import accepted_eids, lost_and_stale, post_times, recovery, update_latency
from restarts import (kill_one, relay_stalls, relay_workers, restart_node, server_notes, socket_owner,
                      tcp_counters, tcp_note, wait_workers)
from targets import Server, TargetUnavailable, node_process, start_node, start_redis, start_relay
from webhooks import BodyFactory

from tests.support.clients import token
from tests.support.procs import http_status
from tests.support.proctree import cpu_seconds, machine_busy_seconds
from tests.support.redis import RedisServer

T = TypeVar("T")


@dataclass
class StormParams:
    """Command-line parameters of ``bench/reconnect.py``."""

    viewers: int
    instances: int
    workers: int
    targets: list[str]
    scenarios: list[str]
    rate: float
    window: float
    client_procs: int
    connect_rate: float
    pre: float
    tail: float
    grace: float
    recover_timeout: float
    attempt_timeout: float
    body_kb: float
    http_pool: int
    http_timeout: float
    start_timeout: float
    lag_every: float
    out: Path


class StormTarget:
    """Everything about one target; ``run()`` appends one row per scenario."""

    def __init__(self, name: str, p: StormParams, run_tag: str, log_dir: Path) -> None:
        self.name, self.p, self.run_tag, self.log_dir = name, p, run_tag, log_dir
        self.marker = f"BENCH{run_tag}{name[:1].upper()}R"
        self.instances = [f"storm-{i:05d}" for i in range(p.instances)]
        self.redis: RedisServer | None = None
        self.server: Server | None = None
        self.load: SteadyLoad | None = None
        self.pool: ReconnectPool | None = None
        self.newest = [-1] * p.instances  # per instance: newest accepted event id
        self.next_eid = 0
        self.setup_notes: list[str] = []
        self.trace = ConnTrace()
        self.jobs: list[asyncio.Task[Any]] = []

    async def run(self, rows: list[Row]) -> None:
        """Measure every scenario into ``rows``; whatever was started is stopped."""
        try:
            await self._setup()
            for kind in self.p.scenarios:
                row = await self._scenario(kind)
                if kind == self.p.scenarios[0]:
                    row.notes = self.setup_notes + row.notes
                rows.append(row)
        finally:
            await self._cleanup()

    async def _setup(self) -> None:
        p = self.p
        self.redis = redis = await asyncio.to_thread(start_redis, self.log_dir)
        if self.name == "node":
            self.server = await asyncio.to_thread(start_node, p.workers, redis, f"storm{self.run_tag}",
                                                  self.log_dir, p.start_timeout, node_lag_env())
        else:
            # info: uvicorn's own lines on worker deaths and start-ups (restart scenario)
            self.server = await asyncio.to_thread(start_relay, p.workers, redis, self.log_dir,
                                                  p.start_timeout, {"RELAY_LOG_LEVEL": "info"})
        server = self.server
        await wait_workers(server, 30.0)
        for _ in range(4 * server.workers):  # fresh connections: may land on each worker
            await asyncio.to_thread(http_status, f"http://127.0.0.1:{server.ports[0]}/healthz")
        print(f"[{self.name}] up on ports {server.ports}, redis {redis.port}", flush=True)
        factory = BodyFactory(int(p.body_kb * 1024), self.marker)
        # Idle pooled connections dropped after 3 s, before either server closes them (both after
        # 5 s): else a POST may race the server's close and fail through the client's doing.
        self.load = SteadyLoad(server.ports, self.instances, factory, p.http_pool, p.http_timeout,
                               int(time.time() * 1000), keepalive_s=3.0, trace=self.trace.config())
        # One QR per instance first, so that every subscribe snapshot carries one.
        seed = await self.load.run(0, 1000.0, p.instances / 1000.0)
        self.next_eid = seed.count
        for eid in accepted_eids(seed):
            self.newest[eid % p.instances] = eid
        if min(self.newest) < 0:
            raise TargetUnavailable(f"seeding: {sum(e < 0 for e in self.newest)} instances got no "
                                    f"2xx (statuses {sorted(set(seed.status))[:5]})")
        n_ports = len(server.ports)
        specs = [(i, server.ports[(i + i // p.instances) % n_ports], self.instances[i % p.instances])
                 for i in range(p.viewers)]
        self.pool = ReconnectPool(token("*"), self.marker, p.window, p.attempt_timeout)
        t0, tcp0 = time.monotonic(), tcp_counters()
        self.pool.add(specs, p.client_procs, p.connect_rate)
        st = await self.pool.wait_subscribed(30 + 3 * p.viewers / p.connect_rate)
        took = time.monotonic() - t0
        self.setup_notes.append(tcp_note(tcp0, tcp_counters(), "the first connections"))
        print(f"[{self.name}] {st.subscribed}/{p.viewers} viewers subscribed in {took:.1f}s"
              + (f"; failures: {st.errors}" if st.errors else ""), flush=True)
        if st.subscribed < p.viewers:
            raise TargetUnavailable(f"only {st.subscribed}/{p.viewers} viewers subscribed: {st.errors}")
        c = await self.pool.collect()
        wrong = sum(1 for k, i in enumerate(c.index)
                    if c.max_eid[k] != self.newest[i % p.instances])
        self.setup_notes.insert(0, f"{p.viewers} viewers subscribed in {took:.1f} s (at most "
                                   f"{p.connect_rate:g}/s, {st.attempts} attempts"
                                   + (f"; failures: {st.errors}" if st.errors else "")
                                   + f"); first snapshots without the seeded QR: {wrong}")

    async def _scenario(self, kind: str) -> Row:
        assert self.server and self.redis and self.redis.proc and self.load and self.pool
        p, server, pool = self.p, self.server, self.pool
        await pool.mark()
        relay = self.name == "relay"
        if relay:  # each scrape resets one worker's peak: start from clean peaks (setup stalls)
            await self.load.scrape_metric(server.ports[0], LAG_GAUGE, samples=4 * server.workers)
        log_offsets = {proc.log_path: proc.log_path.stat().st_size for proc in server.procs}
        stop, lag_stop = asyncio.Event(), asyncio.Event()
        first = self.next_eid
        load_task = self._spawn(self.load.run_until(
            first, p.rate, stop, p.pre + p.recover_timeout + p.tail + 10))
        lag = StallSamples()
        if relay:
            workers = relay_workers(server)
            probe = HealthProbe(server.ports, 3, 0.05,
                                lambda port, local: socket_owner(port, local, workers), workers)
        else:
            probe = HealthProbe(server.ports, 3, 0.05)
        probe_note = await probe.open()
        probe_task = self._spawn(probe.run(lag_stop))
        lag_task = (self._spawn(sample_relay_lag(self.load, server.ports[0], lag, p.lag_every,
                                                         lag_stop)) if self.name == "relay" else None)
        pre_ns = time.time_ns()
        gc0 = await relay_gc_pauses(server.ports[0]) if relay else None
        await asyncio.sleep(p.pre)

        cpu = TreeCpu(server.root_pids)
        client_pids = pool.pids + [os.getpid()]
        c0 = (cpu_seconds(client_pids), cpu_seconds([self.redis.proc.pid]), machine_busy_seconds())
        tcp0 = tcp_counters()
        w0 = time.monotonic()
        notes: list[str] = []
        side: asyncio.Task[str] | None = None
        if kind == "drop":
            event_ns = time.time_ns() + 100_000_000
            await pool.drop(event_ns, p.window)
        else:
            event_ns, victim, what = await asyncio.to_thread(kill_one, server)
            notes.append(f"SIGKILLed {what}")
            if self.name == "node":
                redis, prefix = self.redis, f"storm{self.run_tag}"
                side = self._spawn(asyncio.to_thread(
                    restart_node, server, 0,
                    lambda port, log: node_process(port, redis, prefix, log, node_lag_env()),
                    p.start_timeout))
            else:
                side = self._spawn(wait_workers(server, 60.0, since_ns=event_ns, gone=victim))
        st = await self._until_back(kind, event_ns, cpu, side)
        done_ns, wall = time.time_ns(), time.monotonic() - w0
        cpu.sample(server.root_pids)
        c1 = (cpu_seconds(client_pids), cpu_seconds([self.redis.proc.pid]), machine_busy_seconds())
        notes.append(tcp_note(tcp0, tcp_counters(), "the storm"))
        if not st.back or st.back < st.lost or st.subscribed < pool.total:
            notes.append(f"NOT RECOVERED within {p.recover_timeout:g} s: {st}")
        if side is not None:
            notes.append(await side)

        await asyncio.sleep(p.tail)
        stop.set()
        res = await load_task
        self.next_eid += res.count
        for eid in accepted_eids(res):
            self.newest[eid % p.instances] = max(self.newest[eid % p.instances], eid)
        await asyncio.sleep(p.grace)
        lag_stop.set()
        gc1 = await relay_gc_pauses(server.ports[0]) if relay else None
        await probe_task
        if lag_task is not None:
            await lag_task
            # Scrapes reach one worker at a time and are slow in a storm: a worker's stall can
            # end its peak unread. The stalls it logged (50 ms and more) count as well.
            lag.add_logged(relay_stalls(log_offsets))
        else:
            read_node_lag(sorted({proc.log_path for proc in server.procs} | set(log_offsets)), lag)
        c = await pool.collect()

        if kind == "drop" and c.drop_ns:
            event_ns = min(c.drop_ns)
            notes.append(f"client processes cut their connections within "
                         f"{(max(c.drop_ns) - event_ns) / 1e6:.0f} ms of each other")
        rec = recovery(c, event_ns)
        back_ns = event_ns + int((rec.last_ms or 0) * 1e6)
        end_ns = max(back_ns, event_ns + 1_000_000_000)
        lost, stale, down = lost_and_stale(res, self.newest, c)
        slack = int(2 * p.lag_every * 1e9) if self.name == "relay" else 0
        srv_stall = lag.max_between(event_ns, end_ns + slack)
        srv_before = lag.max_between(pre_ns + slack, event_ns)
        if worst := lag.noted(event_ns, end_ns + slack):
            who = "the worker's CPU time (main thread)" if relay else "the process's CPU time (all threads)"
            notes.append(f"server stalls of 50 ms or more, largest first (ran = {who} in the stall's "
                         f"window; the rest it waited for a CPU): {worst}")
        posts, posts_before = post_times(res, event_ns, end_ns), post_times(res, pre_ns, event_ns)
        stall = probe.max_between(event_ns, end_ns, made_before=event_ns)
        stall_before = probe.max_between(pre_ns, event_ns, made_before=event_ns)
        upd = update_latency(res, c, event_ns, end_ns)
        srv, red, cli, machine = cpu.seconds(), c1[1] - c0[1], c1[0] - c0[0], c1[2] - c0[2]
        notes += [
            f"before the storm: srv stall {fmt_ms(None if srv_before is None else srv_before * 1e3)}, "
            f"client stall {fmt_ms(stall_before)}, webhook max {fmt_ms(posts_before[-1] if posts_before else None)}; "
            f"during it: webhook POST->answer p99 {fmt_ms(pct(posts, 0.99))} max "
            f"{fmt_ms(posts[-1] if posts else None)}, POST->update (connected viewers) p99 "
            f"{fmt_ms(pct(upd, 0.99))} max {fmt_ms(upd[-1] if upd else None)} over {len(upd)} deliveries; "
            f"/healthz probes {len(probe.samples)} ({probe.errors} connection errors); {probe_note}",
            self.trace.note(event_ns, end_ns),
            f"successful attempts: TCP connect p50/p99/max {fmt_ms(pct(rec.tcp_ms, 0.5))} / "
            f"{fmt_ms(pct(rec.tcp_ms, 0.99))} / {fmt_ms(rec.tcp_ms[-1] if rec.tcp_ms else None)} of conn→snap; "
            f"attempts {rec.attempts} for {rec.affected} hit viewers"
            + (f"; failures: {c.errors}" if c.errors else "")
            + (f"; {rec.lost_twice} lost their connection twice" if rec.lost_twice else "")
            + (f"; {down} not subscribed at the end" if down else ""),
            f"webhooks: {res.count} sent at {p.rate:g}/s"
            + (f", errors {res.errors}" if res.errors else "")
            + (f", generator fell {res.max_schedule_lag_ms:.0f} ms behind" if res.max_schedule_lag_ms > 20 else ""),
            f"redis CPU {red:.2f} s",
        ]
        if relay:
            notes.append(gc_note(gc0, gc1))
        if lag_task is not None:
            slowest = max(lag.scrape_ms, default=None)
            notes.append(f"/metrics scrapes {len(lag.scrape_ms)}, slowest {fmt_ms(slowest)}")
        notes += server_notes({**{proc.log_path: 0 for proc in server.procs}, **log_offsets})
        return Row(target=self.name, scenario=kind, viewers=pool.total, affected=rec.affected,
                   back=rec.back, recovery_ms=rec.last_ms, from_event_ms=rec.from_event_ms,
                   conn_to_snap_ms=rec.conn_to_snap_ms,
                   server_stall_ms=None if srv_stall is None else srv_stall * 1e3,
                   client_stall_ms=stall, lost=lost, stale=stale,
                   non2xx=res.count - len(accepted_eids(res)), server_cpu_s=srv,
                   client_cores=cli / wall if wall > 0 else 0.0,
                   other_cores=max(0.0, machine - srv - red - cli) / wall if wall > 0 else 0.0,
                   notes=notes)

    async def _until_back(self, kind: str, event_ns: int, cpu: TreeCpu,
                          side: asyncio.Task[str] | None) -> Status:
        """Poll until every hit viewer is subscribed again (or --recover-timeout)."""
        assert self.pool is not None and self.server is not None
        p, total = self.p, self.pool.total
        deadline = time.monotonic() + p.recover_timeout
        while True:
            await asyncio.sleep(0.1)
            cpu.sample(self.server.root_pids)
            st = await self.pool.status()
            since = (time.time_ns() - event_ns) / 1e9
            settled = (st.lost >= total if kind == "drop"
                       else since >= 1.0 and (side is None or side.done()))
            if settled and st.back == st.lost and st.subscribed == total:
                return st
            if time.monotonic() > deadline:
                return st

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A scenario's background job, cancelled by ``_cleanup`` if still running (Ctrl-C)."""
        task = asyncio.create_task(coro)
        self.jobs.append(task)
        return task

    async def _cleanup(self) -> None:
        """Background jobs, then viewers, then the server, then Redis."""
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        if self.load is not None:
            await self.load.close()
        if self.pool is not None:
            await self.pool.close()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)

