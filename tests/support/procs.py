"""Child processes for tests and benchmarks: free ports, and servers started in their own
process group (one ``killpg`` reaches the whole tree: run.sh → node, uvicorn's supervisor →
workers), logged to a file, never outliving the run (an ``atexit`` sweep stops stragglers)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

_RUNNING: list[ManagedProcess] = []


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


@contextlib.contextmanager
def started(*servers: S) -> Iterator[tuple[S, ...]]:
    """Start the servers in turn; stop every one on the way out, also those started before one
    that failed to start (and that one: its ``stop`` is safe on a half-started server)."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.callback(server.stop)
            server.start()
        yield servers


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the kernel's pick; a small race, acceptable here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def http_status(url: str, timeout: float = 2.0) -> int:
    """Status of a GET (0 when the connection fails)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return 0


def wait_healthy(url: str, procs: Sequence[ManagedProcess], timeout: float) -> None:
    """Poll GET ``url`` until it answers 200. Raises RuntimeError as soon as one of ``procs``
    has exited (a crash must not wait out the timeout), TimeoutError after ``timeout`` s; both
    messages end with the end of the processes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {proc.output()}")
        if http_status(url, 1.0) == 200:
            return
        time.sleep(0.05)
    logs = "\n".join(proc.output(2000) for proc in procs)
    raise TimeoutError(f"GET {url} did not answer 200 within {timeout:g} s: {logs}")


class ManagedProcess:
    """A process started in its own session (pgid = pid), its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 log_path: Path | None = None, cwd: Path | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.name = name
        self.argv = argv
        if log_path is None:
            fd, raw = tempfile.mkstemp(prefix=f"{name.replace('/', '-').replace(':', '-')}-",
                                       suffix=".log")
            os.close(fd)
            log_path, self._own_log = Path(raw), True
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._own_log = False
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
                                      preexec_fn=preexec)
        self.pid = self.popen.pid
        _RUNNING.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, chars: int = 4000) -> str:
        """The end of the process's log, for failure messages."""
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")[-chars:]
        except OSError:
            return ""

    def send(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        """``sig`` to the group, wait up to ``grace`` s, then SIGKILL what is left."""
        if self.popen.poll() is None or _group_alive(self.pid):
            self.send(sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (self.popen.poll() is None or _group_alive(self.pid)):
                time.sleep(0.05)
            self.send(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL; closes (and removes an own) log."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        self.kill(signal.SIGTERM, grace)
        self._log.close()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@atexit.register
def stop_all() -> None:
    """Nothing outlives the run, even when it dies on an error."""
    for proc in reversed(list(_RUNNING)):
        with contextlib.suppress(Exception):
            proc.stop(grace=2.0)
