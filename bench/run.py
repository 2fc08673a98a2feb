"""Side-by-side benchmark of the relay and the Node reference peer.

    .venv/bin/python bench/run.py [--workers 2] [--clients 1000] [--instances 200]
        [--rates 100,500,1000] [--duration 10] [--body-kb 6] [--targets relay,node]

For each target, in the same run and with the same load client: start a private redis-server,
start the server under test, connect C light Socket.IO viewers over I instances, then for each
rate post webhooks open-loop for D seconds and measure delivery latency, losses, HTTP
rejections, server CPU per event, RSS per idle viewer and pauses. Prints one table and writes it
as Markdown to bench/results/latest.md. Everything it starts is killed at the end, on errors
and on Ctrl-C; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # helper modules live next to this file

from procs import (
    cpu_seconds,
    http_status,
    machine_busy_seconds,
    process_tree,
    rss_bytes,
    stop_all,
)
from report import LEGEND, Row, markdown_table, percentile, text_table
from targets import (
    Redis,
    Server,
    TargetUnavailable,
    start_node,
    start_redis,
    start_relay,
)
from viewers import ViewerPool, ViewerSpec
from webhooks import BodyFactory, WebhookLoad

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
FIXTURE = Path("/work/shared/fixtures/evolution/webhook-qrcode-updated.json")
LAG_GAUGE = "relay_loop_lag_max_seconds"


@dataclass
class Params:
    """Command-line parameters."""

    workers: int
    clients: int
    instances: int
    rates: list[float]
    duration: float
    body_kb: float
    targets: list[str]
    client_procs: int
    grace: float
    warmup: float
    http_pool: int
    http_timeout: float
    start_timeout: float
    rss_settle: float
    drain: float


def parse_args(argv: list[str] | None = None) -> Params:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes (node: one port each; relay: one port)",
    )
    p.add_argument("--clients", type=int, default=1000, help="Socket.IO viewers")
    p.add_argument(
        "--instances",
        type=int,
        default=200,
        help="instances (viewers and events spread round-robin)",
    )
    p.add_argument(
        "--rates",
        default="100,500,1000",
        help="webhook rates to step through, events/s",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per rate step")
    p.add_argument("--body-kb", type=float, default=6.0, help="webhook body size in KB")
    p.add_argument("--targets", default="relay,node", help="comma list of: relay, node")
    p.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="viewer processes of the load client",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds after a step's last send to wait for deliveries",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="unmeasured seconds at the lowest rate before the steps",
    )
    p.add_argument(
        "--http-pool", type=int, default=64, help="max concurrent webhook connections"
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=10.0,
        help="per-request timeout, s (counts as non-2xx)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a server's /healthz",
    )
    p.add_argument(
        "--drain",
        type=float,
        default=15.0,
        help="after a step with losses, wait up to this long for stragglers (reported, not counted)",
    )
    p.add_argument(
        "--rss-settle",
        type=float,
        default=10.0,
        help="seconds RSS must stay flat (1 MiB) before it is sampled",
    )
    a = p.parse_args(argv)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ("relay", "node"):
            p.error(f"unknown target {t!r} (use relay and/or node)")
    if a.clients < 1 or a.instances < 1 or a.workers < 1:
        p.error("--clients, --instances and --workers must be >= 1")
    return Params(
        workers=a.workers,
        clients=a.clients,
        instances=a.instances,
        rates=[float(r) for r in a.rates.split(",") if r.strip()],
        duration=a.duration,
        body_kb=a.body_kb,
        targets=targets,
        client_procs=a.client_procs,
        grace=a.grace,
        warmup=a.warmup,
        http_pool=a.http_pool,
        http_timeout=a.http_timeout,
        start_timeout=a.start_timeout,
        rss_settle=a.rss_settle,
        drain=a.drain,
    )


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def header(params: Params, body_size: int) -> list[str]:
    """Machine and parameter lines printed above the table."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_v = _version(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0]
    node_v = _version(["node", "--version"])
    now = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rates = ",".join(f"{r:g}" for r in params.rates)
    machine = (
        f"machine: nproc={os.cpu_count()} ({cpu}), python {platform.python_version()}, "
        f"node {node_v}, redis {redis_v}, {now}"
    )
    per_instance = params.clients / params.instances
    settings = (
        f"params: workers={params.workers} clients={params.clients} "
        f"instances={params.instances} (~{per_instance:g} viewers/instance) "
        f"rates={rates} duration={params.duration:g}s body={body_size} B "
        f"grace={params.grace:g}s client-procs={params.client_procs} "
        f"http-pool={params.http_pool}"
    )
    return [
        machine,
        settings,
    ]


