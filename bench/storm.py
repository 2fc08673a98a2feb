"""The storm of a gateway that cannot reach WhatsApp: what it costs the relay.

    .venv/bin/python bench/storm.py [--instances 1000] [--rate-per-instance 3] [--duration 20]
        [--warmup 5] [--viewers 100] [--workers 2] [--targets memory,redis]

A real Evolution API 2.3.6 that cannot reach WhatsApp sends ``connection.update {state:
"connecting", statusReason: 200}`` 2-3 times a second per instance, forever
(shared/fixtures/CAPTURED.md). The relay should turn those repeats into nothing: no update for
viewers, no log line per event, little CPU. This measures it against real `relay serve`
processes on 127.0.0.1, per configuration (1 worker on in-memory state; --workers workers on a
private redis-server): Socket.IO viewers subscribe to some of the instances, the relay's idle CPU
is measured over an idle window as long as the storm's, then every instance storms the captured
webhook (re-stamped per event) at --rate-per-instance events/s, open-loop, over pipelined
keep-alive connections: a warm-up (the first event of each instance makes the one `connecting`
update), then the measured window. RELAY_QR_WAIT is set so that the pairing watchdog fires in the
middle of the window: one `no_qr` update and one log line per watched instance, and nothing else.

Prints one table (relay CPU per storm event and against idle, viewers' updates, relay log lines,
Redis commands per event, redis-server and load-generator CPU apart, what the machine's other
programs took) and what did not hold, and writes the same as Markdown to bench/results/storm.md
(bench/results/storm-partial.md when options differ from the defaults or the run was cut short).
Logs stay in bench/results/logs/storm-<tag>/. About 2 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

# Run as a script, sys.path[0] is bench/; the repo root makes tests.support importable.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import storm_run  # noqa: E402
from storm_load import CAPTURED, captured  # noqa: E402
from params import relay_line, uptime  # noqa: E402
from storm_report import checks, markdown_table, text_table  # noqa: E402

from tests.support.procs import stop_all  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("memory", "redis")
DEFAULTS = {"instances": 1000, "rate_per_instance": 3.0, "duration": 20.0, "warmup": 5.0,
            "viewers": 100, "workers": 2, "targets": "memory,redis"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--instances", type=int, default=1000, help="instances storming (default 1000)")
    add("--rate-per-instance", type=float, default=3.0, help="events/s per instance (default 3)")
    add("--duration", type=float, default=20.0, help="seconds of the measured storm window (default 20)")
    add("--warmup", type=float, default=5.0, help="seconds of storm before the window (default 5)")
    add("--idle", type=float, default=0.0, help="seconds of the idle window (default: = --duration)")
    add("--viewers", type=int, default=100, help="Socket.IO viewers, one per instance (default 100)")
    add("--workers", type=int, default=2, help="relay workers of the Redis configuration (default 2)")
    add("--targets", default="memory,redis", help="configurations: memory (1 worker), redis")
    add("--qr-wait", type=float, default=0.0,
        help="RELAY_QR_WAIT in s (default: warm-up + half the window, so the watchdog fires mid-window)")
    add("--conns", type=int, default=8, help="keep-alive connections the webhooks are spread over")
    add("--settle", type=float, default=2.0, help="seconds between the viewers' subscribing and the idle window")
    a = p.parse_args()
    a.target_list = [t.strip() for t in a.targets.split(",") if t.strip()]
    if not a.target_list or any(t not in TARGETS for t in a.target_list):
        p.error(f"--targets takes {', '.join(TARGETS)}")
    if not 0 < a.viewers <= a.instances:
        p.error("--viewers must be between 1 and --instances")
    a.idle = a.idle or a.duration
    a.qr_wait = a.qr_wait or a.warmup + a.duration / 2
    return a


async def run_all(a: argparse.Namespace, log_dir: Path, results: list[storm_run.Result]) -> None:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: the same clean path as Ctrl-C
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    for name in a.target_list:
        res = storm_run.Result(name, 1 if name == "memory" else a.workers, a.instances,
                               a.rate_per_instance, a.qr_wait, a.viewers)
        print(f"[{name}] running ({uptime().split('load average: ')[-1]})", flush=True)
        t0 = time.monotonic()
        try:
            await storm_run.run(res, log_dir=log_dir, warmup=a.warmup, duration=a.duration,
                                idle=a.idle, conns=a.conns, settle=a.settle)
        except Exception as err:  # noqa: BLE001 - one configuration's failure is its figure
            res.error = f"{type(err).__name__}: {str(err)[:300]}"
        results.append(res)
        print(f"[{name}] {time.monotonic() - t0:.0f} s" + (f": {res.error}" if res.error else ""),
              flush=True)


def main() -> int:
    a = parse_args()
    try:
        _, _, seen_rate = captured()
    except (OSError, ValueError) as err:
        print(f"cannot read the captured storm ({err}): set RELAY_SHARED_DIR", file=sys.stderr)
        return 2
    tag = secrets.token_hex(3)
    old = sorted((RESULTS / "logs").glob("storm-*"), key=lambda d: d.stat().st_mtime)
    for folder in old[:-4]:  # the logs of the last five runs are kept
        shutil.rmtree(folder, ignore_errors=True)
    log_dir = RESULTS / "logs" / f"storm-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    lines = [relay_line(("uvicorn", "httptools", "redis")), f"uptime before: {uptime()}",
             f"captured storm ({CAPTURED.name}): {seen_rate:.2f} connection.update connecting/200 "
             f"per second on one instance's webhook; here {a.rate_per_instance:g}/s per instance, "
             f"{a.viewers} viewers on as many instances, RELAY_QR_WAIT={a.qr_wait:g} s, "
             f"{a.conns} keep-alive connections"]
    print("\n".join(lines) + f"\nlogs: {log_dir}", flush=True)
    results: list[storm_run.Result] = []
    status = ""
    try:
        asyncio.run(run_all(a, log_dir, results))
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "INTERRUPTED: partial results"
    finally:
        stop_all()
    lines.append(f"uptime after: {uptime()}")
    found = checks(results)
    held = ("Did not hold / notes:\n" + "\n".join(f"- {f}" for f in found)) if found else \
        "Every expectation held: no update and no log line per storm event."
    print("\n" + "\n".join(lines + ([status] if status else [])) + "\n")
    print(text_table(results) + "\n\n" + held)
    RESULTS.mkdir(parents=True, exist_ok=True)
    full = not status and all(getattr(a, k) == v for k, v in DEFAULTS.items())
    out = RESULTS / ("storm.md" if full else "storm-partial.md")
    command = " ".join([".venv/bin/python bench/storm.py", *sys.argv[1:]])
    md = [f"<!-- generated by: {command} -->", *(f"{line}  " for line in lines)]
    md += ([f"**{status}**  "] if status else []) + ["", markdown_table(results), "", held]
    md += ["", f"logs: bench/results/logs/{log_dir.name}/"]
    out.write_text("\n".join(md) + "\n")
    print(f"\nwritten: {out}")
    return 130 if status else 0


if __name__ == "__main__":
    sys.exit(main())
