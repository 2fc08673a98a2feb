"""Processes and servers the tests start for real (and always stop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from relay.app import create_app
from relay.cli import UVICORN_WS
from relay.config import Settings

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RELAY_SHARED_DIR", REPO.parent / "shared"))
SECRET = "test-secret-0123456789-abcdefghijklmnop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fixture(kind: str, name: str) -> Any:
    """A payload exactly as the gateway sends it (shared/fixtures, never edited)."""
    return json.loads((SHARED / "fixtures" / kind / f"{name}.json").read_text())


def fixture_paths(kind: str) -> list[Path]:
    return sorted((SHARED / "fixtures" / kind).glob("*.json"))


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class RedisServer:
    """A real redis-server on a free port, that tests may kill and restart (same port)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="relay-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RelayServer:
    """The relay app under real uvicorn, in this event loop, on a free port."""

    def __init__(self, settings: Settings, **inject: Any):
        self.settings = settings
        self.port = settings.port
        self.app = create_app(settings, **inject)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False, **UVICORN_WS)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rt(self) -> Any:
        return self.app.other_asgi_app.rt

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("relay exited during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


def settings(**changes: Any) -> Settings:
    """Test settings: a fixed secret, a free port, everything else default unless changed."""
    base = Settings.from_env({"RELAY_SECRET": SECRET, "RELAY_LOG_LEVEL": "warning"})
    return base.replace(port=free_port(), **changes)


@contextlib.asynccontextmanager
async def running_relay(**changes: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(settings(**changes))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class RelayProcess:
    """``relay serve`` as a separate OS process (for CLI and multi-worker tests)."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None):
        self.port = free_port()
        self.env = {**os.environ, "RELAY_SECRET": SECRET, "RELAY_LOG_LEVEL": "warning", **env}
        self.args = args or []
        self.proc: subprocess.Popen[str] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="relay-log-", suffix=".txt", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--port", str(self.port), *self.args],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=0.5) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.05)
        raise TimeoutError(f"relay did not become healthy: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        Path(self.log.name).unlink(missing_ok=True)
