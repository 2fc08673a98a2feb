"""Reconnect-storm benchmark: the relay and the Node reference peer, in the same run.

    .venv/bin/python bench/reconnect.py [--viewers 10000] [--instances 2000] [--workers 2]
        [--scenarios drop,restart] [--rate 100] [--window 1.0] [--client-procs 4]
        [--targets relay,node]

For each target: a private redis-server, the server (relay: `relay serve --workers W` with
RELAY_REDIS_URL; Node: W peer processes on W ports), one QR webhook per instance, then N light
viewers connected and subscribed (each holds its instance's snapshot). Then, under a steady
open-loop webhook load (--rate ev/s, the bodies of bench/webhooks.py):

  drop     every viewer's connection is reset by the client at once; each reconnects at a
           uniformly random moment of the next --window s, re-handshakes and re-subscribes;
  restart  one server process is SIGKILLed (relay: a uvicorn worker, which its supervisor
           replaces; Node: one peer, restarted on its port at once); its viewers reconnect after
           a random 0..--window s delay (and again after each failed attempt).

Measured per scenario: time until every hit viewer has its snapshot again (and p50/p99 per
viewer), the server's longest event-loop stall (relay: relay_loop_lag_max_seconds; Node: the
same measure from bench/node_lag.js), the longest answer to GET /healthz on kept-alive
connections during the storm (the same client-side figure for both), updates lost and viewers
left stale, non-2xx, server CPU, client CPU. Prints one table and writes it as Markdown to
bench/results/reconnect.md (--out). Everything listens on 127.0.0.1; everything started is
stopped at the end, on errors and on Ctrl-C. Exit status 0 only when every target ran and every
hit viewer came back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support, as in run.py

from params import machine_line  # noqa: E402
from reconnect_report import LEGEND, Row, markdown_table, text_table  # noqa: E402
from reconnect_run import StormParams, StormTarget  # noqa: E402
from run import each_target  # noqa: E402
from cpushare import scheduling_line, share_cpu  # noqa: E402

from tests.support.fixtures import SHARED  # noqa: E402
from tests.support.procs import stop_all  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> StormParams:
    """Command line (``--help`` lists every option)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--viewers", type=int, default=10_000, help="Socket.IO viewers")
    add("--instances", type=int, default=2_000, help="instances (viewer i watches instance i %% I)")
    add("--workers", type=int, default=2, help="server processes (relay: one port; node: one port each)")
    add("--targets", default="relay,node", help="comma list of: relay, node")
    add("--scenarios", default="drop,restart", help="comma list of: drop, restart (in that order)")
    add("--rate", type=float, default=100.0, help="webhooks per second during each scenario")
    add("--window", type=float, default=1.0, help="reconnect delays are uniform in [0, window) s")
    add("--client-procs", type=int, default=4, help="viewer processes of the load client")
    add("--connect-rate", type=float, default=2000.0, help="first connections per second (setup)")
    add("--pre", type=float, default=3.0, help="seconds of load before the event")
    add("--tail", type=float, default=2.0, help="seconds of load after the last viewer is back")
    add("--grace", type=float, default=3.0, help="seconds after the load stops before scoring")
    add("--recover-timeout", type=float, default=60.0, help="give up waiting for viewers after this")
    add("--attempt-timeout", type=float, default=20.0,
        help="one connect+handshake attempt, at most (s; socket.io-client's default timeout)")
    add("--body-kb", type=float, default=6.0, help="webhook body size in KB")
    add("--http-pool", type=int, default=64, help="max concurrent webhook connections")
    add("--http-timeout", type=float, default=10.0, help="per-webhook timeout, s (counts as non-2xx)")
    add("--start-timeout", type=float, default=120.0, help="seconds to wait for a server's /healthz")
    add("--lag-every", type=float, default=0.25, help="relay /metrics scrape interval, s")
    add("--out", type=Path, default=RESULTS_DIR,
        help="folder for reconnect.md and the servers' logs (default: bench/results)")
    a = p.parse_args(argv)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    if not targets or set(targets) - {"relay", "node"}:
        p.error("--targets: relay and/or node")
    if not scenarios or set(scenarios) - {"drop", "restart"}:
        p.error("--scenarios: drop and/or restart")
    if a.viewers < 1 or a.instances < 1 or a.workers < 1 or a.rate <= 0 or a.window < 0:
        p.error("--viewers, --instances, --workers, --rate must be positive, --window >= 0")
    if "restart" in scenarios and a.workers < 2:
        p.error("restart needs --workers >= 2 (a survivor)")
    return StormParams(
        viewers=a.viewers, instances=a.instances, workers=a.workers, targets=targets,
        scenarios=scenarios, rate=a.rate, window=a.window, client_procs=a.client_procs,
        connect_rate=a.connect_rate, pre=a.pre, tail=a.tail, grace=a.grace,
        recover_timeout=a.recover_timeout, attempt_timeout=a.attempt_timeout, body_kb=a.body_kb,
        http_pool=a.http_pool, http_timeout=a.http_timeout, start_timeout=a.start_timeout,
        lag_every=a.lag_every, out=a.out)


