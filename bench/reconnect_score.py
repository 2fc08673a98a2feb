"""What a reconnect storm cost the viewers, from what was sent and what they saw (pure
computation, no I/O). Viewer ``index`` watches instance ``index % I``; event ``eid`` belongs to
instance ``eid % I`` (bench/webhooks.py's round-robin)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from reconnect_pool import Collected
from webhooks import SendResult


@dataclass
class Recovery:
    """The hit viewers' way back, from the event (wall-clock ns)."""

    affected: int
    back: int
    from_event_ms: list[float]  # sorted
    conn_to_snap_ms: list[float]  # sorted
    tcp_ms: list[float]  # sorted: of that, until the TCP connection was made (connect())
    last_ms: float | None  # the last hit viewer's ack, from the event
    lost_twice: int  # hit viewers that lost their connection again before the end
    attempts: int  # connection attempts since the mark


def recovery(c: Collected, event_ns: int) -> Recovery:
    from_event: list[float] = []
    to_snap: list[float] = []
    tcp: list[float] = []
    affected = back = twice = 0
    for k in range(len(c.index)):
        if not c.lost_ns[k]:
            continue
        affected += 1
        twice += c.losses[k] > 1
        if c.subscribed[k] and c.back_ns[k] >= c.lost_ns[k]:
            back += 1
            from_event.append((c.back_ns[k] - event_ns) / 1e6)
            to_snap.append((c.back_ns[k] - c.back_start_ns[k]) / 1e6)
            tcp.append((c.back_tcp_ns[k] - c.back_start_ns[k]) / 1e6)
    from_event.sort()
    to_snap.sort()
    tcp.sort()
    return Recovery(affected, back, from_event, to_snap, tcp, from_event[-1] if from_event else None,
                    twice, sum(c.attempts))


def accepted_eids(res: SendResult) -> list[int]:
    return [res.first_eid + k for k in range(res.count) if 200 <= res.status[k] < 300]


def lost_and_stale(res: SendResult, newest: list[int], c: Collected) -> tuple[int, int, int]:
    """(lost updates, stale viewers, viewers not subscribed at the end). ``newest``: per
    instance, its newest accepted event id over the whole run (this scenario included).

    Lost: an accepted event of this scenario newer than everything its viewer ended up showing
    (an update it missed and that nothing newer replaced; superseded intermediate QRs don't
    count, as in bench/scoring.py). Stale: a viewer whose final state is not its instance's
    newest accepted one."""
    n_inst = len(newest)
    per_inst: list[list[int]] = [[] for _ in range(n_inst)]
    for eid in accepted_eids(res):  # ascending
        per_inst[eid % n_inst].append(eid)
    lost = stale = down = 0
    for k, index in enumerate(c.index):
        inst, shown = index % n_inst, c.max_eid[k]
        eids = per_inst[inst]
        lost += len(eids) - bisect.bisect_right(eids, shown)
        stale += shown < newest[inst]
        down += not c.subscribed[k]
    return lost, stale, down


def post_times(res: SendResult, t0_ns: int, t1_ns: int) -> list[float]:
    """POST -> response times (ms, sorted) of the webhooks sent in [t0, t1] that were answered
    (any status, client timeouts included; refused or reset connections are not)."""
    out = [(res.done_ns[k] - res.send_ns[k]) / 1e6 for k in range(res.count)
           if t0_ns <= res.send_ns[k] <= t1_ns and res.status[k] != 0 and res.done_ns[k]]
    out.sort()
    return out


def update_latency(res: SendResult, c: Collected, t0_ns: int, t1_ns: int) -> list[float]:
    """Webhook POST -> ``update`` received (ms, sorted), for events of ``res`` sent in [t0, t1]
    and delivered as updates to viewers that were connected."""
    eids, recv, _ = c.upd
    out: list[float] = []
    for eid, rns in zip(eids, recv):
        k = eid - res.first_eid
        if 0 <= k < res.count and t0_ns <= res.send_ns[k] <= t1_ns:
            out.append((rns - res.send_ns[k]) / 1e6)
    out.sort()
    return out
