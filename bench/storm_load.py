"""The storm's load for bench/storm.py: the webhook a real Evolution API 2.3.6 sends while it
cannot reach WhatsApp (``connection.update {state: "connecting", statusReason: 200}``, taken from
the captured raw requests, never edited but for the instance name and ``date_time``), posted
open-loop at a fixed rate per instance over a few pipelined keep-alive connections.

Open loop: event k is due at t0 + k/R whatever the answers; every due event is written at the next
tick (one write per connection per tick), so a slow server shows as answers that come late, not as
a lower offered rate. Answers are parsed from a buffer in an asyncio Protocol (no task, no stream
reader per request): the client stays cheap next to the server it measures.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from tests.support.fixtures import SHARED

CAPTURED = SHARED / "fixtures" / "evolution" / "captured-2.3.6" / "raw" / "evo-run1-webhook-raw.jsonl"
# The captured request's own headers, less Host and Content-Length (rewritten) and its
# `authorization` (the relay runs without a webhook secret on 127.0.0.1).
KEEP_HEADERS = ("Accept", "Content-Type", "User-Agent", "Accept-Encoding", "Connection")
TICK = 0.002  # seconds between two writes of the due events
SLOW = 0.1  # an answer slower than this (s) is kept with its time, to see when they came
_INSTANCE, _DATE = "@@STORM_INSTANCE@@", "@@STORM_DATE@@"


def _is_storm_event(row: dict[str, Any]) -> bool:
    body = row.get("body")
    data = body.get("data") if isinstance(body, dict) else None
    return (isinstance(body, dict) and isinstance(data, dict) and row.get("path") == "/instance-hook"
            and body.get("event") == "connection.update" and data.get("state") == "connecting"
            and data.get("statusReason") == 200)


def captured(path: Path = CAPTURED) -> tuple[dict[str, Any], dict[str, str], float]:
    """(first storm body, its headers, events per second on that webhook over the capture)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    storm = [row for row in rows if _is_storm_event(row)]
    if not storm:
        raise ValueError(f"no connection.update connecting/200 on /instance-hook in {path}")
    span = storm[-1]["recv_ts"] - storm[0]["recv_ts"]
    headers = {k: v for k, v in storm[0]["headers"].items() if k in KEEP_HEADERS}
    return storm[0]["body"], headers, (len(storm) - 1) / span if span > 0 else 0.0


def stamp(t: float) -> bytes:
    """Evolution's ``date_time``: UTC with milliseconds, e.g. 2026-12-01T21:16:42.697Z."""
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z").encode()


def requests(port: int, names: list[str]) -> list[tuple[bytes, bytes]]:
    """Per instance, the whole HTTP request split around its ``date_time`` (all names must have
    one length, so that every request has one Content-Length)."""
    if len({len(n) for n in names}) != 1:
        raise ValueError("instance names must all have the same length")
    body, headers, _ = captured()
    body = copy.deepcopy(body)
    body["instance"] = body["data"]["instance"] = _INSTANCE
    body["date_time"] = _DATE
    text = json.dumps(body, separators=(",", ":"))  # as axios sends it (JSON.stringify)
    length = len(text.replace(_INSTANCE, names[0]).replace(_DATE, stamp(0).decode()).encode())
    head = [f"POST /webhooks/evolution HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {length}"]
    raw = "\r\n".join(head) + "\r\n\r\n" + text
    out = []
    for name in names:
        before, after = raw.replace(_INSTANCE, name).split(_DATE)
        out.append((before.encode(), after.encode()))
    return out


