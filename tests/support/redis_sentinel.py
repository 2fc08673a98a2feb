"""A real Sentinel group on free ports, started by the tests and killable: one master, its
replicas, and three ``redis-server --sentinel`` (the ``redis-sentinel`` binary of Debian's
package is the same program, so ``redis-server`` is all the tests need), with a short
``down-after-milliseconds`` so that a replica is promoted within a few seconds of a kill.

Every wait polls for the condition with a deadline (never a blind sleep).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .redis_cluster import Node, wait_for

SENTINEL_DOWN_AFTER_MS = 1000
SERVICE = "relay-master"


class SentinelGroup:
    """One master, ``replicas`` replicas and three sentinels watching them as ``SERVICE``."""

    def __init__(self, replicas: int = 2, sentinels: int = 3) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="relay-sentinel-"))
        self.servers = [Node(self.base, []) for _ in range(1 + replicas)]
        self.sentinels: list[Node] = []
        self.sentinel_count = sentinels

    @property
    def url(self) -> str:
        return ("redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
                + f"/{SERVICE}")

    def start(self) -> None:
        first = self.servers[0]
        for server in self.servers[1:]:
            server.args = ["--replicaof", "127.0.0.1", str(first.port)]
        for server in self.servers:
            server.start()
        conf = [f"sentinel monitor {SERVICE} 127.0.0.1 {first.port} 2",
                f"sentinel down-after-milliseconds {SERVICE} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} 10000",
                f"sentinel parallel-syncs {SERVICE} 2"]
        self.sentinels = [Node(self.base, conf, sentinel=True) for _ in range(self.sentinel_count)]
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(self.healthy, 30, "sentinels agreeing on the master, replicas in sync")

    def master_port(self, via: Node | None = None) -> int:
        sentinel = via or next(s for s in self.sentinels if s.alive)
        with sentinel.client() as c:
            host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def master(self) -> Node:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def replicas(self) -> list[Node]:
        master = self.master()
        return [s for s in self.servers if s is not master and s.alive]

    def healthy(self) -> bool:
        """All sentinels name the same live master, see each other and its replicas, and the
        replicas are online."""
        ports = {self.master_port(s) for s in self.sentinels}
        if len(ports) != 1:
            return False
        master = next(s for s in self.servers if s.port == ports.pop())
        if not master.alive:
            return False
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                state = c.execute_command("SENTINEL", "MASTER", SERVICE)
            state = dict(zip(state[::2], state[1::2])) if isinstance(state, list) else state
            if "s_down" in state["flags"] or "o_down" in state["flags"]:
                return False
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            if int(state["num-slaves"]) < len([s for s in self.servers if s.alive]) - 1:
                return False
        with master.client() as c:
            info = c.info("replication")
        online = [k for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                  and v.get("state") == "online"]
        return info.get("role") == "master" and len(online) == len([s for s in self.servers if s.alive]) - 1

    def wait_failover(self, killed: Node, timeout: float = 30) -> Node:
        """After the master ``killed`` died: wait until every sentinel names a new, live master
        that says it is one; returns it."""
        def promoted() -> Node | None:
            ports = {self.master_port(s) for s in self.sentinels}
            if len(ports) != 1 or killed.port in ports:
                return None
            new = next(s for s in self.servers if s.port in ports)
            with new.client() as c:
                return new if c.info("replication").get("role") == "master" else None
        return wait_for(promoted, timeout, f"a replica of {killed.port} promoted by the sentinels")  # type: ignore[no-any-return]

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.kill()
        shutil.rmtree(self.base, ignore_errors=True)