class TargetRun:
    """Everything about benchmarking one target; `run()` yields its rows."""

    def __init__(self, name: str, params: Params, run_tag: str, log_dir: Path) -> None:
        self.name = name
        self.p = params
        self.run_tag = run_tag
        self.log_dir = log_dir
        self.secret = secrets.token_urlsafe(32)
        self.marker = f"BENCH{run_tag}{name[:1].upper()}E"
        self.instances = [f"bench-{i:04d}" for i in range(params.instances)]
        self.factory = BodyFactory(FIXTURE, int(params.body_kb * 1024), self.marker)
        self.redis: Redis | None = None
        self.server: Server | None = None
        self.pool: ViewerPool | None = None
        self.load: WebhookLoad | None = None
        self.next_eid = 0
        self.viewers_per_instance = [0] * params.instances
        self.viewers_of: list[list[int]] = [[] for _ in range(params.instances)]
        self.kb_per_viewer: float | None = None
        self.kb_marginal: float | None = None
        self._redis_log_seen = 0
        self.setup_notes: list[str] = []

    def token(self) -> str:
        import jwt

        claims = {"instances": ["*"], "exp": int(time.time()) + 3600}
        return str(jwt.encode(claims, self.secret, algorithm="HS256"))

    async def run(self, rows: list[Row]) -> None:
        try:
            await self._run(rows)
        finally:
            await self._cleanup()

    async def _run(self, rows: list[Row]) -> None:
        p = self.p
        self.redis = await asyncio.to_thread(start_redis, self.log_dir)
        if self.name == "node":
            self.server = await asyncio.to_thread(
                start_node,
                p.workers,
                self.redis,
                f"bench{self.run_tag}",
                self.log_dir,
                p.start_timeout,
            )
        else:
            self.server = await asyncio.to_thread(
                start_relay,
                p.workers,
                self.redis,
                self.secret,
                self.log_dir,
                p.start_timeout,
            )
        server = self.server
        await self._settle_workers(server)
        print(
            f"[{self.name}] up on ports {server.ports}, redis {self.redis.port}",
            flush=True,
        )

        # Idle RSS before any viewer exists (see _stable_rss for why this takes a while).
        rss0 = await self._stable_rss()

        specs = [
            ViewerSpec(
                index=i,
                port=server.ports[(i // p.instances) % len(server.ports)],
                instance=self.instances[i % p.instances],
            )
            for i in range(p.clients)
        ]
        # Viewers connect in two halves, so that besides the per-viewer average asked for
        # we get the marginal cost of the second half. The average also carries one-time
        # effects (V8 young-generation growth; V8's memory reducer handing back ~20 MiB of
        # startup garbage per Node process at an unpredictable moment, which can even make
        # it negative); the marginal, measured after the first connect storm, is the stable
        # figure across runs.
        self.pool = ViewerPool(self.token(), self.marker)
        half = max(1, p.clients // 2)
        ok: list[int] = []
        errors: list[str] = []
        rss_half = rss0
        second_ok = 0
        t0 = time.monotonic()
        shares = (
            (p.client_procs + 1) // 2,
            max(1, p.client_procs // 2),
        )  # processes per half
        for n_part, (part, procs) in enumerate(
            zip((specs[:half], specs[half:]), shares)
        ):
            if not part:
                continue
            self.pool.add(part, procs if len(specs) > half else p.client_procs)
            got, errs = await self.pool.wait_ready(timeout=60 + len(part) / 20)
            ok += got
            errors += errs
            if n_part == 1:
                second_ok = len(got)
            if n_part == 0:
                rss_half = await self._stable_rss()
        for i in ok:
            self.viewers_per_instance[i % p.instances] += 1
            self.viewers_of[i % p.instances].append(i)
        print(
            f"[{self.name}] {len(ok)}/{p.clients} viewers subscribed in {time.monotonic() - t0:.1f}s"
            + (f"; errors: {errors[:3]}" if errors else ""),
            flush=True,
        )
        if not ok:
            raise TargetUnavailable(
                f"no viewer could connect and subscribe: {errors[:3]}"
            )
        if len(ok) < p.clients:
            self.setup_notes.append(
                f"only {len(ok)}/{p.clients} viewers subscribed ({errors[:2]})"
            )

        # Idle RSS with every viewer connected.
        rss1 = await self._stable_rss()
        self.kb_per_viewer = (rss1 - rss0) / 1024 / len(ok)
        if second_ok:
            self.kb_marginal = (rss1 - rss_half) / 1024 / second_ok
        self.setup_notes.append(
            f"server RSS {rss0 / 2**20:.1f} -> {rss_half / 2**20:.1f} (half the viewers) "
            f"-> {rss1 / 2**20:.1f} MiB (all)"
        )
        print(
            f"[{self.name}] {self.setup_notes[-1]}; KB/viewer: "
            f"average {self.kb_per_viewer:.1f}, marginal {self.kb_marginal or 0:.1f}",
            flush=True,
        )

        self.load = WebhookLoad(
            server.ports,
            self.instances,
            self.factory,
            p.http_pool,
            p.http_timeout,
            int(time.time() * 1000),
        )
        if p.warmup > 0 and p.rates:
            warm = await self._step(min(p.rates), p.warmup)
            print(
                f"[{self.name}] warm-up (unmeasured): {warm.offered:g} ev/s, p50 {warm.p50_ms or 0:.1f} ms, "
                f"lost {warm.lost}, non-2xx {warm.non2xx}",
                flush=True,
            )
        for rate in p.rates:
            if not server.alive():
                print(
                    f"[{self.name}] server died; skipping remaining rates", flush=True
                )
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
        """New redis-server complaints since the last call, e.g. a pub/sub subscriber that
        fell behind and was disconnected (client-output-buffer-limit pubsub, 32 MB)."""
        assert self.redis is not None
        try:
            lines = self.redis.proc.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        new, self._redis_log_seen = lines[self._redis_log_seen :], len(lines)
        kicked = [ln for ln in new if "output buffer limits" in ln]
        if not kicked:
            return []
        kinds = sorted({"pubsub" if " flags=P " in ln else "normal" for ln in kicked})
        note = (
            f"redis closed {len(kicked)} client connection(s) ({', '.join(kinds)}) for "
            "exceeding client-output-buffer-limit: a subscriber fell behind"
        )
        return [note]

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
        return (
            f"drain: {later} more deliveries of this step arrived in the "
            f"{time.monotonic() - t0:.1f} s after the grace period (cap --drain {self.p.drain:g} s)"
        )

    async def _stable_rss(self) -> int:
        """Server-tree RSS once it has stopped moving.

        V8's memory reducer gives back ~20 MiB per Node process at an unpredictable moment
        8-30 s after start or after a burst (its timer restarts while the heap is busy);
        measuring before that charges startup garbage to the viewers (we saw negative
        KB/viewer with short windows). So: sample every 0.5 s until `rss_settle` seconds of
        samples lie within 1 MiB, or give up after 3x that and use the last sample.
        """
        assert self.server is not None
        window = max(1, int(self.p.rss_settle / 0.5))
        samples: list[int] = []
        deadline = time.monotonic() + 3 * self.p.rss_settle + 2
        while True:
            samples.append(rss_bytes(process_tree(self.server.root_pids)))
            last = samples[-window:]
            if (
                len(last) == window and max(last) - min(last) < 2**20
            ) or time.monotonic() > deadline:
                return samples[-1]
            await asyncio.sleep(0.5)

    async def _settle_workers(self, server: Server) -> None:
        """With W workers behind one port, /healthz=200 from one worker is not all of them."""
        if server.name != "relay" or server.workers <= 1:
            await asyncio.sleep(0.5)
            return
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and len(process_tree(server.root_pids)) < server.workers + 1
        ):
            await asyncio.sleep(0.2)
        # A few fresh-connection health checks that may land on different workers.
        for _ in range(4 * server.workers):
            await asyncio.to_thread(
                http_status, f"http://127.0.0.1:{server.ports[0]}/healthz"
            )
        await asyncio.sleep(1.0)

    async def _step(self, rate: float, duration: float) -> Row:
        """One open-loop rate step and its measurements."""
        assert self.server and self.redis and self.pool and self.load
        p = self.p
        first = self.next_eid
        await self.pool.start_step(first)
        server_pids = process_tree(self.server.root_pids)
        client_pids = self.pool.pids + [os.getpid()]
        s0, r0, c0 = (
            cpu_seconds(server_pids),
            cpu_seconds([self.redis.proc.pid]),
            cpu_seconds(client_pids),
        )
        g0 = cpu_seconds([os.getpid()])
        m0 = machine_busy_seconds()
        w0 = time.monotonic()

        res = await self.load.run(first, rate, duration)
        self.next_eid += res.count
        n = res.count
        accepted = [k for k in range(n) if 200 <= res.status[k] < 300]
        expected = sum(
            self.viewers_per_instance[self.load.instance_of(first + k)]
            for k in accepted
        )
        last_send = max(res.send_ns)
        deadline = last_send + int(p.grace * 1e9)
        # Wait for deliveries, but no longer than the grace period after the last send.
        while time.time_ns() < deadline:
            got, _ = await self.pool.count()
            if got >= expected:
                break
            await asyncio.sleep(0.1)

        s1, r1, c1 = (
            cpu_seconds(server_pids),
            cpu_seconds([self.redis.proc.pid]),
            cpu_seconds(client_pids),
        )
        g1 = cpu_seconds([os.getpid()])
        m1 = machine_busy_seconds()
        wall = time.monotonic() - w0
        d = await self.pool.collect()

        seen: set[int] = set()
        lat_ms: list[float] = []
        recv_times: list[int] = []
        stale = rejected_delivered = misrouted = dup = late = 0
        n_inst = p.instances
        for eid, rns, conn in zip(d.eids, d.recv_ns, d.conns):
            k = eid - first
            if k < 0 or k >= n:
                stale += 1  # a late delivery from the previous step (or warm-up)
                continue
            if not 200 <= res.status[k] < 300:
                rejected_delivered += 1
                continue
            if conn % n_inst != eid % n_inst:
                misrouted += 1
                continue
            key = (eid << 24) | conn
            if key in seen:
                dup += 1
                continue
            if rns > deadline:
                late += 1
                continue
            seen.add(key)
            lat_ms.append((rns - res.send_ns[k]) / 1e6)
            recv_times.append(rns)
        lat_ms.sort()
        recv_times.sort()

        # Split the losses: a viewer that missed event e but later received a newer event of
        # the same instance only missed an intermediate snapshot (coalesced or dropped by the
        # ordering rules: harmless for a latest-state channel); one whose newest delivery is
        # older than the instance's newest accepted event ends the step showing stale state.
        newest_seen: dict[int, int] = {}
        for key in seen:
            conn, eid = key & 0xFFFFFF, key >> 24
            if eid > newest_seen.get(conn, -1):
                newest_seen[conn] = eid
        newest_sent: dict[int, int] = {}
        missing = superseded = 0
        for k in accepted:
            eid = first + k
            inst = eid % n_inst
            newest_sent[inst] = max(newest_sent.get(inst, -1), eid)
            for conn in self.viewers_of[inst]:
                if ((eid << 24) | conn) not in seen:
                    missing += 1
                    if newest_seen.get(conn, -1) > eid:
                        superseded += 1
        stale_final = sum(
            1
            for inst, eid in newest_sent.items()
            for conn in self.viewers_of[inst]
            if newest_seen.get(conn, -1) < eid
        )
        gap = max((b - a for a, b in itertools.pairwise(recv_times)), default=None)

        ok_done = [res.done_ns[k] for k in accepted]
        if ok_done:
            span = (max(ok_done) - min(res.send_ns)) / 1e9 + 1.0 / rate
            achieved = len(accepted) / span
        else:
            achieved = 0.0
        per_event = len(accepted) or n

        pause = "n/a"
        lag = await self.load.scrape_metric(
            self.server.ports[0], LAG_GAUGE, samples=3 * self.server.workers + 2
        )
        notes: list[str] = [
            f"client cores: webhook generator {(g1 - g0) / wall:.2f}, viewers {((c1 - c0) - (g1 - g0)) / wall:.2f}"
        ]
        if lag is not None:
            pause = f"{max(lag) * 1e3:.1f}" if lag else "none"
            notes.append(
                f"{LAG_GAUGE} samples (ms): {sorted({round(v * 1e3, 1) for v in lag})}"
            )
        if res.errors:
            notes.append(f"HTTP errors: {res.errors}")
        if res.max_schedule_lag_ms > 5:
            notes.append(
                f"load generator fell {res.max_schedule_lag_ms:.1f} ms behind its schedule"
            )
        if missing:
            notes.append(
                f"lost {missing}: {superseded} superseded by a newer update of the same instance, "
                f"{missing - superseded} not; viewers left showing a stale final state: {stale_final}"
            )
        for label, count in (
            ("late (after grace)", late),
            ("duplicate", dup),
            ("misrouted", misrouted),
            ("delivered though rejected", rejected_delivered),
            ("from previous step", stale),
            ("updates without marker", d.unmatched),
            ("viewer disconnects", d.disconnects),
        ):
            if count:
                notes.append(f"{label}: {count}")
        if not accepted:
            notes.insert(0, f"no 2xx: statuses {sorted(set(res.status))[:5]}")
        if missing:
            # Not part of the figures: tells "slow" from "never", and keeps one step's
            # backlog out of the next step's latency and CPU.
            notes.append(await self._drain(first, n))

        return Row(
            target=self.name,
            workers=self.server.workers,
            offered=rate,
            achieved=achieved,
            p50_ms=percentile(lat_ms, 0.50),
            p99_ms=percentile(lat_ms, 0.99),
            max_ms=lat_ms[-1] if lat_ms else None,
            lost=max(0, expected - len(lat_ms)),
            non2xx=n - len(accepted),
            cpu_ms_per_event=(s1 - s0) * 1e3 / per_event,
            kb_per_viewer=self.kb_per_viewer,
            kb_marginal=self.kb_marginal,
            redis_ms_per_event=(r1 - r0) * 1e3 / per_event,
            server_pause_ms=pause,
            client_gap_ms=gap / 1e6 if gap is not None else None,
            client_cores=(c1 - c0) / wall if wall > 0 else 0.0,
            other_cores=max(0.0, (m1 - m0) - (s1 - s0) - (r1 - r0) - (c1 - c0)) / wall
            if wall > 0
            else 0.0,
            notes=notes,
        )

    async def _cleanup(self) -> None:
        """Viewers first (clean websocket closes), then the server, then Redis."""
        if self.load is not None:
            await self.load.close()
        if self.pool is not None:
            await self.pool.close()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.proc.stop)


def budget_seconds(p: Params) -> float:
    """Upper bound for the whole run; the harness stops itself after it."""
    per_step = p.duration + p.grace + p.http_timeout + p.drain + 20
    per_target = (
        p.start_timeout
        + 90
        + 3 * (3 * p.rss_settle + 3)
        + p.clients / 10
        + (len(p.rates) + 1) * per_step
    )
    return 60 + len(p.targets) * per_target


def prune_logs(root: Path, keep: int) -> None:
    """Keep the server logs of the last `keep` runs only (they are for post-mortems)."""
    if not root.is_dir():
        return
    runs = sorted(
        (d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime
    )
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


async def main_async(p: Params, rows: list[Row], skipped: list[str]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is not None:
        loop.add_signal_handler(
            signal.SIGTERM, task.cancel
        )  # SIGTERM: same clean path as Ctrl-C
    run_tag = secrets.token_hex(3)
    log_dir = RESULTS_DIR / "logs" / run_tag
    prune_logs(RESULTS_DIR / "logs", keep=9)
    print(f"logs: {log_dir}", flush=True)
    async with asyncio.timeout(budget_seconds(p)):
        for name in p.targets:
            try:
                await TargetRun(name, p, run_tag, log_dir).run(rows)
            except TargetUnavailable as err:
                print(f"[{name}] SKIPPED: {err}", flush=True)
                skipped.append(f"{name} skipped: {str(err).splitlines()[0]}")
            except (TimeoutError, OSError, RuntimeError, ValueError, EOFError) as err:
                print(f"[{name}] FAILED: {type(err).__name__}: {err}", flush=True)
                skipped.append(f"{name} failed: {type(err).__name__}: {err}")


def write_outputs(p: Params, rows: list[Row], status: str, skipped: list[str]) -> None:
    body_size = BodyFactory(FIXTURE, int(p.body_kb * 1024), "BENCHxxxxxxE").size
    lines = header(p, body_size)
    table = text_table(rows) if rows else "(no rows measured)"
    print()
    print("\n".join(lines))
    if status:
        print(status)
    print(table)
    notes = [f"- {s}" for s in skipped] + [
        f"- {r.target} @ {r.offered:g}: {n}" for r in rows for n in r.notes
    ]
    if notes:
        print("notes:\n" + "\n".join(notes))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python bench/run.py", *sys.argv[1:]])
    md = [
        f"<!-- generated by: {command} -->",
        *(f"{line}  " for line in lines),
    ]
    if status:
        md.append(f"**{status}**  ")
    md += ["", markdown_table(rows) if rows else "(no rows measured)", "", LEGEND]
    if notes:
        md += ["", "Notes:", *notes]
    # An interrupted or over-budget run must not clobber the last complete table.
    out = RESULTS_DIR / ("partial.md" if status else "latest.md")
    out.write_text("\n".join(md) + "\n")
    print(f"\nwritten: {out}")


def main() -> int:
    p = parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server not found on PATH", file=sys.stderr)
        return 2
    rows: list[Row] = []
    skipped: list[str] = []
    status = ""
    try:
        try:
            import uvloop

            uvloop.run(main_async(p, rows, skipped))
        except ImportError:
            asyncio.run(main_async(p, rows, skipped))
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "INTERRUPTED: partial results"
    except TimeoutError:
        status = f"STOPPED: run exceeded its {budget_seconds(p):.0f}s budget; partial results"
    finally:
        stop_all()  # anything a failed path left behind
    write_outputs(p, rows, status, skipped)
    return 130 if status.startswith("INTERRUPTED") else 0


if __name__ == "__main__":
    sys.exit(main())