@dataclass
class Tally:
    """Answers to the events of one phase (warm-up or storm)."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, written → answer read
    slow: list[tuple[float, float]] = field(default_factory=list)  # (written at, s) over SLOW

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


class _Conn(asyncio.Protocol):
    """One keep-alive connection: requests written in order, answers matched in order."""

    def __init__(self, storm: Storm) -> None:
        self.storm = storm
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.inflight: deque[tuple[int, float]] = deque()  # (event index, written at)
        self.pending: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def flush(self) -> None:
        if self.pending and self.transport is not None and not self.lost:
            self.transport.write(b"".join(self.pending))
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        now, pos, size = time.monotonic(), 0, len(buf)
        while (end := buf.find(b"\r\n\r\n", pos)) >= 0:
            head = buf[pos:end].lower()
            at = head.find(b"content-length:")
            stop = head.find(b"\r\n", at) if at >= 0 else -1
            length = int(head[at + 15:stop if stop >= 0 else None]) if at >= 0 else 0
            if end + 4 + length > size:
                break
            pos = end + 4 + length
            if self.inflight:
                index, written = self.inflight.popleft()
                self.storm.answered(index, int(head[9:12]), written, now)
        self.buf = buf[pos:]


class Storm:
    """``rate`` events/s for each of ``names``, spread over ``conns`` connections to ``port``;
    successive events of one instance take different connections (so, with several workers on
    the port, different workers, as a gateway's pooled connections would)."""

    def __init__(self, port: int, names: list[str], rate: float, conns: int) -> None:
        self.port, self.names, self.total_rate = port, names, rate * len(names)
        self.templates = requests(port, names)
        self.n_conns = conns
        self.conns: list[_Conn] = []
        self.warm = Tally()
        self.storm = Tally()
        self.k_warm = 0
        self.max_lag = 0.0  # how far the generator fell behind its own schedule (s)
        self.window = (0.0, 0.0)  # monotonic start and end of the storm window
        self.answers = 0  # answers read so far, any phase
        self.at_edge: dict[str, tuple[int, int]] = {}  # edge -> (answers read, answers due)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.n_conns):
            _, conn = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
            self.conns.append(conn)

    def answered(self, index: int, status: int, written: float, now: float) -> None:
        tally = self.storm if index >= self.k_warm else self.warm
        tally.statuses[status] += 1
        self.answers += 1
        if tally is self.storm:
            tally.latencies.append(now - written)
            if now - written > SLOW:
                tally.slow.append((written, now - written))

    async def run(self, warmup: float, duration: float, mark: Callable[[str], None]) -> None:
        """The whole storm: ``warmup`` s, then ``mark("start")``, ``duration`` s measured, then
        ``mark("end")`` (the caller snapshots its counters there)."""
        rate, n, c = self.total_rate, len(self.names), len(self.conns)
        total = int(rate * (warmup + duration))
        self.k_warm = int(rate * warmup)
        started = self.k_warm == 0
        if started:
            self._edge("start", mark)
        t0 = time.monotonic() + 0.01
        self.window = (t0 + warmup, t0 + warmup + duration)
        k = 0
        while k < total:
            now = time.monotonic()
            due = min(total, int((now - t0) * rate) + 1)
            if not started:
                due = min(due, self.k_warm)
            if k < due:
                self.max_lag = max(self.max_lag, now - (t0 + k / rate))
                date = stamp(time.time())
                for index in range(k, due):
                    conn = self.conns[(index + index // n) % c]
                    before, after = self.templates[index % n]
                    conn.pending.append(before + date + after)
                    conn.inflight.append((index, now))
                for conn in self.conns:
                    conn.flush()
                (self.warm if k < self.k_warm else self.storm).sent += due - k
                k = due
            if not started and k == self.k_warm:
                self._edge("start", mark)
                started = True
                continue
            await asyncio.sleep(TICK)
        self._edge("end", mark)

    def _edge(self, edge: str, mark: Callable[[str], None]) -> None:
        self.at_edge[edge] = (self.answers, sum(len(c.inflight) for c in self.conns))
        mark(edge)

    @property
    def processed(self) -> int:
        """Answers read within the storm window: the events the relay got through in it."""
        return self.at_edge["end"][0] - self.at_edge["start"][0] if "end" in self.at_edge else 0

    async def drain(self, timeout: float) -> int:
        """Wait for the answers still due (at most ``timeout`` s); the number never answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(c.inflight and not c.lost for c in self.conns):
            await asyncio.sleep(0.05)
        missing = 0
        for conn in self.conns:
            for index, _ in conn.inflight:
                (self.storm if index >= self.k_warm else self.warm).statuses[0] += 1
                missing += 1
            conn.inflight.clear()
        return missing

    @property
    def lost(self) -> int:
        return sum(1 for c in self.conns if c.lost)

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
