"""Killing one server process under its viewers, and watching it come back: a relay worker
(SIGKILL; uvicorn's supervisor, relay/internals/run.py, spawns a replacement on the same
socket) or a Node peer (SIGKILL, then the harness starts a new one on the same port). Also what
the servers wrote to their logs during a scenario."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from targets import Server

from tests.support.procs import ManagedProcess, wait_healthy
from tests.support.proctree import process_tree

_STALL = re.compile(r"event loop stalled for (\d+) ms(?: \(this worker used (\d+) ms of CPU)?")
_NOTEWORTHY = re.compile(r"stalled|garbage collection|ERROR|CRITICAL|Traceback|Error:|died|WARNING")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting to be reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def relay_workers(server: Server) -> list[int]:
    """The uvicorn worker processes of ``relay serve --workers N`` (not its resource tracker)."""
    root = server.procs[0].pid
    return sorted(pid for pid in process_tree([root])
                  if pid != root and "spawn_main" in _cmdline(pid) and _alive(pid))


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the server end of the loopback connection from ``client_port``
    (its inode from /proc/net/tcp, then the processes' open files)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                target = f"socket:[{fields[9]}]"
                break
        else:
            return None
    except (OSError, IndexError):
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def kill_one(server: Server) -> tuple[int, int, str]:
    """SIGKILL one server process; returns (wall-clock ns of the kill, its pid, what). Relay:
    the worker holding the most open files (so the most viewers); Node: the peer on the first
    port (it holds about 1/W of the viewers by construction)."""
    if server.name == "relay":
        workers = relay_workers(server)
        if not workers:
            raise RuntimeError("no relay worker process found to kill")
        files = {pid: _open_files(pid) for pid in workers}
        victim = max(workers, key=lambda pid: files[pid])
        t = time.time_ns()
        os.kill(victim, signal.SIGKILL)
        return t, victim, f"relay worker pid {victim} ({files[victim]} open files; others: " \
                  f"{[files[w] for w in workers if w != victim]})"
    proc = server.procs[0]
    held = _open_files(proc.pid)
    t = time.time_ns()
    proc.send(signal.SIGKILL)
    return t, proc.pid, f"node peer pid {proc.pid} on port {server.ports[0]} ({held} open files)"


def restart_node(server: Server, idx: int, make: Callable[[int, Path], ManagedProcess],
                 timeout: float) -> str:
    """Right after ``kill_one``: start a new peer on the killed one's port, wait for /healthz."""
    old, port = server.procs[idx], server.ports[idx]
    old.popen.wait(10)
    old.stop()
    n = 1
    while (log := old.log_path.with_name(f"node-{port}-restart{n}.log")).exists():
        n += 1
    t0 = time.monotonic()
    server.procs[idx] = new = make(port, log)
    wait_healthy(f"http://127.0.0.1:{port}/healthz", [new], timeout)
    return f"node peer restarted on port {port}: healthy {time.monotonic() - t0:.2f} s after it was started"


async def wait_workers(server: Server, timeout: float, since_ns: int | None = None,
                       gone: int = 0) -> str:
    """Until ``relay serve`` has all its workers, ``gone`` (a killed one) not among them, and
    (after a kill at ``since_ns``) the replacement's app has started; a note on the timings from
    uvicorn's own log lines. Node's processes are the harness's own: nothing to wait for."""
    if server.name != "relay" or server.workers <= 1:
        return ""
    deadline = time.monotonic() + timeout
    while len(workers := relay_workers(server)) < server.workers or gone in workers:
        if time.monotonic() > deadline:
            return f"relay still had {len(workers)}/{server.workers} workers after {timeout:g} s"
        await asyncio.sleep(0.05)
    if since_ns is None:
        return ""
    spawned = (time.time_ns() - since_ns) / 1e9
    while (times := _uvicorn_times(server.procs[0].log_path, since_ns))[1] is None:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    died, ready = times
    return (f"after the kill, uvicorn's supervisor (checks every 0.5 s) saw the death at "
            f"{_secs(died, since_ns)}, the replacement process existed at {spawned:.2f} s and "
            f"its app was started (\"Application startup complete\") at {_secs(ready, since_ns)}")


def _uvicorn_times(log: Path, since_ns: int) -> tuple[int | None, int | None]:
    """Wall-clock ns of the first "Child process ... died" and "Application startup complete."
    lines of the relay's log at or after ``since_ns`` (its lines carry local time, in ms)."""
    died = ready = None
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None, None
    for line in text.splitlines():
        if "Child process" not in line and "Application startup complete" not in line:
            continue
        if (at := _stamp(line)) is None:
            continue
        if at < since_ns - 1_000_000:  # the log's stamps are truncated to the ms
            continue
        if died is None and "died" in line:
            died = at
        elif ready is None and "Application startup complete" in line:
            ready = at
    return died, ready


def _secs(at: int | None, since_ns: int) -> str:
    return "?" if at is None else f"{max(0, at - since_ns) / 1e9:.2f} s"


def _new_lines(offsets: dict[Path, int]) -> Iterator[str]:
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        yield from text.splitlines()


def server_notes(offsets: dict[Path, int]) -> list[str]:
    """Warnings, errors and stalls the servers logged since ``offsets`` (byte offsets per log),
    counted by kind with a sample of each."""
    seen: dict[str, tuple[int, str]] = {}
    for line in _new_lines(offsets):
        m = _NOTEWORTHY.search(line)
        if m is None or line.startswith("node-loop-lag"):
            continue
        n, sample = seen.get(m.group(0), (0, line.strip()[:200]))
        seen[m.group(0)] = (n + 1, sample)
    return [f"server log: {n} line(s) with {kind!r}, e.g. {sample}" for kind, (n, sample) in seen.items()]


def relay_stalls(offsets: dict[Path, int]) -> list[tuple[int, float, float | None]]:
    """The stalls of 50 ms or more the relay logged since ``offsets``: (wall-clock ns of the line,
    that is the end of the stall; seconds; CPU seconds the worker used in the stall's window)."""
    out = []
    for line in _new_lines(offsets):
        if (stall := _STALL.search(line)) is not None and (at := _stamp(line)) is not None:
            out.append((at, int(stall.group(1)) / 1e3,
                        int(stall.group(2)) / 1e3 if stall.group(2) else None))
    return out


def _stamp(line: str) -> int | None:
    """Wall-clock ns of a relay/uvicorn log line (local time, ms)."""
    try:
        return int(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1e9)
    except ValueError:
        return None


_TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDoCookies", "SyncookiesFailed",
                 "EmbryonicRsts", "TCPAbortOnData", "TCPAbortOnClose", "TCPSynRetrans")


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters that tell accept-queue overflows and resets (machine-wide)."""
    try:
        head, values = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
                        if line.startswith("TcpExt:")][:2]
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in zip(head[1:], values[1:]) if k in _TCP_COUNTERS}


def tcp_note(before: dict[str, int], after: dict[str, int], what: str) -> str:
    deltas = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return f"kernel TCP counters during {what} (machine-wide): " + (
        ", ".join(f"{k} +{v}" for k, v in deltas.items()) or "no change")

