"""The relay under test: in this event loop under real uvicorn, or as ``relay serve`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from relay.app import RelayApp, create_app
from relay.config import Settings
from relay.core import Relay
from relay.server import UVICORN_WS

from .procs import ManagedProcess, free_port, http_status

SECRET = "test-secret-0123456789-abcdefghijklmnop"


class RelayServer:
    """The relay app under real uvicorn, in this event loop, on a free port."""

    def __init__(self, settings: Settings, **inject: Any):
        self.settings = settings
        self.port = settings.port
        self.app: RelayApp = create_app(settings, **inject)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False, **UVICORN_WS)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rt(self) -> Relay:
        """The running relay's core."""
        assert self.app.core is not None, "the relay is not started"
        return self.app.core

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
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
    """``relay serve`` as a separate OS process group (CLI, multi-worker and fault tests, bench)."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, *,
                 log_path: Path | None = None, port: int | None = None):
        self.port = port or free_port()
        self.env = {**os.environ, "RELAY_SECRET": SECRET, "RELAY_LOG_LEVEL": "warning", **env}
        self.args = args or []
        self.log_path = log_path
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.proc = ManagedProcess(
            f"relay-{self.port}",
            [sys.executable, "-m", "relay", "serve", "--port", str(self.port), *self.args],
            env=self.env, log_path=self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"relay exited with {self.proc.popen.returncode}: {self.output()}")
            if http_status(f"{self.url}/healthz", 0.5) == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"relay did not become healthy: {self.output()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.kill(sig)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
