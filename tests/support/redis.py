"""A real redis-server on a free port, that tests may kill and restart (same port, empty)."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

from .procs import ManagedProcess, free_port, wait_port


class RedisProcess:
    """What tests do to a running redis-server (``proc``): ``kill`` (SIGKILL: it vanishes
    without a word, as a crash or a lost box does), ``pause``/``resume`` (SIGSTOP/SIGCONT)."""

    proc: ManagedProcess | None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill(signal.SIGKILL)
            self.proc.stop()
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send(signal.SIGCONT)


class RedisServer(RedisProcess):
    """One redis-server on a free port; ``start`` again after ``kill``: same port, empty."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="relay-redis-")
        self.log_dir = log_dir
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
        log = self.log_dir / f"redis-{self.port}.log" if self.log_dir else None
        self.proc = ManagedProcess(
            f"redis-{self.port}",
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"], log_path=log)
        wait_port(self.port)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
