"""python-socketio and python-engineio beyond their documented API.

- :class:`RelayManager`, given to ``socketio.AsyncServer`` as its client manager, sends an
  already encoded ``update`` packet to a room: the snapshot's JSON is wrapped once and the same
  packet object goes to every viewer (python-socketio would re-encode per emit).
- It bounds every viewer's send queue: a viewer that falls too far behind is disconnected, and
  its TCP connection aborted (Engine.IO alone leaves a blocked writer behind).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet

log = logging.getLogger("relay.viewers")
MAX_QUEUED_PACKETS = 64  # ~400 KB of QR updates; a viewer this far behind is gone or too slow.
CONNECT_WITHIN = 10.0  # seconds an Engine.IO socket may stay open without a Socket.IO connect


class RelayManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's client manager, plus the relay's pre-encoded fan-out and queue bound."""

    def __init__(self) -> None:
        super().__init__()
        # eio sid -> the TCP transport of that websocket, to cut a stalled viewer for real.
        self._transports: dict[str, asyncio.WriteTransport] = {}
        # eio sid -> when it was first seen without a Socket.IO connect (with a valid token).
        self._anonymous: dict[str, float] = {}

    async def send_update(self, room: str, packet: str) -> int:
        """Send one Socket.IO packet (text, e.g. :func:`relay.wire.socketio_update`) to every
        viewer in ``room`` on the root namespace; returns how many."""
        message = eio_packet.Packet(eio_packet.MESSAGE, data=packet)
        count = 0
        for _sid, eio_sid in self.get_participants("/", room):
            await self.server.eio.send_packet(eio_sid, message)
            count += 1
        return count

    def track(self, sid: str, environ: dict[str, Any]) -> None:
        """Remember the transport under a websocket viewer (see :meth:`evict_slow_viewers`)."""
        # Engine.IO never exposes it; uvicorn's ASGI `send` is a method of the connection's
        # protocol object, which holds the transport. Without it, a viewer that stopped reading
        # keeps its TCP connection (and a blocked writer) forever after being "closed".
        transport = _transport(environ)
        eio_sid = self.eio_sid_from_sid(sid, "/")
        if transport is not None and eio_sid is not None:
            self._transports[eio_sid] = transport
        # engine.io builds a new class per request and keeps it alive through this key for the
        # whole connection (~3 KB per viewer, measured); the handshake body was read long ago.
        environ.pop("wsgi.input", None)

    def untrack(self, sid: str) -> None:
        eio_sid = self.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self._transports.pop(eio_sid, None)

    def tracked(self) -> set[str]:
        """The Socket.IO sids whose transport is tracked (for tests and diagnostics)."""
        sids = set()
        for eio_sid in self._transports:
            sid = self.sid_from_eio_sid(eio_sid, "/")
            if sid is not None:
                sids.add(sid)
        return sids

    async def evict_slow_viewers(self, on_evict: Callable[[], None], interval: float = 1.0) -> None:
        """Disconnect Socket.IO viewers whose send queue keeps growing (bounded memory), and
        Engine.IO sockets that never connected with a valid token (each holds ~30 KB)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            sockets = list(self.server.eio.sockets.items())
            live = {eio_sid for eio_sid, _ in sockets}
            for eio_sid in list(self._anonymous):
                if eio_sid not in live:
                    del self._anonymous[eio_sid]
            for eio_sid, sock in sockets:
                if self.sid_from_eio_sid(eio_sid, "/") is None:
                    if now - self._anonymous.setdefault(eio_sid, now) > CONNECT_WITHIN:
                        del self._anonymous[eio_sid]
                        await self._cut(eio_sid, sock)
                    continue
                self._anonymous.pop(eio_sid, None)
                queue = getattr(sock, "queue", None)
                if queue is not None and queue.qsize() > MAX_QUEUED_PACKETS:
                    log.warning("disconnecting a viewer that fell %d updates behind", queue.qsize())
                    on_evict()
                    await self._cut(eio_sid, sock)

    async def _cut(self, eio_sid: str, sock: Any) -> None:
        """Close an Engine.IO socket and abort its TCP connection."""
        # Taken first: closing fires `disconnect`, which forgets it.
        transport = self._transports.pop(eio_sid, None) or _transport(
            self.server.environ.get(eio_sid) or {})
        try:
            await sock.close(wait=False, abort=True)
        except Exception:  # it is going away either way
            log.debug("closing a socket failed", exc_info=True)
        if transport is not None:
            # abort(), not close(): close() would wait to flush to a reader that never reads.
            transport.abort()


def _transport(environ: dict[str, Any]) -> asyncio.WriteTransport | None:
    """The TCP transport under a connection: uvicorn's ASGI ``send`` is a method of the
    connection's protocol object, which holds it."""
    transport = getattr(getattr(environ.get("asgi.send"), "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.WriteTransport) else None


def create_server(manager: RelayManager, *, origins: list[str], websocket_only: bool
                  ) -> socketio.AsyncServer:
    """The Socket.IO server for browsers (path ``/socket.io``, namespace ``/``)."""
    # With Redis there may be several workers behind a balancer: long-polling would need sticky
    # sessions and fail intermittently without them, so only websocket is offered (a client that
    # insists on polling fails at once, with the reason in the README, not at random).
    return socketio.AsyncServer(async_mode="asgi", client_manager=manager,
                                # None: same origin only; host apps list theirs.
                                cors_allowed_origins=origins or None,
                                transports=["websocket"] if websocket_only else ["polling", "websocket"],
                                ping_interval=20, ping_timeout=20, max_http_buffer_size=64 * 1024,
                                logger=False, engineio_logger=False)
