"""Where the relay's memory per idle viewer goes: tracemalloc by component, with the lean front
("after") and without it ("before": websockets through uvicorn's websocket protocol and
python-socketio), plus what tracemalloc cannot see (native memory, kernel socket memory).

    .venv/bin/python bench/memory_breakdown.py [--n 2000] [--instances 200] [--frames 25]
        [--modes before,after] [--client-procs 2] [--settle 3] [--out FILE]

Each mode runs twice, each time in a child process of its own (fresh heap, own process group):
the relay app in that process under real uvicorn (tests/support/relay.py RelayServer: the http
protocol class and websocket settings of `relay serve`, on uvloop, GC tuned like a worker,
in-memory state). "before" takes "front" out of the lifespan state uvicorn hands to every
connection, so relay/internals/http.py leaves websocket upgrades to uvicorn's websocket protocol
and python-socketio, as before the lean front. relay/ itself is not changed.

Both runs: one viewer per instance first (one-time costs and per-instance state are then not
counted per viewer), then N idle viewers over --instances instances from --client-procs separate
processes (bench/viewers.py, subscribed like bench/run.py's), sampled once this process's VmRSS
has been flat for --settle s after gc.collect(). The "rss" run traces nothing: RSS growth per
viewer. The "trace" run starts tracemalloc (--frames deep) before the warm-up and compares a
snapshot after it with one after the N viewers: growth per component (bench/components.py) and
per allocation site. Native remainder = RSS growth - traced growth. Kernel socket memory (`ss -tm`,
/proc/slabinfo) is in no RSS and shown apart. Prints one table, KB = 1,024 bytes per viewer, and
writes it with the top sites to bench/results/memory-breakdown.md (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support (see memory.py)

from components import (ORDER, Classifier, attribute, kernel_socket_bytes,  # noqa: E402
                        socket_struct_bytes)
from viewers import ViewerPool, ViewerSpec  # noqa: E402

from tests.support.procs import ManagedProcess  # noqa: E402
from tests.support.proctree import rss_bytes  # noqa: E402

BENCH = Path(__file__).resolve().parent
MODES = ("before", "after")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="measured viewers (default 2000)")
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--frames", type=int, default=25, help="tracemalloc frames per allocation")
    p.add_argument("--modes", default="before,after", help="before,after (default), before or after")
    p.add_argument("--client-procs", type=int, default=2, help="viewer processes")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    p.add_argument("--settle", type=float, default=3.0, help="seconds RSS must stay flat")
    p.add_argument("--tolerance", type=int, default=256, help="KiB of RSS spread still 'flat'")
    p.add_argument("--settle-timeout", type=float, default=30.0)
    p.add_argument("--sites", type=int, default=12, help="top allocation sites listed per mode")
    p.add_argument("--out", default=str(BENCH / "results" / "memory-breakdown.md"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # MODE:rss or MODE:trace
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    if a.n < 1 or a.instances < 1 or a.frames < 1 or not set(a.mode_list) <= set(MODES) \
            or not a.mode_list:
        p.error("--n, --instances, --frames must be >= 1; --modes among before,after")
    return a


# ------------------------------------------------------------------ child: one mode, measured


async def _connect(pool: ViewerPool, port: int, first: int, count: int, instances: int,
                   procs: int) -> int:
    specs = [ViewerSpec(index=k, port=port, instance=f"i{k % instances}")
             for k in range(first, first + count)]
    pool.add(specs, procs)
    ok, errors = await pool.wait_ready(timeout=60 + count / 10)
    if len(ok) < count:
        print(f"  {count - len(ok)} viewers failed: {errors[:2]}", file=sys.stderr, flush=True)
    return len(ok)


async def _rss(a: argparse.Namespace) -> int:
    """VmRSS of this process alone (its viewer processes are its children: not counted) once it
    has stayed within --tolerance for --settle s (as tests/support/proctree.settled_rss)."""
    gc.collect()
    window = max(2, int(a.settle / 0.25))
    samples: list[int] = []
    deadline = time.monotonic() + a.settle_timeout
    while True:
        samples.append(rss_bytes([os.getpid()]))
        recent = samples[-window:]
        if len(recent) == window and max(recent) - min(recent) <= a.tolerance * 1024:
            return recent[-1]
        if time.monotonic() > deadline:
            print(f"  (RSS did not settle within {a.settle_timeout:g} s)", file=sys.stderr,
                  flush=True)
            return recent[-1]
        await asyncio.sleep(0.25)


async def measure(a: argparse.Namespace, mode: str, part: str) -> dict[str, Any]:
    """``part`` "rss": VmRSS growth over N viewers, nothing traced; "trace": tracemalloc from
    before the warm-up, snapshots after it and after N viewers, compared."""
    # Imported here, not at the top: every viewer process (multiprocessing spawn) imports this
    # module again, and needs none of the relay.
    from relay.collector import tune
    from tests.support.clients import token
    from tests.support.relay import RelayServer, settings

    server = RelayServer(settings())
    tune()  # as relay/server.py worker_app does
    await server.start()
    pool = ViewerPool(token("*"), "MEMORY", a.concurrency)
    res: dict[str, Any] = {}
    try:
        if mode == "before":
            # uvicorn hands this dict to every connection as its app_state: without "front",
            # GuardedHttp.handle_websocket_upgrade leaves websockets to uvicorn + python-socketio.
            server.server.lifespan.state.pop("front")
        port = server.port
        if part == "trace":
            tracemalloc.start(a.frames)
        res["warm"] = await _connect(pool, port, 0, a.instances, a.instances, 1)
        rss0 = await _rss(a)
        base = tracemalloc.take_snapshot() if part == "trace" else None
        t0 = time.monotonic()
        res["n"] = await _connect(pool, port, a.instances, a.n, a.instances, a.client_procs)
        print(f"[{mode}, {part}] {res['warm']} warm-up + {res['n']}/{a.n} viewers subscribed in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        res["rss"] = await _rss(a) - rss0
        if base is not None:
            classify = Classifier(harness=[BENCH, BENCH.parent / "tests"])
            res.update(attribute(classify, base, tracemalloc.take_snapshot()))
            tracemalloc.stop()
        res["sockets"], res["skmem"] = kernel_socket_bytes(port)
        res["lean"] = len(server.app.front.connections) if server.app.front is not None else 0
        res["eio"] = len(server.app.sio.eio.sockets)
    finally:
        await pool.close()
        await server.stop()
    return res


def child(a: argparse.Namespace) -> int:
    mode, _, part = a.child.partition(":")
    try:
        import uvloop  # what `relay serve` runs on (uvicorn's loop="auto")

        res = uvloop.run(measure(a, mode, part))
    except ImportError:
        res = asyncio.run(measure(a, mode, part))
    Path(a.json_out).write_text(json.dumps(res))
    return 0


# ------------------------------------------------------------------- parent: both, one table


def run_child(a: argparse.Namespace, mode: str, part: str) -> dict[str, Any]:
    """One part of one mode in a process group of its own (its viewer processes included), its
    output streamed here."""
    with tempfile.TemporaryDirectory(prefix="memory-breakdown-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:],
                "--child", f"{mode}:{part}", "--json-out", str(out)]
        proc = ManagedProcess(f"breakdown-{mode}-{part}", argv,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        shown = 0
        try:
            while True:
                done = not proc.alive()
                text = proc.output(1 << 20)
                sys.stdout.write(text[shown:])
                sys.stdout.flush()
                shown = len(text)
                if done:
                    break
                time.sleep(0.1)
            if proc.popen.returncode != 0 or not out.exists():
                raise RuntimeError(f"the {mode} {part} run failed (exit {proc.popen.returncode})")
            return dict(json.loads(out.read_text()))
        finally:
            # Short grace: multiprocessing's resource tracker ignores SIGTERM and would hold
            # the group for a while after the run; it has nothing to clean up here.
            proc.stop(grace=0.3)


def run_mode(a: argparse.Namespace, mode: str) -> dict[str, Any]:
    """The traced run's components, with RSS and kernel figures from the untraced one."""
    plain = run_child(a, mode, "rss")
    traced = run_child(a, mode, "trace")
    return {**traced, "rss": plain["rss"], "plain": plain["n"], "sockets": plain["sockets"],
            "slab_per_socket": socket_struct_bytes(),
            "skmem": plain["skmem"], "failed": 2 * a.n - plain["n"] - traced["n"]}


