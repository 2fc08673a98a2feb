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
        self._in_head = True
        self._head_bytes = 0
        self._head_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()
        if len(self.connections) > self.cap and not self._evict_one():
            _say("cap", f"refused a connection: {self.cap} are open (the cap; raise the open-file "
                        "limit or RELAY_MAX_CONNECTIONS)")
            self._close()

    def _evict_one(self) -> bool:
        """Abort the oldest other connection still sending its request headers."""
        waiting = [c for c in self.connections
                   if isinstance(c, GuardedHttp) and c is not self and c._in_head]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._head_since)
        _say("evict", "at the connection cap: closed the oldest connection still sending its "
                      "request headers")
        oldest._close()
        return True

    def _begin_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._head_since = self.loop.time()
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

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # may complete the headers (the rest of data is body)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes \
                and not self.transport.is_closing():
            _say("big", f"refused a request whose headers passed "
                        f"{self.limits.max_header_bytes // 1024} KB")
            self._disarm()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout, "did not send its request body within")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._begin_head()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        self._in_head = False
        # The app's lean front (relay/eio/) takes websocket-only Engine.IO connections over,
        # from this transport; anything else goes to uvicorn's websocket protocol and ASGI.
        front = self.app_state.get("front")
        path, _, query = self.url.partition(b"?")
        if front is not None and front.wants(path.decode("latin-1"), query.decode("latin-1")):
            self.connections.discard(self)
            front.take(self.transport, self.scope["headers"], self.connections)
            return
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
