"""The benchmark's parameters (command line) and the machine/parameter lines above its table."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from cpushare import scheduling_line

TARGETS = ("relay", "relay-cluster", "node")


@dataclass
class Params:
    """Command-line parameters of ``bench/run.py``."""

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


def parse_args(doc: str | None, argv: list[str] | None = None) -> Params:
    """Parse ``argv`` (default: sys.argv); ``doc`` is the help text."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--workers", type=int, default=2,
        help="server processes (node: one port each; relay: one port)")
    add("--clients", type=int, default=1000, help="Socket.IO viewers")
    add("--instances", type=int, default=200,
        help="instances (viewers and events spread round-robin)")
    add("--rates", default="100,500,1000", help="webhook rates to step through, events/s")
    add("--duration", type=float, default=10.0, help="seconds per rate step")
    add("--body-kb", type=float, default=6.0, help="webhook body size in KB")
    add("--targets", default="relay,node",
        help="comma list of: relay, relay-cluster (the relay on a private 3-master Redis "
        "Cluster), node")
    add("--client-procs", type=int, default=2, help="viewer processes of the load client")
    add("--grace", type=float, default=3.0,
        help="seconds after a step's last send to wait for deliveries")
    add("--warmup", type=float, default=2.0,
        help="unmeasured seconds at the lowest rate before the steps")
    add("--http-pool", type=int, default=64, help="max concurrent webhook connections")
    add("--http-timeout", type=float, default=10.0,
        help="per-request timeout, s (counts as non-2xx)")
    add("--start-timeout", type=float, default=120.0,
        help="seconds to wait for a server's /healthz")
    add("--drain", type=float, default=15.0,
        help="after a step with losses, wait up to this long for stragglers (reported, not counted)")
    add("--rss-settle", type=float, default=10.0,
        help="seconds RSS must stay flat (1 MiB) before it is sampled")
    a = p.parse_args(argv)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r} (use any of {', '.join(TARGETS)})")
    if a.clients < 1 or a.instances < 1 or a.workers < 1:
        p.error("--clients, --instances and --workers must be >= 1")
    return Params(workers=a.workers, clients=a.clients, instances=a.instances,
                  rates=[float(r) for r in a.rates.split(",") if r.strip()], duration=a.duration,
                  body_kb=a.body_kb, targets=targets, client_procs=a.client_procs, grace=a.grace,
                  warmup=a.warmup, http_pool=a.http_pool, http_timeout=a.http_timeout,
                  start_timeout=a.start_timeout, rss_settle=a.rss_settle, drain=a.drain)


def budget_seconds(p: Params) -> float:
    """Upper bound for the whole run; the harness stops itself after it."""
    per_step = p.duration + p.grace + p.http_timeout + p.drain + 20
    per_target = (p.start_timeout + 90 + 3 * (3 * p.rss_settle + 3) + p.clients / 10
                  + (len(p.rates) + 1) * per_step)
    return 60 + len(p.targets) * per_target


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "not found"


def header(p: Params, body_size: int) -> list[str]:
    """Machine and parameter lines printed above the table."""
    rates = ",".join(f"{r:g}" for r in p.rates)
    return [
        machine_line(),
        scheduling_line(),
        f"params: workers={p.workers} clients={p.clients} instances={p.instances} "
        f"(~{p.clients / p.instances:g} viewers/instance) rates={rates} duration={p.duration:g}s "
        f"body={body_size} B grace={p.grace:g}s client-procs={p.client_procs} "
        f"http-pool={p.http_pool}",
    ]


def machine_line() -> str:
    """CPU, core count, Python, Node and Redis versions, and the time: the first header line."""
    return (f"machine: nproc={os.cpu_count()} ({_cpu()}), python {platform.python_version()}, "
            f"node {_version(['node', '--version'])}, redis {_redis_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def relay_line(libs: Sequence[str]) -> str:
    """The relay's commit, the machine and the versions of ``libs``: the first line of the
    hardening and storm reports."""
    git = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "describe",
                          "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(f"{name} {version(name)}" for name in libs)
    return (f"relay {git or '?'}; machine: nproc={os.cpu_count()} ({_cpu()}), python "
            f"{platform.python_version()}, redis-server {_redis_version()}, {versions}; "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def uptime() -> str:
    """`uptime`'s line (the load averages), or /proc/loadavg without it."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average " + Path("/proc/loadavg").read_text().strip()


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _redis_version() -> str:
    return _version(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0]