"""What the reconnecting viewers of one process saw (bench/eio_viewer.py fills it in; the
harness collects it through bench/reconnect_pool.py)."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from viewers import EID_DIGITS  # as bench/webhooks.py writes event ids into the QR code

if TYPE_CHECKING:
    from eio_viewer import Viewer


@dataclass
class Record:
    """What this process's viewers saw. Per viewer (by slot), since the last ``mark``: first
    loss, last snapshot ack and when that attempt began, losses, attempts; always: the newest
    event id shown. Per delivery (since the last ``take``): updates and snapshot acks."""

    n: int
    marker: bytes
    lost_ns: array[int] = field(init=False)
    back_ns: array[int] = field(init=False)
    back_start_ns: array[int] = field(init=False)
    back_tcp_ns: array[int] = field(init=False)  # that attempt's TCP connection made
    losses: array[int] = field(init=False)
    attempts: array[int] = field(init=False)
    max_eid: array[int] = field(init=False)
    upd: tuple[array[int], array[int], array[int]] = field(init=False)  # eid, recv_ns, index
    snaps: tuple[array[int], array[int], array[int]] = field(init=False)  # eid, ack_ns, index
    errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.max_eid = array("q", [-1] * self.n)
        self.mark()
        self.upd = (array("q"), array("q"), array("i"))
        self.snaps = (array("q"), array("q"), array("i"))

    def mark(self) -> None:
        zeros = [0] * self.n
        self.lost_ns, self.back_ns, self.back_start_ns, self.back_tcp_ns = (
            array("q", zeros) for _ in range(4))
        self.losses, self.attempts = array("i", zeros), array("i", zeros)
        self.errors = {}

    def eid_in(self, payload: bytes) -> int:
        """The event id written after the run marker in the QR code, -1 when there is none."""
        pos = payload.find(self.marker)
        if pos < 0:
            return -1
        start = pos + len(self.marker)
        try:
            return int(payload[start:start + EID_DIGITS])
        except ValueError:
            return -1

    def seen(self, kind: tuple[array[int], array[int], array[int]], v: Viewer, eid: int) -> None:
        kind[0].append(eid)
        kind[1].append(time.time_ns())
        kind[2].append(v.index)
        if eid > self.max_eid[v.slot]:
            self.max_eid[v.slot] = eid

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
