"""The servers under test: the relay (``relay serve --workers W``) and the Node reference peer
(W processes, one port each), both sharing state through a private Redis (``stores.py``: one
redis-server, or for the relay a Redis Cluster).

A start failure raises ``TargetUnavailable`` with one readable line (plus the end of the logs),
so the harness can print it and go on with the other targets.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from stores import HasRedisUrl, TargetUnavailable

from tests.support.fixtures import SHARED
from tests.support.procs import ManagedProcess, free_port, wait_healthy
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess

NODE_PEER = SHARED / "bench" / "node-peer" / "run.sh"


__all__ = ["Server", "TargetUnavailable", "node_process", "start_node", "start_redis", "start_relay"]


@dataclass
class Server:
    """A running server under test."""

    name: str
    workers: int
    ports: list[int]  # ports viewers and webhooks are spread over
    procs: list[ManagedProcess] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def root_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def start_redis(log_dir: Path) -> RedisServer:
    """A throwaway redis-server on a free port, its log in ``log_dir`` (the harness reads it)."""
    redis = RedisServer(log_dir=log_dir)
    try:
        redis.start()
    except (RuntimeError, TimeoutError) as err:
        redis.stop()
        raise TargetUnavailable(f"redis-server did not start: {err}") from err
    return redis


def node_process(port: int, redis: HasRedisUrl, key_prefix: str, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """One Node peer process on ``port`` (also used to restart one on the same port)."""
    env = dict(os.environ, KEY_PREFIX=key_prefix, NODE_ENV="production", **(extra_env or {}))
    return ManagedProcess(f"node-peer-{port}", [str(NODE_PEER), str(port), redis.url], env, log_path)


def start_node(workers: int, redis: HasRedisUrl, key_prefix: str, log_dir: Path,
               timeout: float, extra_env: dict[str, str] | None = None) -> Server:
    """W independent Node peer processes (one port each) sharing rooms via the Redis adapter."""
    if not NODE_PEER.exists():
        raise TargetUnavailable(f"{NODE_PEER} not found (set RELAY_SHARED_DIR to the shared folder)")
    if shutil.which("node") is None:
        raise TargetUnavailable("node not found on PATH")
    server = Server("node", workers, [])
    try:
        for _ in range(workers):
            port = free_port()
            server.ports.append(port)
            server.procs.append(node_process(port, redis, key_prefix, log_dir / f"node-{port}.log",
                                             extra_env))
        for port in server.ports:
            # run.sh npm-installs once into its cache: the first ever start can take a while.
            wait_healthy(f"http://127.0.0.1:{port}/healthz", server.procs, timeout)
    except (RuntimeError, TimeoutError) as err:
        server.stop()
        raise TargetUnavailable(f"node peer not healthy: {err}") from err
    except BaseException:
        server.stop()
        raise
    return server


def start_relay(workers: int, redis: HasRedisUrl, log_dir: Path, timeout: float,
                extra_env: dict[str, str] | None = None, name: str = "relay") -> Server:
    """``relay serve --workers W`` on one port, sharing state through the private Redis (any URL
    the relay takes: ``redis://`` or ``redis+cluster://``); viewers use
    ``tests.support.clients.token`` (the relay runs with the test secret)."""
    port = free_port()
    relay = RelayProcess({"RELAY_REDIS_URL": redis.url, **(extra_env or {})}, ["--workers", str(workers)],
                         log_path=log_dir / f"relay-{port}.log", port=port)
    try:
        relay.start(timeout)
    except (RuntimeError, TimeoutError) as err:
        relay.stop()
        raise TargetUnavailable(f"relay not healthy: {err}") from err
    assert relay.proc is not None
    return Server(name, workers, [port], [relay.proc])
