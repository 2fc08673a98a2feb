"""A real Redis Cluster on free ports, started by the tests and killable: N masters (and R
replicas each) of ``redis-server --cluster-enabled yes``, joined with ``redis-cli --cluster
create``, with a short ``cluster-node-timeout`` so that a replica takes over from a killed master
within a few seconds. :class:`Node` (one server) and :func:`wait_for` serve the Sentinel group
too (:mod:`.redis_sentinel`).

Every wait polls for the condition with a deadline (never a blind sleep).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .procs import ManagedProcess, free_port, wait_port
from .redis import RedisProcess

CLUSTER_NODE_TIMEOUT_MS = 1000  # a killed master is failed over in ~2-3 s


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
    return binary


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); TimeoutError naming
    ``what`` after ``timeout`` seconds. Errors while polling count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not true after {timeout:g} s" + (f" (last error: {last!r})" if last else ""))


class Node(RedisProcess):
    """One redis-server process (a cluster node, a Sentinel-managed server or a sentinel)."""

    def __init__(self, base: Path, args: list[str], *, sentinel: bool = False,
                 cluster: bool = False) -> None:
        self.port = free_port()
        # The cluster bus defaults to port + 10000, which may be taken or past 65535.
        self.bus_port = free_port() if cluster else None
        self.dir = base / str(self.port)
        self.dir.mkdir(parents=True)
        self.args = args
        self.sentinel = sentinel
        self.proc: ManagedProcess | None = None

    def start(self) -> None:
        common = ["--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
                  "--dir", str(self.dir)]
        if self.sentinel:  # a sentinel rewrites its config file: it needs one of its own
            conf = self.dir / "sentinel.conf"
            conf.write_text("\n".join(self.args) + "\n")
            argv = [_binary(), str(conf), "--sentinel", *common]
        else:
            bus = ["--cluster-port", str(self.bus_port)] if self.bus_port else []
            # No 5 s wait before a replica's first sync (the default diskless-sync delay).
            argv = [_binary(), *common, *bus, "--save", "", "--appendonly", "no",
                    "--repl-diskless-sync-delay", "0", *self.args]
        self.proc = ManagedProcess(f"redis-{self.port}", argv)
        wait_port(self.port)

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True, **kwargs)

    def pubsub_clients(self) -> int:
        """How many pub/sub connections this server holds."""
        with self.client() as c:
            return len(c.client_list(_type="pubsub"))

    def drop_replicas(self) -> None:
        """Close this master's replication links: writes from now on stay on it alone (with
        its replicas paused, so that they cannot reconnect and catch up)."""
        with self.client() as c:
            c.execute_command("CLIENT", "KILL", "TYPE", "replica")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def output(self) -> str:
        return self.proc.output() if self.proc is not None else ""


class ClusterServers:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on 127.0.0.1."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.masters_wanted, self.replicas_wanted = masters, replicas
        self.base = Path(tempfile.mkdtemp(prefix="relay-cluster-"))
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                # A replica whose link was down a while may still take over (the tests pause
                # replicas on purpose); other shards keep serving while one fails over.
                "--cluster-replica-validity-factor", "0",
                "--cluster-require-full-coverage", "no"]
        self.nodes = [Node(self.base, args, cluster=True) for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas_wanted), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout}{create.stderr}")
        wait_for(self.healthy, 30, "cluster state ok, every node agreeing, replicas in sync")

    def _by_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def topology(self, via: Node | None = None) -> dict[int, list[int]]:
        """master port -> replica ports, as a live node sees it (failed nodes left out)."""
        node = via or next(n for n in self.nodes if n.alive)
        with node.client() as c:
            lines = c.execute_command("CLUSTER", "NODES").splitlines()
        ids: dict[str, int] = {}
        masters: dict[int, list[int]] = {}
        rows = [line.split() for line in lines]
        for row in rows:
            ids[row[0]] = int(row[1].split("@")[0].rsplit(":", 1)[1])
        for row in rows:
            flags, port = row[2].split(","), ids[row[0]]
            if "fail" in flags or "fail?" in flags:
                continue
            if "master" in flags and len(row) > 8:  # a master that owns slots
                masters.setdefault(port, [])
        for row in rows:
            flags, port = row[2].split(","), ids[row[0]]
            if "slave" in flags and "fail" not in flags and ids.get(row[3]) in masters:
                masters[ids[row[3]]].append(port)
        return masters

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and sees the same masters, each master with
        its replicas attached and caught up."""
        views = []
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as c:
                if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                    return False
            views.append(self.topology(node))
        if not views or any(v != views[0] for v in views):
            return False
        topo = views[0]
        if len(topo) != self.masters_wanted:
            return False
        for master, replicas in topo.items():
            with self._by_port(master).client() as c:
                info = c.info("replication")
            online = [k for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            if len(online) != len(replicas):
                return False
        return True

    def masters(self) -> list[Node]:
        return [self._by_port(p) for p in sorted(self.topology())]

    def replicas_of(self, master: Node) -> list[Node]:
        return [self._by_port(p) for p in self.topology()[master.port]]

    def spread(self, channel: Callable[[str], str], per_master: int, tag: str) -> dict[int, list[str]]:
        """Instance names ``<tag>-<i>``, ``per_master`` on each master (by the slot of their
        ``channel(name)``), as {master port: names}."""
        chosen: dict[int, list[str]] = {m.port: [] for m in self.masters()}
        for i in range(10_000):
            name = f"{tag}-{i}"
            names = chosen.get(self.master_for(channel(name)).port)
            if names is not None and len(names) < per_master:
                names.append(name)
            if all(len(names) == per_master for names in chosen.values()):
                return chosen
        raise AssertionError("could not spread instances over the masters")

    def master_for(self, key: str) -> Node:
        """The master that owns ``key``'s slot now."""
        return self.master_for_slot(key_slot(key.encode()))

    def wait_promoted(self, replica: Node, timeout: float = 30) -> None:
        """After its master died: wait until ``replica`` serves the slots as a master and every
        live node says the cluster is ok with all its masters."""
        def promoted() -> bool:
            with replica.client() as c:
                if c.info("replication").get("role") != "master":
                    return False
            return self.healthy()
        wait_for(promoted, timeout, f"replica {replica.port} promoted")

    def move_slot(self, slot: int, to: Node) -> None:
        """Reshard one slot (and its keys) to master ``to``, the way redis-cli does."""
        source = self.master_for_slot(slot)
        with source.client() as src, to.client() as dst:
            src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
            for node in (to, source, *(n for n in self.nodes if n.alive and n not in (to, source))):
                with node.client() as c:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        wait_for(lambda: self.healthy() and self.master_for_slot(slot) is to, 30, f"slot {slot} moved")

    def master_for_slot(self, slot: int) -> Node:
        node = next(n for n in self.nodes if n.alive)
        with node.client() as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self._by_port(int(master[1]))
        raise LookupError(f"slot {slot} is not served")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)
