"""The relay under test: in this event loop under real uvicorn, or as ``relay serve`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from relay.app import RelayApp, create_app
from relay.config import Settings
from relay.core import Relay
from relay.server import front

from .procs import ManagedProcess, free_port, wait_healthy

SECRET = "test-secret-0123456789-abcdefghijklmnop"


class RelayServer:
    """The relay app under real uvicorn, in this event loop, on a free port."""

    def __init__(self, settings: Settings, **inject: Any):
        self.settings = settings
        self.port = settings.port
        self.app: RelayApp = create_app(settings, **inject)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False, **front(settings))
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


# Tests ask the gateway themselves unless they test auto-connect (the default of `relay serve`).
TEST_ENV = {"RELAY_SECRET": SECRET, "RELAY_LOG_LEVEL": "warning", "RELAY_AUTO_CONNECT": "off"}


def settings(**changes: Any) -> Settings:
    """Test settings: a fixed secret, a free port, no auto-connect, everything else default
    unless changed."""
    base = Settings.from_env(TEST_ENV)
    return base.replace(port=free_port(), **changes)


@contextlib.asynccontextmanager
async def running_relay(**changes: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(settings(**changes))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.contextmanager
def threaded_relay(settings: Settings) -> Iterator[RelayServer]:
    """The relay under real uvicorn in a thread of its own (its own event loop), for synchronous
    tests that want the real HTTP front rather than an in-process ASGI client."""
    server = RelayServer(settings)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failed.append(exc)
            return
        finally:
            started.set()
        loop.run_until_complete(server.task)  # type: ignore[arg-type]

    thread = threading.Thread(target=run, name=f"relay-{server.port}", daemon=True)
    thread.start()
    started.wait(30)
    if failed:
        raise failed[0]
    try:
        yield server
    finally:
        server.server.should_exit = True
        thread.join(15)
        loop.close()


def process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a relay process: this process's, minus its ``RELAY_*`` variables
    (a stray ``RELAY_WEBHOOK_SECRET`` or ``RELAY_REDIS_URL`` in the caller's shell would turn every
    webhook into a 401 or share state with another relay), plus the test secret and a quiet log
    level, then ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return {**clean, **TEST_ENV, **(env or {})}


class RelayProcess:
    """``relay serve`` as a separate OS process group (CLI, multi-worker and fault tests, bench),
    on 127.0.0.1; ``args`` are more ``relay serve`` options, e.g. ``["--workers", "2"]``."""

    def __init__(self, env: dict[str, str], args: list[str] | None = None, *,
                 log_path: Path | None = None, port: int | None = None):
        self.port = port or free_port()
        self.env = process_env(env)
        self.args = args or []
        self.log_path = log_path
        self.preexec: Callable[[], None] | None = None  # e.g. lower the open-file limit
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start it and wait for ``/healthz`` (with several workers: the first one's)."""
        self.proc = ManagedProcess(
            f"relay-{self.port}",
            [sys.executable, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *self.args],
            env=self.env, log_path=self.log_path, preexec=self.preexec)
        wait_healthy(f"{self.url}/healthz", [self.proc], timeout)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self, chars: int = 4000) -> str:
        """The end of its log (``chars`` characters)."""
        return self.proc.output(chars) if self.proc is not None else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.kill(sig)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