def budget_seconds(p: StormParams) -> float:
    """Upper bound for the whole run; the harness stops itself after it."""
    per_scenario = p.pre + p.recover_timeout + p.tail + p.grace + p.http_timeout + 60
    per_target = p.start_timeout + 60 + 3 * p.viewers / p.connect_rate + len(p.scenarios) * per_scenario
    return 60 + len(p.targets) * per_target


def raise_open_files(needed: int) -> str:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and all it starts (the relay
    sizes its connection cap from it). Returns a warning when even that is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    return "" if limit >= needed else f"open-file limit {limit} < {needed}: raise it (ulimit -Hn)"


async def main_async(p: StormParams, rows: list[Row], skipped: list[str]) -> None:
    """Each target in turn; one that cannot start or fails is reported and skipped."""
    async def run(name: str, run_tag: str, log_dir: Path) -> None:
        await StormTarget(name, p, run_tag, log_dir).run(rows)
    async with asyncio.timeout(budget_seconds(p)):
        await each_target(p.targets, run, p.out / "logs", "reconnect-", skipped)


def write_outputs(p: StormParams, rows: list[Row], status: str, notes: list[str]) -> Path:
    """Print the table and notes; write them as Markdown (reconnect.md, or reconnect-partial.md
    when cut short, so that an interrupted run never replaces the last complete table)."""
    load = os.getloadavg()
    lines = header_lines(p) + [f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
                               f"(1/5/15 min; `uptime`)"]
    table = text_table(rows) if rows else "(no rows measured)"
    notes = notes + [f"{r.target} {r.scenario}: {n}" for r in rows for n in r.notes]
    print("\n" + "\n".join(lines) + (f"\n{status}" if status else "") + "\n" + table)
    if notes:
        print("notes:\n" + "\n".join(f"- {n}" for n in notes))
    p.out.mkdir(parents=True, exist_ok=True)
    command = " ".join([".venv/bin/python bench/reconnect.py", *sys.argv[1:]])
    md = [f"<!-- generated by: {command} -->", *(f"{line}  " for line in lines)]
    if status:
        md.append(f"**{status}**  ")
    md += ["", markdown_table(rows) if rows else "(no rows measured)", "", LEGEND]
    if notes:
        md += ["", "Notes:", *(f"- {n}" for n in notes)]
    out = p.out / ("reconnect-partial.md" if status else "reconnect.md")
    out.write_text("\n".join(md) + "\n")
    print(f"\nwritten: {out}")
    return out


def header_lines(p: StormParams) -> list[str]:
    return [machine_line(), scheduling_line(),
            f"params: viewers={p.viewers} instances={p.instances} workers={p.workers} "
            f"scenarios={','.join(p.scenarios)} rate={p.rate:g}/s window={p.window:g}s "
            f"client-procs={p.client_procs} body={p.body_kb:g}KB pre={p.pre:g}s tail={p.tail:g}s "
            f"grace={p.grace:g}s"]


def main(argv: list[str] | None = None) -> int:
    """``make bench-reconnect``: run, print, write; exit 130 when interrupted, 1 when a target
    failed or a viewer did not recover."""
    p = parse_args(argv)
    share_cpu()
    if shutil.which("redis-server") is None:
        print("redis-server not found on PATH (`make test` installs it)", file=sys.stderr)
        return 2
    if not (SHARED / "fixtures" / "evolution").is_dir():
        print(f"no gateway fixtures under {SHARED}: set RELAY_SHARED_DIR to the shared folder",
              file=sys.stderr)
        return 2
    notes: list[str] = []
    if warning := raise_open_files(p.viewers + 2000):
        notes.append(warning)
    rows: list[Row] = []
    skipped: list[str] = []
    status = ""
    started = time.monotonic()
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop  # a cheaper loop: less load-client CPU competing with the server

        run = uvloop.run
    except ImportError:
        pass
    try:
        run(main_async(p, rows, skipped))
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "INTERRUPTED: partial results"
    except TimeoutError:
        status = f"STOPPED: run exceeded its {budget_seconds(p):.0f}s budget; partial results"
    finally:
        stop_all()
    notes = skipped + notes + [f"run took {time.monotonic() - started:.0f} s"]
    write_outputs(p, rows, status, notes)
    if status.startswith("INTERRUPTED"):
        return 130
    return 0 if rows and not skipped and all(r.back == r.affected for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
