"""The gate of idle viewers' sockets: what they send (or their end) is let in a slice at a time.

A viewer's socket is not read by the event loop while it is idle (its transport is paused).
Instead this gate watches every such socket in an epoll set of its own, which the loop watches
as one file descriptor, and on each turn lets at most ``per_turn`` of the ready ones be read
(their transport resumed until the next message is handled).

Why: a network blip resets thousands of connections at once. Watched by the loop itself, every
reset is handled in the same turn (uvloop reads, closes and forgets them all, ~20 µs each): a
5,000-viewer worker stopped for 100-300 ms. Through the gate the resets are seen a slice per turn,
and the loop goes on between slices. A viewer's message waits one more turn of the loop
(microseconds), and costs three more system calls, which for an idle viewer (a pong every 20 s)
is nothing.
"""

from __future__ import annotations

import asyncio
import logging
import select
from typing import Protocol

log = logging.getLogger("relay.viewers")
PER_TURN = 64  # sockets let in per turn of the event loop
# Edge cases of a ready socket (data, end, reset, error) are all reported to a one-shot watch.
EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT


class Gated(Protocol):
    """A connection the gate holds: its transport is resumed when it is let in."""

    def let_in(self) -> None: ...


def socket_number(transport: asyncio.BaseTransport) -> int:
    """The number of the socket under ``transport`` for the gate to watch, or -1: read it freely
    (no socket, or TLS, which may hold decrypted bytes its socket no longer signals)."""
    sock = transport.get_extra_info("socket")
    return -1 if sock is None or transport.get_extra_info("sslcontext") else sock.fileno()


class Gate:
    """One epoll set of paused viewer sockets, drained ``per_turn`` at a time."""

    def __init__(self, per_turn: int = PER_TURN):
        self.per_turn = per_turn
        self._epoll = select.epoll()
        self._held: dict[int, Gated] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _watched(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._epoll.fileno(), self._ready)

    def hold(self, fd: int, conn: Gated) -> None:
        """Watch ``fd`` (its transport paused): ``conn.let_in()`` once it is ready."""
        self._watched()
        try:
            self._epoll.register(fd, EVENTS)
        except FileExistsError:  # held before (a one-shot watch stays registered): re-arm it
            self._epoll.modify(fd, EVENTS)
        self._held[fd] = conn

    def pause(self, transport: asyncio.Transport, fd: int, conn: Gated) -> bool:
        """Stop reading ``transport`` and hold its socket ``fd`` for ``conn``; False (and reading
        again) when the gate cannot watch it."""
        transport.pause_reading()
        try:
            self.hold(fd, conn)
            return True
        except (OSError, ValueError):
            transport.resume_reading()
            return False

    def forget(self, fd: int, conn: Gated) -> None:
        """``conn`` is closing: stop watching its socket (unless the number is another's now)."""
        if self._held.get(fd) is conn:
            del self._held[fd]
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # the socket (or, at shutdown, the gate) is closed already

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0, self.per_turn):
            conn = self._held.get(fd)
            if conn is not None:
                try:
                    conn.let_in()
                except Exception:  # one connection's trouble must not leave the others unread
                    log.exception("letting a viewer's socket in failed")

    def __len__(self) -> int:
        return len(self._held)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._loop = None
        self._epoll.close()
        self._held.clear()
