"""Issue 9's hardening findings, measured again against the current relay.

    .venv/bin/python bench/hardening.py [--only 4,6,13] [--race-trials 20] [--names 50000]
        [--flood-mb 200] [--half-open 4000] [--anonymous 2000] [--fuzz-memory 3000]
        [--fuzz-redis 4000] [--seed 9]

Reproduces every row of issue 9 the way the issue describes it, against real `relay serve`
processes on 127.0.0.1 (1 worker in memory; 2 workers, each its own `relay serve`, on a private
redis-server), with the issue's sizes and counts unless an option says otherwise. Prints one table
(row, finding, reproduced by, seen then as quoted from the issue, seen now as measured) with the
machine's load average (`uptime`) before and after, lists what did not hold, and writes the same
as Markdown to bench/results/hardening.md (a subset, --only, or a cut-short run to
hardening-partial.md); relay and Redis logs stay in
bench/results/logs/hardening-<tag>/. Each row starts its own servers and stops them; everything is
killed at the end, on errors, on Ctrl-C and on SIGTERM. About 5-6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Run as a script, sys.path[0] is bench/ (its sibling modules); the repo root makes the helpers
# shared with the test suite importable as `tests.support`.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import hardening_access as access  # noqa: E402
import hardening_faults as faults  # noqa: E402
import hardening_front as front  # noqa: E402
import hardening_fuzz as fuzz  # noqa: E402
import hardening_sockets as sockets  # noqa: E402
import hardening_state as state  # noqa: E402
from hardening_issue import markdown, text  # noqa: E402
from hardening_kit import Finding, Lab, quote  # noqa: E402
from params import relay_line, uptime  # noqa: E402

from tests.support.fixtures import SHARED  # noqa: E402
from tests.support.procs import stop_all  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
Row = Callable[[Lab, argparse.Namespace], Awaitable[Finding]]
ROWS: dict[int, Row] = {
    1: lambda lab, a: state.row1(lab, a.race_trials, a.race_read_trials),
    2: lambda lab, a: state.row2(lab),
    3: lambda lab, a: faults.row3(lab, a.instances),
    4: lambda lab, a: front.row4(lab, a.flood_mb, a.flood_seconds),
    5: lambda lab, a: access.row5(lab),
    6: lambda lab, a: front.row6(lab, a.half_open, a.siege_seconds),
    7: lambda lab, a: access.row7(lab),
    8: lambda lab, a: state.row8(lab, a.names, a.big_qrs),
    9: lambda lab, a: access.row9(lab),
    10: lambda lab, a: fuzz.row10(lab, a.fuzz_memory, a.fuzz_redis, a.seed),
    11: lambda lab, a: sockets.row11(lab, a.frames),
    12: lambda lab, a: access.row12(lab),
    13: lambda lab, a: faults.row13(lab, a.stop_seconds),
    14: lambda lab, a: sockets.row14(lab, a.anonymous, a.polling),
    15: lambda lab, a: access.row15(lab),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--only", default="", help="comma list of rows to run (default: all 15)")
    add("--race-trials", type=int, default=20, help="#1: restore-race trials (issue: 6; test: 20)")
    add("--race-read-trials", type=int, default=20,
        help="#1: more trials with a page reading worker 2 right after the restart")
    add("--instances", type=int, default=3000, help="#3: instances the gateway and the relay know")
    add("--flood-mb", type=int, default=200, help="#4: MB of header")
    add("--flood-seconds", type=float, default=10.0, help="#4: how long the header flood goes on")
    add("--half-open", type=int, default=4000, help="#6: half-open requests")
    add("--siege-seconds", type=float, default=15.0,
        help="#6: how long 1,000 websockets without a token are kept reopening")
    add("--names", type=int, default=50000, help="#8: instance names by webhook")
    add("--big-qrs", type=int, default=400, help="#8: QRs with 900 KB images")
    add("--fuzz-memory", type=int, default=3000, help="#10: fuzzed bodies, 1 worker in memory")
    add("--fuzz-redis", type=int, default=4000, help="#10: fuzzed bodies, 2 workers on Redis")
    add("--seed", type=int, default=9, help="#10: fuzzer seed")
    add("--frames", type=int, default=300, help="#11: malformed CONNECT frames")
    add("--stop-seconds", type=float, default=10.0, help="#13: how long Redis is SIGSTOPped")
    add("--anonymous", type=int, default=2000, help="#14: websockets that never CONNECT")
    add("--polling", type=int, default=200, help="#14: long-polling sessions that never CONNECT")
    add("--row-timeout", type=float, default=180.0, help="seconds one row may take")
    add("--budget", type=float, default=570.0, help="seconds the whole run may take")
    a = p.parse_args()
    a.rows = sorted({int(r) for r in a.only.split(",") if r.strip()} or ROWS)
    if any(r not in ROWS for r in a.rows):
        p.error("--only takes row numbers 1-15")
    return a


async def run_rows(a: argparse.Namespace, lab: Lab, found: list[Finding]) -> None:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM: the same clean path as Ctrl-C
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(a.budget):
        for num in a.rows:
            t0 = time.monotonic()
            print(f"[#{num}] running ({uptime().split('load average: ')[-1]})", flush=True)
            try:
                f = await asyncio.wait_for(ROWS[num](lab, a), a.row_timeout)
            except (Exception, TimeoutError) as err:  # noqa: BLE001 - one row's failure is its figure
                why = f"{type(err).__name__}: {quote(str(err), 300)}"
                f = Finding(num, "(see the error)", f"NOT MEASURED: {why}", [f"#{num}: not measured: {why}"])
            finally:
                lab.stop()
            f.seconds = time.monotonic() - t0
            found.append(f)
            print(f"[#{num}] {f.seconds:.0f} s: {f.now}", flush=True)


def write(a: argparse.Namespace, found: list[Finding], lines: list[str], status: str) -> None:
    found.sort(key=lambda f: f.num)
    problems = [p for f in found for p in f.problems]
    held = "Did not hold:\n" + "\n".join(f"- {p}" for p in problems) if problems else \
        "Every measured row held what its fix promised."
    print("\n" + "\n".join(lines + ([status] if status else [])))
    print(text(found))
    print(held)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A subset (--only) or a cut-short run must not clobber the last complete table.
    out = RESULTS / ("hardening.md" if not status and len(found) == len(ROWS) else "hardening-partial.md")
    command = " ".join([".venv/bin/python bench/hardening.py", *sys.argv[1:]])
    md = [f"<!-- generated by: {command} -->", *(f"{line}  " for line in lines)]
    md += ([f"**{status}**  "] if status else []) + ["", markdown(found), "", held]
    md += ["", "Seconds per row: " + ", ".join(f"#{f.num} {f.seconds:.0f}" for f in found)]
    out.write_text("\n".join(md) + "\n")
    print(f"\nwritten: {out}")


def main() -> int:
    a = parse_args()
    if not (SHARED / "fixtures" / "evolution").is_dir():
        print(f"no gateway fixtures under {SHARED}: set RELAY_SHARED_DIR", file=sys.stderr)
        return 2
    tag = secrets.token_hex(3)
    old = sorted((RESULTS / "logs").glob("hardening-*"), key=lambda d: d.stat().st_mtime)
    for folder in old[:-4]:  # the logs of the last five runs are kept, for post-mortems
        shutil.rmtree(folder, ignore_errors=True)
    lab = Lab(RESULTS / "logs" / f"hardening-{tag}")
    lines = [relay_line(("uvicorn", "httptools", "python-socketio")), f"uptime before: {uptime()}"]
    print("\n".join(lines) + f"\nlogs: {lab.log_dir}", flush=True)
    found: list[Finding] = []
    status = ""
    t0 = time.monotonic()
    try:
        asyncio.run(run_rows(a, lab, found))
    except (KeyboardInterrupt, asyncio.CancelledError):
        status = "INTERRUPTED: partial results"
    except TimeoutError:
        status = f"STOPPED: the run passed its {a.budget:.0f} s budget; partial results"
    finally:
        lab.stop()
        stop_all()
    lines += [f"uptime after: {uptime()}", f"run: {time.monotonic() - t0:.0f} s; logs: "
              f"bench/results/logs/{lab.log_dir.name}/"]
    write(a, found, lines, status)
    return 130 if status.startswith("INTERRUPTED") else 0


if __name__ == "__main__":
    sys.exit(main())
