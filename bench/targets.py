"""Starting the things under test: a private redis-server, the Node peer, the relay.

A start failure raises `TargetUnavailable` with one readable line (plus the log tail), so the
harness can print it and go on with the other targets.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import ManagedProcess, free_port, redis_ping, wait_healthy

NODE_PEER = Path("/work/shared/bench/node-peer/run.sh")
REPO = Path(__file__).resolve().parent.parent
RELAY_BIN = REPO / ".venv" / "bin" / "relay"


class TargetUnavailable(Exception):
    """The target could not be started; str() is the one-line reason."""


@dataclass
class Redis:
    port: int
    proc: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(log_dir: Path) -> Redis:
    """A throwaway redis-server bound to 127.0.0.1 on a free port, no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise TargetUnavailable("redis-server not found on PATH")
    port = free_port()
    proc = ManagedProcess(
        "redis-server",
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        dict(os.environ),
        log_dir / f"redis-{port}.log",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_ping(port):
            return Redis(port, proc)
        if not proc.alive():
            break
        time.sleep(0.05)
    proc.stop()
    raise TargetUnavailable(
        f"redis-server on port {port} did not answer PING\n{proc.log_tail()}"
    )


@dataclass
class Server:
    """A running server under test."""

    name: str
    workers: int
    ports: list[int]  # ports viewers and webhooks are spread over
    procs: list[ManagedProcess] = field(default_factory=list)
    token_required: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def root_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def start_node(
    workers: int, redis: Redis, key_prefix: str, log_dir: Path, timeout: float
) -> Server:
    """W independent Node peer processes (one port each) sharing rooms via the Redis adapter."""
    if not NODE_PEER.exists():
        raise TargetUnavailable(f"{NODE_PEER} not found")
    if shutil.which("node") is None:
        raise TargetUnavailable("node not found on PATH")
    env = dict(os.environ, KEY_PREFIX=key_prefix, NODE_ENV="production")
    server = Server("node", workers, [])
    try:
        for _ in range(workers):
            port = free_port()
            server.ports.append(port)
            server.procs.append(
                ManagedProcess(
                    f"node-peer:{port}",
                    [str(NODE_PEER), str(port), redis.url],
                    env,
                    log_dir / f"node-{port}.log",
                )
            )
        for port in server.ports:
            # run.sh npm-installs once into its cache: the first ever start can take a while.
            reason = wait_healthy(
                f"http://127.0.0.1:{port}/healthz", server.procs, timeout
            )
            if reason is not None:
                tails = "\n".join(p.log_tail(8) for p in server.procs)
                raise TargetUnavailable(f"node peer not healthy: {reason}\n{tails}")
    except BaseException:
        server.stop()
        raise
    return server


def start_relay(
    workers: int, redis: Redis, secret: str, log_dir: Path, timeout: float
) -> Server:
    """`relay serve --workers W` on one port, sharing state through the private Redis."""
    if not RELAY_BIN.exists():
        raise TargetUnavailable(
            f"{RELAY_BIN} not found (is the relay package installed in .venv?)"
        )
    port = free_port()
    env = dict(
        os.environ,
        RELAY_REDIS_URL=redis.url,
        RELAY_SECRET=secret,
        RELAY_LOG_LEVEL="warning",
    )
    # A webhook secret in the caller's environment would make every POST a 401.
    env.pop("RELAY_WEBHOOK_SECRET", None)
    argv = [
        str(RELAY_BIN),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    proc = ManagedProcess(f"relay:{port}", argv, env, log_dir / f"relay-{port}.log")
    server = Server("relay", workers, [port], [proc], token_required=True)
    reason = wait_healthy(f"http://127.0.0.1:{port}/healthz", server.procs, timeout)
    if reason is not None:
        tail = proc.log_tail(12)
        server.stop()
        raise TargetUnavailable(f"relay not healthy: {reason}\n{tail}")
    return server
