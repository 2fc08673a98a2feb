"""Child-process plumbing for the benchmark: free ports, managed servers, /proc accounting.

Every server we start runs in its own session (process group), so one ``killpg`` reaches
the whole tree (run.sh -> node, uvicorn supervisor -> workers) and a Ctrl-C in the terminal
does not kill them before we have measured/cleaned up in order. A module-level registry plus
``atexit`` makes sure nothing outlives the harness even when it dies on an error.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_REGISTRY: list[ManagedProcess] = []


def free_port() -> int:
    """Ask the kernel for an unused TCP port on 127.0.0.1 (small race, acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedProcess:
    """A server process started in its own process group, logged to a file, killed as a group."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Kept open for the life of the process; closed in stop().
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own pgid == pid: killpg reaches all its children
        )
        self.pid = self.popen.pid
        _REGISTRY.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """Last lines of the process log, for a clear failure message."""
        try:
            data = self.log_path.read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in data[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of the group."""
        if self in _REGISTRY:
            _REGISTRY.remove(self)
        pgid = self.pid  # start_new_session => pgid == pid, even after the leader exits
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.popen.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_all() -> None:
    """Stop every still-registered process (used by atexit and on errors)."""
    for proc in list(reversed(_REGISTRY)):
        try:
            proc.stop(grace=2.0)
        except Exception as err:  # noqa: BLE001 - best effort during teardown
            print(f"cleanup of {proc.name} failed: {err}", file=sys.stderr)


atexit.register(stop_all)


# ---------------------------------------------------------------------------- /proc accounting


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 'state' is index 0)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The comm field may contain spaces/parens: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _read_stat(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(roots: Iterable[int]) -> list[int]:
    """The given pids plus all their live descendants."""
    children = _ppid_map()
    out: list[int] = []
    stack = list(roots)
    seen: set[int] = set()
    while stack:
        pid = stack.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.add(pid)
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """Sum of utime+stime (seconds) of the given live processes."""
    total = 0
    for pid in pids:
        fields = _read_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat.

    Used to show how much CPU *other* programs took during a step: on a shared 2-core machine
    a neighbour's burst explains outliers better than guessing.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [
        int(v) for v in fields[:8]
    ]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes (shared pages counted once per process, like `ps`)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


# ---------------------------------------------------------------------------- readiness


def http_status(url: str, timeout: float = 2.0) -> int:
    """Status of a GET (0 when the connection fails)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return 0


def wait_healthy(url: str, procs: list[ManagedProcess], timeout: float) -> str | None:
    """Poll `url` until 200. Returns None when healthy, else a reason string."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                return f"{proc.name} exited with code {proc.popen.returncode}"
        if http_status(url) == 200:
            return None
        time.sleep(0.2)
    return f"GET {url} did not answer 200 within {timeout:.0f}s"


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """Raw RESP PING, so readiness does not depend on a client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
