"""The Redis behind a benchmark target: one private redis-server, or a private Redis Cluster
(N masters, no replicas) on free ports. The harness sees either as a ``RedisStore``: the URL the
servers are given, the pids whose CPU is Redis's (summed over every node), the logs it scans for
redis-server's complaints, and one ``stop()``.

A start failure raises ``TargetUnavailable`` (and stops whatever had started).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

from tests.support.procs import ManagedProcess
from tests.support.redis import RedisServer
from tests.support.redis_cluster import ClusterServers, wait_for


class TargetUnavailable(Exception):
    """The target could not be started; the first line of str() is the reason."""


class HasRedisUrl(Protocol):
    """What the servers under test need of their Redis (a ``RedisStore`` or a ``RedisServer``)."""

    @property
    def url(self) -> str: ...


class RedisStore:
    """Base class: the Redis processes of one target, seen as one. ``start`` runs in a worker
    thread; ``stop`` may come from the event loop meanwhile (Ctrl-C), and runs once at a time."""

    def __init__(self) -> None:
        self.stopping = False
        self._stop_lock = threading.Lock()

    @property
    def url(self) -> str:
        raise NotImplementedError

    def procs(self) -> list[ManagedProcess]:
        """The redis-server processes (one, or one per cluster node)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _not_stopping(self) -> bool:
        if self.stopping:
            raise RuntimeError("stopped while starting")
        return True

    def _stop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process and remove the data directories (also after a failed start, and
        again: it is idempotent)."""
        self.stopping = True
        with self._stop_lock:
            self._stop()

    def start(self) -> None:
        """Start it (blocking); ``TargetUnavailable`` if it cannot, everything stopped again."""
        try:
            self._start()
        except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as err:
            self.stop()
            raise TargetUnavailable(f"{self.describe()} did not start: {err}") from err

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs()]

    def log_paths(self) -> list[Path]:
        return [p.log_path for p in self.procs()]


class OneRedis(RedisStore):
    """One redis-server, its log in ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.server = RedisServer(log_dir=log_dir)

    @property
    def url(self) -> str:
        return self.server.url

    def procs(self) -> list[ManagedProcess]:
        return [self.server.proc] if self.server.proc is not None else []

    def describe(self) -> str:
        return f"redis {self.server.port}"

    def _start(self) -> None:
        with self._stop_lock:  # a stop() either comes first (start gives up) or waits for it
            self._not_stopping()
            self.server.start()

    def _stop(self) -> None:
        self.server.stop()


class ClusterRedis(RedisStore):
    """A Redis Cluster of ``masters`` masters and no replicas (``tests.support.redis_cluster``);
    the nodes' logs are copied into ``log_dir`` when it stops (the nodes log to temp files).

    It starts like ``ClusterServers.start`` but gives up as soon as ``stop()`` is called from
    another thread (Ctrl-C during the start): ``redis-cli --cluster create`` against nodes that
    were just killed would otherwise wait its 60 s timeout, then the health check its 30 s."""

    def __init__(self, log_dir: Path, masters: int = 3) -> None:
        super().__init__()
        self.cluster = ClusterServers(masters=masters, replicas=0)
        self.log_dir = log_dir
        self._create: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return self.cluster.url

    def procs(self) -> list[ManagedProcess]:
        return [n.proc for n in self.cluster.nodes if n.proc is not None]

    def describe(self) -> str:
        ports = ",".join(str(n.port) for n in self.cluster.nodes)
        return f"redis cluster of {len(self.cluster.nodes)} masters on {ports}"

    def _start(self) -> None:
        nodes = self.cluster.nodes
        for node in nodes:
            with self._stop_lock:  # a stop() either comes first (start gives up) or waits for it
                self._not_stopping()
                node.start()
        with self._stop_lock:
            self._not_stopping()
            self._create = create = subprocess.Popen(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                 "--cluster-replicas", "0", "--cluster-yes"], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = create.communicate(timeout=60)
        self._not_stopping()
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out}")
        wait_for(lambda: self._not_stopping() and self.cluster.healthy(), 30,
                 "cluster state ok, every node agreeing")

    def _stop(self) -> None:
        if self._create is not None and self._create.poll() is None:
            self._create.kill()
            self._create.wait()
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for proc in self.procs():
                shutil.copyfile(proc.log_path, self.log_dir / f"{proc.name}-cluster.log")
        except OSError:
            pass  # the logs are for post-mortems only
        self.cluster.stop()


def new_store(kind: str, log_dir: Path) -> RedisStore:
    """``kind`` "redis" (one server) or "cluster" (3 masters), not started yet: the caller keeps
    it before starting it (in a thread), so that an interrupted start is still stopped."""
    return ClusterRedis(log_dir) if kind == "cluster" else OneRedis(log_dir)