NOTES = """How to read it: KB = 1,024 bytes per idle viewer, after one warm-up viewer per instance
(one-time and per-instance costs excluded, like bench/memory.py's marginal figure). A component
owns an allocation when it holds the innermost frame of its traceback among relay modules and
libraries; asyncio / uvloop only when none does: with uvloop that is C code under the loop's run
frame, e.g. its TCPTransport (680 B) and libuv's uv_tcp_t (248 B, from PyMem_RawMalloc), which
tracemalloc does see. Traced = live Python allocations, snapshot after the warm-up compared with
snapshot after N viewers (frees count). RSS comes from a run without tracemalloc (its bookkeeping
per block would inflate RSS); the native remainder is what the allocators add (rounding, estimated
on its own row; part-filled pools and arenas) plus memory malloc'd outside Python's allocators;
at N = 2,000 it is good to ~0.2 KB (pages, settle tolerance). Kernel rows are not in any RSS:
socket queues are empty when idle; each socket's kernel objects cost the same under any server."""


def kb(value: float, n: int) -> str:
    return f"{value / 1024 / max(1, n):.2f}".replace("-0.00", "0.00")


def report(a: argparse.Namespace, results: dict[str, dict[str, Any]]) -> str:
    cols = [m for m in MODES if m in results]
    head = {"before": "KB/viewer before (uvicorn ws + python-socketio)",
            "after": "KB/viewer after (lean front)"}
    lines = ["| component | " + " | ".join(head[m] for m in cols) + " |",
             "|---|" + "---:|" * len(cols)]

    def row(name: str, get: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(get(results[m]) for m in cols) + " |")

    for comp in ORDER:
        row(comp, lambda r, c=comp: kb(r["components"].get(c, [0])[0], r["n"]))
    row("**traced total** (Python heap, tracemalloc)", lambda r: f"**{kb(r['traced'], r['n'])}**")
    row("traced blocks per viewer",
        lambda r: f"{sum(v[1] for v in r['components'].values()) / max(1, r['n']):.1f}")
    row("**RSS growth** (VmRSS, in a run without tracemalloc)",
        lambda r: f"**{kb(r['rss'], r['plain'])}**")
    row("**native remainder** (RSS growth - traced total)",
        lambda r: f"**{kb(r['rss'] / max(1, r['plain']) - r['traced'] / max(1, r['n']), 1)}**")
    row("of it: allocator rounding of the traced blocks (estimate)",
        lambda r: kb(r["rounding"], r["n"]))
    row("kernel, not RSS: socket buffers (`ss -tm` skmem r+w+f+o+bl)",
        lambda r: kb(r["skmem"], r["sockets"]))
    row("kernel, not RSS: socket objects (slabinfo sizes, estimate)",
        lambda r: kb(r["slab_per_socket"], 1))
    row("viewers in the untraced / traced run (failed) / served by",
        lambda r: f"{r['plain']} / {r['n']} ({r['failed']}) / "
        + (f"lean front {r['lean']}" if r["lean"] else f"engine.io {r['eio']}"))
    for m in cols:
        r = results[m]
        lines += ["", f"Top allocation sites, {m} (innermost frame of the component; KB and "
                  "blocks per viewer):", "", "| component | site | KB/viewer | blocks/viewer |",
                  "|---|---|---:|---:|"]
        lines += [f"| {c} | `{s}` | {kb(b, r['n'])} | {k / max(1, r['n']):.2f} |"
                  for c, s, b, k in r["sites"][:a.sites]]
    return "\n".join(lines)


def main() -> int:
    a = parse_args()
    if a.child:
        return child(a)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the same clean-up as Ctrl-C
    uptime = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    try:
        results = {mode: run_mode(a, mode) for mode in a.mode_list}
    except KeyboardInterrupt:  # what was started is stopped by then (run_child's finally)
        print("\ninterrupted", file=sys.stderr)
        return 130
    uptime.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    table = report(a, results)
    header = (f"# Memory per idle viewer, by component\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}, "
              f"Python {sys.version.split()[0]}, {a.n} idle viewers over {a.instances} instances, "
              f"tracemalloc {a.frames} frames. uptime before / after: `{uptime[0]}` / "
              f"`{uptime[1]}`\n\n`{' '.join(['bench/memory_breakdown.py', *sys.argv[1:]])}`")
    print(f"\nN = {a.n}; uptime before: {uptime[0]}\n              after: {uptime[1]}\n\n{table}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{header}\n\n{table}\n\n{NOTES}\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
