"""Limits on the HTTP front, on uvicorn's httptools protocol (httptools itself has none).

- Request headers: at most ``max_header_bytes`` (431 and close past it), complete within
  ``header_timeout`` of the connection or of the previous response (else closed: slowloris).
- A request body: complete within ``body_timeout`` of its headers.
- At most ``max_connections`` open connections (websockets included). At the cap a new
  connection first evicts the oldest one still sending its headers (a real client sends them
  in milliseconds; a slowloris never does); if none is, the new one is refused.

Every refusal is logged, throttled. Given to uvicorn as its ``http`` protocol class.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from ..eio.gate import socket_number
from ..logs import Throttle
from .fastpath import WebhookFastPath

log = logging.getLogger("relay.http")
_throttle = Throttle(10.0)


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0  # 0: from the open-file limit, see connection_cap()


def connection_cap(configured: int) -> int:
    """``configured``, or the process's open-file limit less a reserve for Redis, the gateway and
    logs (past it, every accept fails with EMFILE and nothing else can be served)."""
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(32, soft - 64) if soft != resource.RLIM_INFINITY else 1_000_000


def _say(kind: str, message: str) -> None:
    held = _throttle.ready(kind)
    if held is not None:
        log.warning("%s%s", message, f" ({held} more since the last line)" if held else "")


class GuardedHttp(WebhookFastPath):
    """uvicorn's httptools protocol with the limits above (and webhooks answered on it)."""

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.cap = connection_cap(limits.max_connections)
        # Where the parser is: in a request's head (or waiting for one), or in its body.
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0  # raw bytes received while in a head (a header that never ends)
        self._parsed = 0  # bytes of the current head's header fields, as parsed
        self._refused = False
        self._head_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._gated = -1  # its socket's number while the front's gate holds it (see _gate)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()
        if len(self.connections) > self.cap and not self._evict_one():
            _say("cap", f"refused a connection: {self.cap} are open (the cap; raise the open-file "
                        "limit or RELAY_MAX_CONNECTIONS)")
            self._close()
            return
        self._gate()

    def _gate(self) -> None:
        """A new connection's first request is let in through the viewers' gate
        (relay/eio/gate.py), a slice per turn of the event loop; later ones are read freely.

        Why: after a blip or a restart, thousands of browsers send their websocket upgrade in the
        same second, and uvloop would parse every one that arrived in the same turn (~40 µs
        each; a slow turn lets hundreds pile up). Through the gate a turn reads at most a
        slice of them. A kept-alive client (a gateway posting webhooks) pays this once."""
        front = self.app_state.get("front")
        fd = socket_number(self.transport)
        if front is not None and fd >= 0 and front.gate.pause(self.transport, fd, self):
            self._gated = fd

    def let_in(self) -> None:
        """The gate's turn came: read from now on (also the end of a client that went away)."""
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _evict_one(self) -> bool:
        """Abort the oldest other connection that has not proved itself yet: one still sending
        its request headers, or a websocket viewer that has not connected with a token."""
        oldest: tuple[float, Any] | None = None
        for conn in self.connections:
            if conn is self:
                continue
            since = conn._head_since if isinstance(conn, GuardedHttp) and conn._in_head \
                else getattr(conn, "unproven_since", lambda: None)()
            if since is not None and (oldest is None or since < oldest[0]):
                oldest = (since, conn)
        if oldest is None:
            return False
        _say("evict", "at the connection cap: closed the oldest connection that had not sent "
                      "its request headers or connected with a token")
        victim = oldest[1]
        victim._close() if isinstance(victim, GuardedHttp) else victim.abort()
        return True

    def _wait_for_head(self) -> None:
        self._in_head, self._head_since = True, self.loop.time()
        self._arm(self.limits.header_timeout, "did not send its request headers within")

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._late, seconds, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _late(self, seconds: float, what: str) -> None:
        self._timer = None
        if not self.transport.is_closing():
            _say("late", f"closed a connection that {what} {seconds:g} s")
            self._close()

    def _close(self) -> None:
        self._disarm()
        self.transport.abort()

    def _refuse_431(self) -> None:
        _say("big", f"refused a request whose headers passed {self.limits.max_header_bytes // 1024} KB")
        self._refused = True
        self._disarm()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # may complete the headers (the rest of data is body)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes \
                and not self.transport.is_closing():
            self._refuse_431()  # a head still coming after the limit (one endless header)

    # -- the parser's callbacks: count the head, time the body -----------------------------------
    def on_message_begin(self) -> None:
        self._in_head, self._parsed = True, 0
        if not self._refused:
            super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        if self._refused or self.transport.is_closing():
            self._refused = True
            return
        if self._parsed > self.limits.max_header_bytes:  # headers that came in one read
            self._refuse_431()
            return
        self._in_body = True
        self._arm(self.limits.body_timeout, "did not send its request body within")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request, unless one (pipelined) is already being served.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._wait_for_head()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._in_head = self._in_body = False
        # The app's lean front (relay/eio/) takes websocket-only Engine.IO connections over,
        # from this transport; anything else goes to uvicorn's websocket protocol and ASGI.
        front = self.app_state.get("front")
        path, _, query = self.url.partition(b"?")
        if front is not None and front.wants(path.decode("latin-1"), query.decode("latin-1")):
            self.connections.discard(self)
            front.take(self.transport, self.scope["headers"], self.connections)
            # Done with HTTP: break the parser <-> protocol cycle (uvicorn does it in
            # connection_lost, never called here), so this object goes with its last reference
            # instead of waiting for a GC pass (a storm leaves thousands).
            self.parser = None  # type: ignore[assignment]
            return
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._gated >= 0:
            self.app_state["front"].gate.forget(self._gated, self)
        super().connection_lost(exc)
