"""What keeps a worker's event loop turning through a reconnect storm: the gate that lets idle
viewers' sockets, and every new connection's first request, in a slice per turn
(relay/eio/gate.py); connections that leave no garbage for the collector; the collector's full
passes held back while viewers come and go in numbers (relay/collector.py); and the stall log
line that says whether a stall was the worker's own work or a machine without a free CPU
(relay/metrics.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import websockets

from relay.collector import NEVER, Collector
from relay.eio.gate import Gate
from relay.metrics import Metrics
from tests.support.clients import token
from tests.support.rawsio import WS_PATH, handshake
from tests.support.relay import RelayServer


class Recorded:
    """A connection the gate holds; it notes the loop turn it was let in on."""

    def __init__(self, turns: list[int], clock: list[int]):
        self.turns = turns
        self.clock = clock

    def let_in(self) -> None:
        self.turns.append(self.clock[0])


async def count_turns(clock: list[int]) -> None:
    while True:
        await asyncio.sleep(0)
        clock[0] += 1


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(40)]
    yield made
    for a, b in made:
        a.close()
        b.close()


async def test_sockets_that_end_together_are_let_in_a_slice_per_turn(pairs) -> None:
    gate = Gate(per_turn=8)
    turns: list[int] = []
    clock = [0]
    for ours, _ in pairs:
        gate.hold(ours.fileno(), Recorded(turns, clock))
    counter = asyncio.ensure_future(count_turns(clock))
    try:
        for _, theirs in pairs:
            theirs.close()  # all 40 peers gone at once: every socket ready in the same instant
        for _ in range(200):
            if len(turns) == len(pairs):
                break
            await asyncio.sleep(0)
        per_turn = Counter(turns)
        assert len(turns) == len(pairs)
        assert max(per_turn.values()) <= 8, per_turn
        assert len(per_turn) >= len(pairs) // 8
    finally:
        counter.cancel()
        gate.close()


async def test_a_socket_let_in_is_not_reported_again_until_held_again(pairs) -> None:
    gate = Gate()
    turns: list[int] = []
    ours, theirs = pairs[0]
    conn = Recorded(turns, [0])
    gate.hold(ours.fileno(), conn)
    theirs.send(b"x")  # stays unread: the socket stays ready
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(turns) == 1  # one-shot: its reader (the transport) has it now
        gate.hold(ours.fileno(), conn)  # handled, idle again: still ready, so let in again
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(turns) == 2
    finally:
        gate.close()


async def test_forgetting_a_closed_connection_leaves_a_reused_number_alone(pairs) -> None:
    gate = Gate()
    turns: list[int] = []
    ours, theirs = pairs[0]
    old, new = Recorded([], [0]), Recorded(turns, [0])
    gate.hold(ours.fileno(), new)  # the number now belongs to a newer connection
    gate.forget(ours.fileno(), old)  # the old one's late goodbye
    theirs.send(b"x")
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert turns and len(gate) == 1
        gate.forget(ours.fileno(), new)
        assert len(gate) == 0
    finally:
        gate.close()


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_a_storm_holds_full_passes_back_until_it_has_been_quiet(thresholds) -> None:
    collector = Collector(storm=5, quiet=0.05)
    for _ in range(4):
        collector.opened_or_closed()
    assert gc.get_threshold() == thresholds  # a few viewers: no storm
    collector.check()  # (a new window)
    for _ in range(5):
        collector.opened_or_closed()
    assert gc.get_threshold() == (700, 10, NEVER)
    collector.check()
    assert gc.get_threshold()[2] == NEVER  # not quiet yet
    collector.last_storm -= 0.06
    collector.check()
    assert gc.get_threshold() == thresholds


def test_the_pass_held_back_is_made_once_it_is_quiet(thresholds) -> None:
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["generation"])

    gc.collect()  # counts from zero
    collector = Collector(quiet=0.0)
    collector.storm()
    gc.callbacks.append(seen)
    try:
        for _ in range(11):  # each counts towards a full pass, which the hold keeps from running
            gc.collect(1)
        assert 2 not in collections and gc.get_count()[2] >= 11
        collector.check()
        assert collections[-1] == 2 and gc.get_count()[2] == 0
        assert gc.get_threshold() == thresholds
    finally:
        gc.callbacks.remove(seen)


def test_no_storm_holds_full_passes_back_for_longer_than_max_hold(thresholds) -> None:
    collector = Collector(max_hold=0.05)
    collector.storm()
    collector.held_since = (collector.held_since or 0.0) - 0.06
    collector.storm()  # still storming
    collector.check()
    assert gc.get_threshold() == thresholds


async def test_a_worker_starts_held_and_gives_the_thresholds_back_when_it_stops(thresholds) -> None:
    collector = Collector(every=0.01, quiet=60.0)
    watching = asyncio.ensure_future(collector.watch())
    await asyncio.sleep(0)  # its first step
    assert gc.get_threshold()[2] == NEVER
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert gc.get_threshold() == thresholds


async def test_a_stall_is_logged_with_the_cpu_the_worker_used_meanwhile(caplog) -> None:
    """Operators must tell a worker busy with its own work from a machine that gave it no CPU."""
    metrics = Metrics()
    watching = asyncio.ensure_future(metrics.watch_loop_lag(0.005))
    caplog.set_level(logging.INFO, logger="relay.metrics")
    def stalls() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]

    try:
        await asyncio.sleep(0)  # its first sleep is under way
        time.sleep(0.08)  # the loop stopped, and the worker off the CPU (asleep)
        for _ in range(200):  # until the probe wakes and says so
            if stalls():
                break
            await asyncio.sleep(0.005)
    finally:
        watching.cancel()
    lines = stalls()
    assert lines, caplog.text
    found = re.search(r"stalled for (\d+) ms \(this worker used (\d+) ms of CPU in that (\d+) ms window\)",
                      lines[0])
    assert found, lines[0]
    stalled, used = int(found.group(1)), int(found.group(2))
    assert stalled >= 50 and used < stalled / 2


async def test_one_connection_that_fails_to_come_in_leaves_the_others_read(pairs, caplog) -> None:
    class Broken:
        def let_in(self) -> None:
            raise RuntimeError("transport closed")

    gate = Gate()
    turns: list[int] = []
    for n, (ours, theirs) in enumerate(pairs[:10]):
        gate.hold(ours.fileno(), Broken() if n == 3 else Recorded(turns, [0]))
        theirs.close()
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(turns) == 9
        assert "letting a viewer's socket in failed" in caplog.text
    finally:
        gate.close()


# The server's objects of one viewer connection; none may outlive it in a reference cycle.
SERVER_KINDS = {"GuardedHttp", "HttpRequestParser", "FlowControl", "ViewerConnection",
                "LeanSession", "FrameReader"}


async def test_viewers_that_leave_leave_no_garbage_for_the_collector(relay: RelayServer) -> None:
    """A closed viewer's objects go with their last reference, not at a GC pass: a reconnect
    storm closes thousands, and each one left in a cycle is work for the collector's next (and,
    once they reach the oldest generation, longest) pass."""
    assert relay.app.front is not None
    gc.collect()
    gc.disable()
    try:
        for k in range(10):
            async with websockets.connect(f"ws://127.0.0.1:{relay.port}{WS_PATH}") as ws:
                await handshake(ws, token("*"), f"shop{k % 3}")
        deadline = time.monotonic() + 10
        while relay.app.front.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not relay.app.front.connections, "the server did not see the viewers leave"
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not {kind: n for kind, n in kinds.items() if kind in SERVER_KINDS}, kinds.most_common(12)


async def test_a_new_connection_waits_at_the_gate_until_it_sends(relay: RelayServer) -> None:
    """Its first request is read when the gate lets it in; later ones freely; the gate forgets
    it when it closes."""
    gate = relay.app.front.gate if relay.app.front is not None else None
    assert gate is not None
    before = len(gate)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    try:
        deadline = time.monotonic() + 5
        while len(gate) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(gate) == before + 1, "the new connection is not held by the gate"
        for _ in range(2):  # the first request comes in through the gate; both are answered
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 5)
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
    finally:
        writer.close()
    deadline = time.monotonic() + 5
    while len(gate) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(gate) == before, "the gate still holds a closed connection"
