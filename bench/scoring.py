"""What one rate step delivered: latencies and the kinds of loss, from what was sent and what the
viewers received (pure computation, no I/O).

Viewer ``conn`` watches instance ``conn % I`` and event ``eid`` belongs to instance ``eid % I``
(both round-robin), which is how a delivery is checked for being routed right.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from viewers import Deliveries
from webhooks import SendResult


def accepted(res: SendResult) -> list[int]:
    """Indices (eid - first) of the events the server answered 2xx."""
    return [k for k in range(res.count) if 200 <= res.status[k] < 300]


def expected(res: SendResult, viewers_of: list[list[int]]) -> int:
    """Deliveries owed: every accepted event to every subscribed viewer of its instance."""
    return sum(len(viewers_of[(res.first_eid + k) % len(viewers_of)]) for k in accepted(res))


@dataclass
class StepScore:
    """Deliveries of one step, checked against what was sent."""

    accepted: int  # events answered 2xx
    expected: int  # deliveries owed for them
    lat_ms: list[float]  # sorted, one per distinct in-time delivery
    gap_ms: float | None  # longest silence between two deliveries seen by all viewers
    achieved: float  # 2xx events per second actually sustained
    missing: int = 0  # owed deliveries not received in time
    superseded: int = 0  # ... of which the viewer later got a newer update of the same instance
    stale_final: int = 0  # viewers whose last update is older than their instance's last event
    odd: dict[str, int] = field(default_factory=dict)  # deliveries not counted, by reason


def score(res: SendResult, d: Deliveries, deadline_ns: int, viewers_of: list[list[int]],
          rate: float) -> StepScore:
    """Match deliveries to sent events; deliveries after ``deadline_ns`` count as late."""
    first, n, n_inst = res.first_eid, res.count, len(viewers_of)
    seen: set[int] = set()  # (eid << 24) | conn
    lat_ms: list[float] = []
    recv_times: list[int] = []
    odd = dict.fromkeys(("late (after grace)", "duplicate", "misrouted", "delivered though rejected",
                         "from previous step"), 0)
    for eid, rns, conn in zip(d.eids, d.recv_ns, d.conns):
        k = eid - first
        key = (eid << 24) | conn
        if k < 0 or k >= n:
            reason = "from previous step"  # a late delivery of the previous step (or warm-up)
        elif not 200 <= res.status[k] < 300:
            reason = "delivered though rejected"
        elif conn % n_inst != eid % n_inst:
            reason = "misrouted"
        elif key in seen:
            reason = "duplicate"
        elif rns > deadline_ns:
            reason = "late (after grace)"
        else:
            seen.add(key)
            lat_ms.append((rns - res.send_ns[k]) / 1e6)
            recv_times.append(rns)
            continue
        odd[reason] += 1
    lat_ms.sort()
    recv_times.sort()
    gap = max((b - a for a, b in itertools.pairwise(recv_times)), default=None)

    ok = accepted(res)
    out = StepScore(accepted=len(ok), expected=expected(res, viewers_of), lat_ms=lat_ms,
                    gap_ms=gap / 1e6 if gap is not None else None, achieved=0.0,
                    odd={k: v for k, v in odd.items() if v})
    if ok:
        span = (max(res.done_ns[k] for k in ok) - min(res.send_ns)) / 1e9 + 1.0 / rate
        out.achieved = len(ok) / span

    # Split the losses: a viewer that missed event e but later received a newer event of the
    # same instance only missed an intermediate snapshot (coalesced or dropped by the ordering
    # rules: harmless for a latest-state channel); one whose newest delivery is older than the
    # instance's newest accepted event ends the step showing stale state.
    newest_seen: dict[int, int] = {}
    for key in seen:
        conn, eid = key & 0xFFFFFF, key >> 24
        newest_seen[conn] = max(newest_seen.get(conn, -1), eid)
    newest_sent: dict[int, int] = {}
    for k in ok:
        eid = first + k
        inst = eid % n_inst
        newest_sent[inst] = max(newest_sent.get(inst, -1), eid)
        for conn in viewers_of[inst]:
            if ((eid << 24) | conn) not in seen:
                out.missing += 1
                out.superseded += newest_seen.get(conn, -1) > eid
    out.stale_final = sum(1 for inst, eid in newest_sent.items() for conn in viewers_of[inst]
                          if newest_seen.get(conn, -1) < eid)
    return out
