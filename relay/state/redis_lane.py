"""Lean connections for the two hot paths: the compare-and-set of every webhook, and the channel
messages every worker reads.

redis-py is the client for everything else, but its layers (client, pool, retry, timeout, parser
wrappers) cost ~75 µs of CPU per command and ~29 µs per pub/sub message; measured on this
project's 2-core machine, a protocol that hands bytes to hiredis and answers futures in order
costs ~7 µs for either, and a webhook costs ~1 command and ~2 messages. So: redis-py still opens
each connection (TLS, AUTH, db, the Sentinel group's current master, a Cluster node: all of its
configuration), then this module takes the socket over:

- :class:`Lane`: many commands in flight on one connection, written as they come (the kernel
  batches them), answered in order. A command without an answer after ``timeout`` closes the
  connection and fails every command in flight on it (their answers could no longer be matched):
  the callers answer 503 and the gateway retries, as with redis-py.
- :class:`Subscriber`: a pub/sub connection whose messages are queued as they arrive and read in
  batches (one wake-up for all that came in one read).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Factory = Callable[[], AbstractConnection]


def pack(args: tuple[str | bytes | int, ...]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class Resp(asyncio.Protocol):
    """RESP2 over one transport. Replies answer the oldest waiting future, or, once in pub/sub
    mode (``push`` given), all go to ``push``."""

    def __init__(self, push: Callable[[Any], None] | None = None):
        self.reader = hiredis.Reader(encoding="utf-8")
        self.push = push
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.keep: object = None
        self.lost: BaseException | None = None
        self.out: list[bytes] = []  # commands of this turn of the event loop, not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                if self.push is not None:
                    self.push(reply)
                    continue
                future, _ = self.waiting.popleft()
                if future.done():
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(ResponseError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError, UnicodeDecodeError) as exc:
            self.abort(RedisConnectionError(f"unreadable answer from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)
        if self.push is not None:
            self.push(None)  # tells the reader the connection is gone

    def send(self, *args: str | bytes | int) -> asyncio.Future[Any] | None:
        """Send a command; its future gets the answer (None in pub/sub mode). Commands sent in
        one turn of the event loop leave in one write: a storm of reads or subscribes costs a
        system call per turn, not one per command."""
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise self.lost or RedisConnectionError("connection to Redis closed")
        loop = asyncio.get_running_loop()
        if not self.out:
            loop.call_soon(self.flush)
        self.out.append(pack(args))
        if self.push is not None:
            return None
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((future, loop.time()))
        return future

    def flush(self) -> None:
        out, self.out = self.out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def oldest(self) -> float | None:
        """When the oldest unanswered command was sent."""
        return self.waiting[0][1] if self.waiting else None

    def abort(self, reason: BaseException) -> None:
        self.lost = self.lost or reason
        if self.transport is not None:
            self.transport.abort()


async def take_over(connection: AbstractConnection, push: Callable[[Any], None] | None = None,
                    ) -> Resp:
    """Let redis-py open ``connection`` (with all of its configuration), then read and write
    its socket with :class:`Resp`. The only place that reaches into redis-py's connection."""
    await connection.connect()  # type: ignore[no-untyped-call]
    writer: asyncio.StreamWriter | None = getattr(connection, "_writer", None)
    reader: asyncio.StreamReader | None = getattr(connection, "_reader", None)
    if writer is None or reader is None or bool(getattr(reader, "_buffer", None)):
        await connection.disconnect()
        raise RedisConnectionError("cannot take over this Redis connection (redis-py changed?)")
    protocol = Resp(push)
    protocol.keep = writer  # a StreamWriter that is collected closes its transport (3.11.5+)
    transport = writer.transport
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    connection._reader = connection._writer = None  # now ours: redis-py must not touch it
    return protocol


class Lane:
    """Commands to one node over one taken-over connection, opened on first use and again after
    it failed."""

    def __init__(self, factory: Factory, timeout: float):
        self.factory = factory
        self.timeout = timeout
        self._resp: Resp | None = None
        self._opening: asyncio.Task[Resp] | None = None
        self._watch: asyncio.TimerHandle | None = None

    async def _open(self) -> Resp:
        if self._opening is None:
            self._opening = asyncio.ensure_future(take_over(self.factory()))
        opening = self._opening
        try:
            resp = await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None
        self._resp = resp
        return resp

    async def call(self, *args: str | bytes | int) -> Any:
        resp = self._resp
        if resp is None or resp.lost is not None:
            resp = await self._open()
        future = resp.send(*args)
        assert future is not None  # (a lane is never in pub/sub mode)
        self._arm()
        return await future

    def _arm(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(self.timeout / 4, self._check)

    def _check(self) -> None:
        """Fail the connection when its oldest command waits past the timeout (a hung Redis)."""
        self._watch = None
        resp = self._resp
        if resp is None or resp.lost is not None:
            return
        oldest = resp.oldest()
        if oldest is None:
            return
        if asyncio.get_running_loop().time() - oldest > self.timeout:
            resp.abort(RedisTimeoutError(f"no answer from Redis within {self.timeout:g} s"))
        else:
            self._arm()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._opening is not None:
            self._opening.cancel()
        if self._resp is not None:
            self._resp.abort(RedisConnectionError("closed"))


class Lanes:
    """A lane per node of the commands client: its one server (or the Sentinel group's master),
    or each Cluster master, found by the key's slot from the client's own slot map.
    ``lane_for`` is None when the slot map is not known yet: the caller uses redis-py."""

    def __init__(self, client: Any, timeout: float):
        self.client = client
        self.timeout = timeout
        self.cluster = isinstance(client, RedisCluster)
        self._lanes: dict[str, Lane] = {}

    def lane_for(self, key: str) -> Lane | None:
        if not self.cluster:
            lane = self._lanes.get("")
            if lane is None:
                lane = self._lanes[""] = Lane(self.client.connection_pool.make_connection,
                                              self.timeout)
            return lane
        manager = self.client.nodes_manager
        if not manager.slots_cache:
            return None
        try:
            node = manager.get_node_from_slot(key_slot(key.encode()))
        except Exception:  # slot not covered: redis-py knows what to do
            return None
        lane = self._lanes.get(node.name)
        if lane is None:
            lane = self._lanes[node.name] = Lane(
                lambda: node.connection_class(**node.connection_kwargs), self.timeout)
        return lane

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """One pub/sub connection: commands out, every message queued and read in batches."""

    def __init__(self) -> None:
        self._inbox: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self._resp: Resp | None = None

    async def open(self, connection: AbstractConnection) -> None:
        self._resp = await take_over(connection, push=self._push)

    def _push(self, reply: Any) -> None:
        self._inbox.append(reply)
        if self._waiter is not None:
            _wake(self._waiter)

    def send(self, *args: str | bytes | int) -> None:
        if self._resp is None:
            raise RedisConnectionError("pub/sub connection not open")
        self._resp.send(*args)

    async def batch(self, timeout: float) -> list[Any]:
        """What arrived since the last batch (waiting up to ``timeout`` s for something);
        ConnectionError once the connection is gone (after what came before)."""
        if not self._inbox:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        inbox, self._inbox = self._inbox, []
        if inbox and inbox[-1] is None:
            if len(inbox) > 1:
                self._inbox = [None]  # the loss, at the next call
                return inbox[:-1]
            assert self._resp is not None
            raise self._resp.lost or RedisConnectionError("pub/sub connection lost")
        return inbox

    async def close(self) -> None:
        if self._resp is not None:
            self._resp.abort(RedisConnectionError("closed"))
