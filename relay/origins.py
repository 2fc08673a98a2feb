"""Which browser origins may use the relay, and a log line when one is refused.

Starlette's CORS middleware and Socket.IO refuse a foreign origin silently: a host app that
forgot RELAY_ALLOWED_ORIGINS would only see a blank widget. This says so in the log, at most once
a minute per origin (any site can send any Origin header: the log must not become its outlet).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("relay.origins")
EVERY = 60.0
REMEMBERED = 1000


class OriginLog:
    """ASGI middleware: passes everything through, and notes refused origins."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]):
        self.app = app
        self.allowed = frozenset(allowed)
        self._noted: OrderedDict[str, float] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            origin = host = None
            for name, value in scope.get("headers", ()):
                if name == b"origin":
                    origin = value.decode("latin-1")
                elif name == b"host":
                    host = value.decode("latin-1")
            if origin is not None and not self.permitted(origin, host):
                self.note(origin)
        await self.app(scope, receive, send)

    def permitted(self, origin: str, host: str | None) -> bool:
        """Listed, or the relay's own origin (its page and widget)."""
        return origin in self.allowed or (host is not None and urlsplit(origin).netloc == host)

    def note(self, origin: str) -> None:
        now = time.monotonic()
        if now - self._noted.get(origin, -EVERY) < EVERY:
            return
        self._noted[origin] = now
        self._noted.move_to_end(origin)
        while len(self._noted) > REMEMBERED:
            self._noted.popitem(last=False)
        log.warning("refused a browser request from origin %r: it is not in RELAY_ALLOWED_ORIGINS "
                    "(a widget embedded there cannot connect)", origin[:120])
