"""Each gateway's reachability, as the probe found it and as this worker tells its viewers.

Only the probe decides (it runs on the worker that holds the gateway's lease): one instance's
error says nothing of the others, and must never make another tenant's page say the gateway is
down. The verdict is shared through the coordination store; every worker follows it and tells
the viewers it has of that gateway's instances (an overlay on their snapshots, see
:class:`relay.hub.Overlay`). After a recovery each worker resyncs those instances, paced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .hub import Hub
from .metrics import Metrics
from .ports import Gateway
from .state import Coordination
from .wire import decode

log = logging.getLogger("relay")
# After a gateway recovers, each worker resyncs the instances its viewers watch, this many at a
# time with a pause between: a gateway just back is not hit by every instance at once.
RESYNC_BATCH = 20
RESYNC_PAUSE = 0.5


class Reachability:
    """Reports, follows and tells gateway reachability for one worker's core."""

    def __init__(self, hub: Hub, coordination: Coordination, metrics: Metrics,
                 gateways: dict[str, Gateway],
                 spawn: Callable[[str, Coroutine[Any, Any, None]], None]):
        self.hub = hub
        self.coordination = coordination
        self.metrics = metrics
        self.gateways = gateways
        self.spawn = spawn

    def view(self, name: str) -> tuple[bool, str | None]:
        """This worker's current view of gateway ``name``: (ok, what failed)."""
        down = self.hub.overlay.gateways_down
        return (False, down[name]) if name in down else (True, None)

    async def report(self, upstream: str, ok: bool, detail: str | None) -> None:
        """What the lease holder's probe found (nothing else decides a gateway's reachability:
        one instance's error is that instance's, and says nothing of the others). Shared with
        every worker through the coordination store; each tells its own viewers."""
        self.metrics.upstream_up.labels(upstream).set(1 if ok else 0)
        previous = await self.coordination.swap_status(upstream, {"ok": ok, "detail": detail})
        if previous is not None and (previous.get("ok"), previous.get("detail")) != (ok, detail):
            if ok:
                log.info("%s is reachable again", upstream)
            else:
                log.error("%s is unreachable: %s", upstream, detail)
        await self._seen(upstream, ok, detail)

    async def follow(self, interval: float) -> None:
        """Keep this worker's view of every gateway's reachability current (the probe runs on
        one worker only)."""
        while True:
            for name in list(self.gateways):
                try:
                    status = await self.coordination.status(name)
                except Exception:  # the store is down: the listener says so to viewers
                    status = None
                if status is not None:
                    await self._seen(name, bool(status.get("ok")), status.get("detail"))
            await asyncio.sleep(interval)

    async def _seen(self, name: str, ok: bool, detail: str | None) -> None:
        """A (possibly) new view of a gateway: retell local viewers of its instances, and after
        a recovery resync them (missed events are never replayed), paced."""
        down = self.hub.overlay.gateways_down
        if (name not in down) == ok and (ok or down.get(name) == detail):
            return
        if ok:
            down.pop(name, None)
        else:
            down[name] = detail
        mine = self._watched_of(name)
        await self.hub.retell(mine)
        gateway = self.gateways.get(name)
        if ok and gateway is not None and mine:
            self.spawn(f"resync-{name}", self._paced_resync(gateway, mine))

    def _watched_of(self, upstream: str) -> list[str]:
        """Instances this worker's viewers watch whose snapshot names ``upstream``."""
        names = []
        for instance, (_, payload) in self.hub.last.items():
            try:
                if decode(payload)["upstream"]["name"] == upstream:
                    names.append(instance)
            except (ValueError, KeyError, TypeError):
                continue
        return names

    async def _paced_resync(self, gateway: Gateway, instances: list[str]) -> None:
        for start in range(0, len(instances), RESYNC_BATCH):
            await gateway.resync_all(instances[start:start + RESYNC_BATCH])
            await asyncio.sleep(RESYNC_PAUSE)
