"""The core's ports: what it needs of the world outside it, as protocols the edges implement
(the core never imports them)."""

from __future__ import annotations

from typing import Protocol


class Gateway(Protocol):
    """What the core needs of a gateway (:class:`relay.gateways.base.Gateway`)."""

    name: str

    async def connect(self, instance: str, number: str | None = None) -> None: ...

    async def logout(self, instance: str) -> None: ...

    async def resync_all(self, instances: list[str] | None = None) -> None: ...

    async def describe(self, instance: str) -> str:
        """What the gateway's REST API says of the instance, for a log line."""

    def start(self) -> None: ...


class Delivery(Protocol):
    """Where Socket.IO viewers are reached (:class:`relay.internals.RelayManager`)."""

    async def send_update(self, room: str, packet: str) -> int:
        """Send one Socket.IO packet to every viewer in ``room``; returns how many."""
