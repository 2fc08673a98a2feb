"""Keeping one Socket.IO namespace of a gateway connected, whatever happens to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from ..tasks import Backoff

log = logging.getLogger("relay.gateway")


async def follow_socket(gateway: str, url: str, namespace: str,
                        handlers: dict[str, Callable[..., Awaitable[None]]], *,
                        on_connect: Callable[[], Awaitable[None]],
                        on_trouble: Callable[[], None],
                        headers: dict[str, str] | None = None,
                        on_close: Callable[[], None] = lambda: None,
                        expected_refusal: str | None = None) -> None:
    """Keep one Socket.IO namespace of the gateway connected, until cancelled.

    Reconnects with capped backoff (python-socketio's own reconnection is off: it does not
    retry a refused namespace, and every (re)connect must be followed by ``on_connect``, a
    resync, because the gateway never replays what was missed). A refusal whose message
    contains ``expected_refusal`` is retried quietly; anything else, and every drop, calls
    ``on_trouble`` (the holder probes the gateway).
    """
    backoff = Backoff(0.5, 10.0)
    while True:
        client = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        closed = asyncio.Event()
        refusals: list[Any] = []
        for name, handler in handlers.items():
            client.on(name, handler, namespace=namespace)
        client.on("disconnect", lambda *_: closed.set(), namespace=namespace)
        client.on("connect_error", refusals.append, namespace=namespace)
        try:
            await client.connect(url, headers=headers or {}, namespaces=[namespace],
                                 transports=["websocket"], wait_timeout=10)
        except (socketio.exceptions.ConnectionError, OSError, asyncio.TimeoutError) as exc:
            reason = _refusal(refusals, exc)
            if expected_refusal is not None and expected_refusal in reason:
                log.debug("%s socket %s: %s; retrying", gateway, namespace, reason)
            else:
                log.warning("%s socket %s: %s", gateway, namespace, reason)
                on_trouble()
            await _disconnect(client)
            await asyncio.sleep(backoff.next())
            continue
        try:
            backoff.reset()
            log.info("following %s's socket (%s)", gateway, namespace)
            await on_connect()
            await closed.wait()
            log.warning("%s socket %s dropped; reconnecting", gateway, namespace)
            on_trouble()
        finally:
            on_close()
            await _disconnect(client)
        await asyncio.sleep(backoff.next())


def _refusal(refusals: list[Any], exc: BaseException) -> str:
    """The server's own reason for refusing a connect (CONNECT_ERROR data), else the error's."""
    for item in reversed(refusals):
        if isinstance(item, dict) and item.get("message"):
            return str(item["message"])
        if isinstance(item, str) and item:
            return item
    return str(exc) or exc.__class__.__name__


async def _disconnect(client: socketio.AsyncClient) -> None:
    try:
        await client.disconnect()
    except Exception:  # already gone
        pass
