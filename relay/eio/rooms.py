"""Who watches which instance on the lean websocket front, and the one write per update.

An update's websocket frame is built once and the same bytes are written to every viewer's
transport (server frames are never masked). A viewer whose transport cannot drain is cut: a
latest-state channel has no use for a backlog, and memory stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from ..logs import Throttle
from ..ports import Delivery
from .frames import frame

log = logging.getLogger("relay.viewers")
SLOW_BYTES = 512 * 1024  # unsent bytes a viewer may hold (~80 QR updates) before it is cut


class Writable(Protocol):
    expires_at: float  # when its token expires (epoch seconds; 0: not yet connected)

    def write(self, data: bytes) -> bool:
        """Write, or return False when the connection is gone or too far behind."""

    def expire(self) -> None:
        """End the session: its token expired."""


class Rooms:
    """Instance → the lean connections watching it; with python-socketio's rooms (long-polling
    clients) as the ``fallback``."""

    def __init__(self, fallback: Delivery, on_slow: Callable[[], None]):
        self.fallback = fallback
        self.on_slow = on_slow
        self._rooms: dict[str, set[Writable]] = defaultdict(set)
        self._throttle = Throttle(10.0)

    def join(self, room: str, conn: Writable) -> None:
        self._rooms[room].add(conn)

    def leave(self, room: str, conn: Writable) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self._rooms[room]

    def slow(self, behind: int) -> None:
        """A connection was cut for falling ``behind`` bytes behind."""
        self.on_slow()
        held = self._throttle.ready("slow")
        if held is not None:
            log.warning("disconnected a viewer that fell %d KB behind%s", behind // 1024,
                        f" ({held} more since)" if held else "")

    async def send_update(self, room: str, packet: str) -> int:
        """Send one Socket.IO packet to every viewer in ``room``; returns how many."""
        members = self._rooms.get(room)
        count = 0
        if members:
            data = frame(("4" + packet).encode())  # Engine.IO "message" + the Socket.IO packet
            now = time.time()
            for conn in list(members):
                if conn.expires_at <= now:  # not one update past the token's expiry
                    conn.expire()
                else:
                    count += conn.write(data)
        return count + await self.fallback.send_update(room, packet)
