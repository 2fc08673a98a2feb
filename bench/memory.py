"""Server memory per idle Socket.IO viewer, reproducibly.

    .venv/bin/python bench/memory.py [--n 1000] [--instances 200] [--workers 1] [--redis]
        [--client-deflate] [--server-cmd "CMD {port}"] [--env K=V ...] [--label NAME]

Starts the relay (`relay serve --port P`, or --server-cmd with `{port}` in it) as a subprocess,
then from a SEPARATE client process (this file with --client) opens N idle viewers over
--instances instances, each a hand-written Engine.IO v4 / Socket.IO v5 client over `websockets`:

    server: 0{"sid":..}              client: 40{"token":"<jwt>"}
    server: 40{"sid":..}             client: 420["subscribe",{"instance":"i<k>"}]
    server: 430[{"ok":true,..}]      server: 2 -> client: 3 (pings, answered for as long as it runs)

Server RSS = VmRSS summed over the server's process tree (uvicorn supervisor + workers), sampled
once it has stayed within --tolerance KiB for --settle seconds: before any viewer, after N/2 and
after N. Prints KB per viewer: total ((all - before) / N) and marginal ((all - half) / (N - N/2)),
the latter free of one-time growth (first-connection imports, pools, arena warm-up).

--client-deflate makes the client offer permessage-deflate like every browser does (the default,
like bench/viewers.py, offers none). --json appends one result line to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"
SECRET = "memory-bench-secret-0123456789abcdef-XYZ"


# ----------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in out or not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def vm_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    return sum(vm_rss_kib(pid) for pid in process_tree(root))


def per_process_rss(root: int) -> dict[int, int]:
    return {pid: vm_rss_kib(pid) for pid in process_tree(root)}


def stable_rss_kib(root: int, settle: float, tolerance_kib: int, timeout: float) -> int:
    """Sample every 0.25 s until the last `settle` seconds stayed within `tolerance_kib`."""
    window = max(2, int(settle / 0.25))
    samples: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        samples.append(tree_rss_kib(root))
        recent = samples[-window:]
        if len(recent) == window and max(recent) - min(recent) <= tolerance_kib:
            return recent[-1]
        if time.monotonic() > deadline:
            print(f"  (RSS did not settle within {timeout:.0f}s; last window spread "
                  f"{max(recent) - min(recent)} KiB)", file=sys.stderr)
            return recent[-1]
        time.sleep(0.25)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become healthy")


def stop(proc: subprocess.Popen, grace: float = 8) -> None:
    """SIGTERM the process we started (uvicorn stops its own workers), then SIGKILL its tree."""
    if proc.poll() is not None:
        return
    pids = process_tree(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


# ----------------------------------------------------------------------------- client process

async def client_main(port: int, instances: int, deflate: bool, concurrency: int) -> None:
    import jwt
    from websockets.asyncio.client import connect

    token = jwt.encode({"instances": ["*"], "exp": int(time.time()) + 3600}, SECRET, "HS256")
    url = f"ws://127.0.0.1:{port}{WS_PATH}"
    gate = asyncio.Semaphore(concurrency)
    keep: list[asyncio.Task] = []

    async def viewer(k: int, ready: asyncio.Future) -> None:
        try:
            async with gate:
                ws = await connect(url, compression="deflate" if deflate else None,
                                   ping_interval=None, max_size=2**22, open_timeout=30)
                stage = "open"
                while stage != "subscribed":
                    msg = await asyncio.wait_for(ws.recv(), 30)
                    if msg == "2":
                        await ws.send("3")
                    elif stage == "open" and msg.startswith("0{"):
                        await ws.send("40" + json.dumps({"token": token}))
                        stage = "connect"
                    elif stage == "connect" and msg.startswith("40"):
                        await ws.send('420["subscribe",{"instance":"i%d"}]' % (k % instances))
                        stage = "ack"
                    elif stage == "connect" and msg.startswith("44"):
                        raise RuntimeError(f"connect refused: {msg}")
                    elif stage == "ack" and msg.startswith("430"):
                        if '"ok":true' not in msg.replace(" ", ""):
                            raise RuntimeError(f"subscribe failed: {msg[:200]}")
                        stage = "subscribed"
            ready.set_result(True)
        except Exception as exc:  # reported to the parent as a failure
            if not ready.done():
                ready.set_result(f"{exc.__class__.__name__}: {exc}")
            return
        try:  # idle: answer pings, drop everything else
            async for msg in ws:
                if msg == "2":
                    await ws.send("3")
        except Exception:
            pass

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    next_k = 0
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "connect":
            count = int(line[1])
            futs = []
            for k in range(next_k, next_k + count):
                fut = loop.create_future()
                futs.append(fut)
                keep.append(asyncio.create_task(viewer(k, fut)))
            next_k += count
            results = await asyncio.gather(*futs)
            errors = [r for r in results if r is not True]
            print(json.dumps({"ok": count - len(errors), "failed": len(errors),
                              "first_error": errors[0] if errors else None}), flush=True)


# ----------------------------------------------------------------------------- driver

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="viewers (default 1000)")
    p.add_argument("--instances", type=int, default=200)
    p.add_argument("--workers", type=int, default=1, help="relay workers (>1 implies --redis)")
    p.add_argument("--redis", action="store_true", help="start a redis-server and set RELAY_REDIS_URL")
    p.add_argument("--server-cmd", help="server command instead of `relay serve`; {port} is replaced")
    p.add_argument("--env", action="append", default=[], help="extra server env K=V (repeatable)")
    p.add_argument("--client-deflate", action="store_true",
                   help="offer permessage-deflate, as browsers do")
    p.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    p.add_argument("--settle", type=float, default=3.0, help="seconds RSS must stay flat")
    p.add_argument("--tolerance", type=int, default=256, help="KiB of RSS spread still 'flat'")
    p.add_argument("--settle-timeout", type=float, default=30.0)
    p.add_argument("--label", default="")
    p.add_argument("--json", help="append one JSON result line to this file")
    p.add_argument("--sigusr1", action="store_true",
                   help="send SIGUSR1 to the server tree after each settled sample (e.g. for a "
                        "tracemalloc snapshot in a scratch launcher)")
    # client mode (internal)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.client:
        asyncio.run(client_main(a.port, a.instances, a.client_deflate, a.concurrency))
        return 0

    redis_proc = None
    env = dict(os.environ, RELAY_SECRET=SECRET, RELAY_LOG_LEVEL="warning")
    env.pop("RELAY_REDIS_URL", None)
    if a.workers > 1:
        a.redis = True
    if a.redis:
        rport = free_port()
        redis_proc = subprocess.Popen(["redis-server", "--port", str(rport), "--save", "",
                                       "--appendonly", "no", "--bind", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env["RELAY_REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        time.sleep(0.5)
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v

    port = free_port()
    if a.server_cmd:
        cmd = shlex.split(a.server_cmd.replace("{port}", str(port)))
    else:
        cmd = [str(VENV_BIN / "relay"), "serve", "--port", str(port)]
        if a.workers > 1:
            cmd += ["--workers", str(a.workers)]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT)
    client = None
    try:
        wait_healthy(port, server)
        if a.workers > 1:  # every worker up (supervisor + workers)
            deadline = time.monotonic() + 30
            while len(process_tree(server.pid)) < a.workers + 1 and time.monotonic() < deadline:
                time.sleep(0.2)
        client = subprocess.Popen([sys.executable, __file__, "--client", "--port", str(port),
                                   "--instances", str(a.instances), "--concurrency", str(a.concurrency)]
                                  + (["--client-deflate"] if a.client_deflate else []),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

        def connect(count: int) -> dict:
            client.stdin.write(f"connect {count}\n")
            client.stdin.flush()
            reply = json.loads(client.stdout.readline())
            if reply["failed"]:
                print(f"  {reply['failed']} viewers failed: {reply['first_error']}", file=sys.stderr)
            return reply

        # One warm-up viewer on a throwaway instance would skew "before"; instead the first half
        # absorbs one-time costs and the marginal figure excludes them.
        def poke() -> None:
            if a.sigusr1:
                for pid in process_tree(server.pid):
                    os.kill(pid, signal.SIGUSR1)
                time.sleep(5)

        rss0 = stable_rss_kib(server.pid, a.settle, a.tolerance, a.settle_timeout)
        poke()
        half = a.n // 2
        ok1 = connect(half)["ok"]
        rss_half = stable_rss_kib(server.pid, a.settle, a.tolerance, a.settle_timeout)
        poke()
        ok2 = connect(a.n - half)["ok"]
        rss1 = stable_rss_kib(server.pid, a.settle, a.tolerance, a.settle_timeout)
        poke()
        procs = per_process_rss(server.pid)
        res = {
            "label": a.label or ("relay serve" + (f" --workers {a.workers}" if a.workers > 1 else "")),
            "workers": a.workers, "redis": a.redis, "deflate_offered": a.client_deflate,
            "n": ok1 + ok2, "failed": a.n - ok1 - ok2,
            "rss_before_mib": rss0 / 1024, "rss_half_mib": rss_half / 1024, "rss_all_mib": rss1 / 1024,
            "kib_per_viewer": (rss1 - rss0) / max(1, ok1 + ok2),
            "kib_marginal": (rss1 - rss_half) / max(1, ok2),
            "per_process_kib": procs,
        }
        print()
        print(f"| configuration | viewers | RSS before / N/2 / N (MiB) | KiB/viewer total | KiB/viewer marginal |")
        print(f"|---|---:|---|---:|---:|")
        print(f"| {res['label']}{' (client offers deflate)' if a.client_deflate else ''} | {res['n']} "
              f"| {res['rss_before_mib']:.1f} / {res['rss_half_mib']:.1f} / {res['rss_all_mib']:.1f} "
              f"| {res['kib_per_viewer']:.1f} | {res['kib_marginal']:.1f} |")
        print(f"per-process VmRSS KiB at N: {procs}")
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(res) + "\n")
    finally:
        if client is not None:
            try:
                client.stdin.write("quit\n")
                client.stdin.flush()
                client.wait(10)
            except Exception:
                client.kill()
                client.wait()
        stop(server)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
