"""uvicorn beyond its documented API: saying "ready" once bound, and several workers on one
socket given a config object (and so the parent's settings) rather than an import string."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_ready`` once its socket is bound and it accepts (so
    "relay ready" is never said of a port that refuses connections)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()


def run_workers(config: uvicorn.Config, on_bound: Callable[[], None]) -> None:
    """Serve ``config.workers`` processes on one port until a signal (what ``uvicorn.run`` does,
    minus its demand for an import string: ``config.app`` is a picklable factory). The port is
    bound here, before the workers start: connections wait in its backlog meanwhile."""
    sockets = [config.bind_socket()]
    on_bound()
    Multiprocess(config, sockets=sockets).run()
