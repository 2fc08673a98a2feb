"""Webhooks answered on uvicorn's httptools protocol itself, without an ASGI round.

A webhook is the relay's hottest request: every QR and state change of every instance comes as
one. Through ASGI it costs a task per request plus the Socket.IO, origin and Starlette layers,
a scope, a ``Request`` and a two-message response; measured, those were over half of its CPU.
Here the protocol collects the body itself and calls :class:`relay.webhooks.Webhooks` (the same
rules and answers as the ASGI endpoint, which still serves anything this path leaves alone:
pipelined requests behind a busy one, upgrades, apps run without ``relay serve``).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import TYPE_CHECKING

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from ..core import Relay
    from ..webhooks import Answer, Parser, Webhooks

log = logging.getLogger("relay.webhooks")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HookCycle:
    """One webhook request in flight: what uvicorn's protocol reads of a cycle (``shutdown``,
    ``connection_lost``, pipelining), and the request itself."""

    def __init__(self, upstream: str, rest: str, parse: Parser, query: bytes,
                 authorization: str | None, keep_alive: bool):
        self.upstream, self.rest, self.parse = upstream, rest, parse
        self.query = query
        self.authorization = authorization
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = asyncio.Event()  # set by uvicorn's connection_lost; unused here


class WebhookFastPath(HttpToolsProtocol):
    """httptools protocol that answers ``POST /webhooks/...`` itself (see the module's doc)."""

    def on_headers_complete(self) -> None:
        hooks: Webhooks | None = self.app_state.get("webhooks")
        if hooks is None or self.parser.get_method() != b"POST" or self.parser.should_upgrade() \
                or not (self.cycle is None or self.cycle.response_complete):
            super().on_headers_complete()
            return
        url = httptools.parse_url(self.url)
        path = url.path.decode("ascii", "replace")
        route = hooks.route(urllib.parse.unquote(path) if "%" in path else path)
        if route is None:
            super().on_headers_complete()
            return
        authorization = next((v.decode("latin-1") for k, v in self.headers
                              if k == b"authorization"), None)
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = HookCycle(*route, url.query or b"", authorization, keep_alive)  # type: ignore[assignment]
        if self.expect_100_continue:
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, HookCycle):
            super().on_body(body)
            return
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > self._hooks.max_body:
            # Answer now; read and drop the rest (closing with it unread could reset the
            # connection before the client reads the 413), then close.
            cycle.keep_alive = False
            cycle.body = bytearray()
            self._reply(cycle, self._hooks.too_large(self._core, cycle.upstream))

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, HookCycle):
            super().on_message_complete()
            return
        if cycle.response_complete:  # answered early (413): the rest was read and dropped
            if not cycle.keep_alive:
                self.transport.close()
            return
        cycle.more_body = False
        task = self.loop.create_task(self._answer(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    @property
    def _hooks(self) -> Webhooks:
        return self.app_state["webhooks"]  # type: ignore[no-any-return]

    @property
    def _core(self) -> Relay:
        return self.app_state["core"]  # type: ignore[no-any-return]

    async def _answer(self, cycle: HookCycle) -> None:
        from ..webhooks import Answer  # (the module imports the app's layers: only when used)

        hooks, core = self._hooks, self._core
        try:
            ok, rest = hooks.allowed(cycle.upstream, cycle.rest, cycle.authorization)
            if not ok:
                answer = hooks.unauthorized(core, cycle.upstream)
            else:
                session = _session(cycle.query)
                answer = await hooks.answer(core, cycle.upstream, rest, cycle.parse,
                                            bytes(cycle.body), session)
        except Exception:  # a bug: say so in the log, answer like any other error
            log.exception("webhook handler failed")
            answer = Answer.error(500, "internal", "the relay failed to handle this webhook")
        self._reply(cycle, answer)

    def _reply(self, cycle: HookCycle, answer: Answer) -> None:
        """Write the whole response at once; then on to the next request, as uvicorn would."""
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return
        out: list[bytes] = [STATUS_LINE[answer.status]]
        for name, value in self.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        for header, text in answer.headers:
            out += [header.encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n"]
        out += [b"content-type: application/json\r\ncontent-length: ",
                str(len(answer.body)).encode(), b"\r\n"]
        if not cycle.keep_alive:
            out.append(b"connection: close\r\n")
        out += [b"\r\n", answer.body]
        self.transport.write(b"".join(out))
        if cycle.more_body:  # answered before the whole body: on_message_complete closes
            return
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def _session(query: bytes) -> str | None:
    if not query:
        return None
    values = urllib.parse.parse_qs(query.decode("latin-1")).get("session")
    return values[0] if values else None
