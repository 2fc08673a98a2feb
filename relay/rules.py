"""The rules that turn gateway events into snapshots.

Everything here is pure: the memory and Redis stores both call :func:`apply`, so the rules exist
once.

- An older event (by the gateway's own clock) never overwrites newer state; a repeat makes no
  update; a QR the instance moved past never comes back; an expired QR is never served.
- A reason is kept while the instance stays closed, unless a newer one is as telling
  (:data:`relay.reasons.RANK`); it goes when the state changes or a QR comes.
- The pairing watchdog: while connecting without a live QR the instance waits at most
  ``qr_wait`` for one; repeats don't restart that clock; when it runs out, a ``stall`` event
  sets ``reason.code = "no_qr"`` (the state stays ``connecting``).
- A ``close`` read over REST (resync) yields to a ``connecting`` event stream that spoke within
  :data:`STREAM_FRESH_MS`: Evolution answers ``close`` over REST while its socket loops through
  ``connecting`` (fixtures/CAPTURED.md), and the page must not flap between the two.
"""

from __future__ import annotations

from typing import Any

from .reasons import Reason, rank, reason
from .snapshot import (
    QR,
    RETIRED_MAX,
    Event,
    NewQR,
    Record,
    Snapshot,
    Upstream,
    blank,
    live,
    next_seq,
    now_ms,
    qr_name,
    qr_names,
)

CLOSED = ("close", "refused")
STREAM_FRESH_MS = 10_000
SAME_BURST_MS = 5_000  # the events of one deletion come within milliseconds of each other
# Causes that are the relay's own doing, not something the gateway said.
INTERNAL = ("watchdog",)
QUIET_MS = 5_000  # a repeat that moves only the clocks is stored at most this often


def _content(s: Snapshot) -> tuple[Any, ...]:
    """What a viewer can see; seq, time and cause don't make an update on their own."""
    qr = s["qr"]
    qr_key = None if qr is None else (qr["code"], qr["image"], qr["pairingCode"])
    return (s["state"], qr_key, s["reason"], s["profile"], s["upstream"])


def _same_qr(old: QR, new: NewQR) -> bool:
    if old["code"] and new.code:
        return bool(old["code"] == new.code)
    if old["image"] or new.image:
        return old["image"] == new.image
    return old["pairingCode"] == new.pairing_code


def is_stale(record: Record | None, event: Event, at: int) -> bool:
    """True when the event is older than what the record already reflects."""
    if record is None:
        return False
    # Checked by the event's own identity (its code if it has one); a past QR is retired under
    # all its names, so an image-only copy of it is recognised too.
    if event.qr is not None and qr_name(event.qr.code, event.qr.image,
                                        event.qr.pairing_code) in record.retired:
        # A QR this instance already moved past: a late retry, or Evolution's REST `connect`
        # handing back the previous, expired QR (protocols/evolution.md §4.3).
        return True
    if event.read_at_ms is not None:
        updated = record.snapshot["updatedAt"]
        if updated is not None and updated > event.read_at_ms:
            return True
        if (event.state == "close" and record.snapshot["state"] == "connecting"
                and record.seen_at is not None and at - record.seen_at < STREAM_FRESH_MS):
            return True  # the event stream is fresher than this read
    if event.gateway_ts is None or record.gateway_ts is None:
        return False
    if event.gateway_ts < record.gateway_ts:
        # Evolution sends remove.instance first and the deletion's logout after it (a few ms
        # later by its clock); arriving last, the removal still tells what happened.
        removal = event.reason is not None and event.reason["code"] == "removed"
        return not (removal and record.snapshot["state"] in CLOSED
                    and record.gateway_ts - event.gateway_ts <= SAME_BURST_MS)
    # Same millisecond: a QR can't be newer than the "open" it would hide.
    return (
        event.gateway_ts == record.gateway_ts
        and event.qr is not None
        and record.snapshot["state"] == "open"
    )


def _reason(event: Event, record: Record | None, before: Snapshot, current: Snapshot,
            new_state: str, at: int) -> Reason | None:
    """The reason after the event (see the module docstring)."""
    old = before["reason"]
    if event.stall:
        due = record is not None and record.deadline is not None and at >= record.deadline
        return reason("no_qr") if due and new_state == "connecting" and before["qr"] is None else old
    if event.reason is not None:
        chosen = event.reason_if_qr if event.reason_if_qr and current["qr"] is not None else event.reason
        staying_closed = before["state"] in CLOSED and new_state in CLOSED and old is not None
        if staying_closed and (event.weak_reason or rank(chosen) < rank(old)
                               or chosen["code"] == old["code"]):  # type: ignore[index]
            return old  # (the same code again, in other words, is no news either)
        return chosen
    if new_state != before["state"] or event.qr is not None or event.restart_wait:
        return None
    return old


def _waiting(record: Record | None, event: Event, new: Snapshot, at: int,
             qr_wait_ms: int) -> tuple[int | None, int | None, int]:
    """(deadline, waiting since, events meanwhile) of the pairing watchdog after the event."""
    if new["state"] != "connecting":
        return None, None, 0
    qr = new["qr"]
    if qr is not None and qr["expiresAt"] > at:
        return qr["expiresAt"] + qr_wait_ms, qr["expiresAt"], 0
    deadline, since, count = (record.deadline, record.waiting_since,
                              record.waiting_events) if record else (None, None, 0)
    if event.restart_wait or deadline is None or since is None:
        return at + qr_wait_ms, at, 0
    counts = event.cause not in INTERNAL and event.read_at_ms is None
    return deadline, since, count + (1 if counts and at >= since else 0)


def apply(record: Record | None, event: Event, *, qr_ttl_ms: int, qr_wait_ms: int = 30_000,
          at_ms: int | None = None, default_upstream: str = "evolution") -> tuple[Record, bool] | None:
    """Apply one event. Returns ``(new record, changed)`` or None when the event is stale.

    ``changed`` is False when the event changes nothing a viewer sees (a repeat): the record is
    still returned, because its clocks may have moved on and must be stored.
    """
    at = at_ms if at_ms is not None else now_ms()
    if is_stale(record, event, at):
        return None
    current = record.snapshot if record else blank(event.instance, default_upstream)
    before = live(current, at)
    new: dict[str, Any] = dict(before)

    if event.state is not None:
        new["state"] = event.state
    elif event.restart_wait and before["state"] in ("unknown", *CLOSED):
        new["state"] = "connecting"
    if event.qr is not None:
        new["qr"] = QR(code=event.qr.code, image=event.qr.image, pairingCode=event.qr.pairing_code,
                       expiresAt=at + qr_ttl_ms)
        # Same QR again (the socket and the webhook both delivered it): keep its original expiry.
        # WPPConnect's socket sends only the image, its webhook the code too: merge them.
        old = before["qr"]
        if old is not None and _same_qr(old, event.qr):
            new["qr"] = QR(code=event.qr.code or old["code"], image=event.qr.image or old["image"],
                           pairingCode=event.qr.pairing_code or old["pairingCode"],
                           expiresAt=old["expiresAt"])
    elif event.clear_qr:
        new["qr"] = None
    new["reason"] = _reason(event, record, before, current, new["state"], at)
    if event.profile is not None:
        new["profile"] = event.profile
    elif event.clear_profile:
        new["profile"] = None
    if before["upstream"]["name"] != event.upstream:
        # Reachability is not the record's: viewers see it as an overlay (relay.hub.Overlay).
        new["upstream"] = Upstream(name=event.upstream, ok=True, detail=None)

    gateway_ts = record.gateway_ts if record else None
    if event.gateway_ts is not None:
        gateway_ts = max(event.gateway_ts, gateway_ts or event.gateway_ts)

    retired = list(record.retired) if record else []
    old_qr = current["qr"]
    if old_qr is not None and (new["qr"] is None or not _same_qr(
            old_qr, NewQR(code=new["qr"]["code"], image=new["qr"]["image"],
                          pairing_code=new["qr"]["pairingCode"]))):
        retired = (retired + qr_names(old_qr["code"], old_qr["image"], old_qr["pairingCode"]))[-RETIRED_MAX:]

    changed = _content(new) != _content(current)  # type: ignore[arg-type]
    if changed:
        new["seq"] = next_seq(current["seq"] if record else 0)
        new["updatedAt"] = at
        new["cause"] = event.cause
    else:
        new = dict(current)
    deadline, since, count = _waiting(record, event, new, at, qr_wait_ms)  # type: ignore[arg-type]
    seen_at = record.seen_at if record else None
    if event.cause not in INTERNAL and event.read_at_ms is None:
        seen_at = at
    return Record(snapshot=new, gateway_ts=gateway_ts, retired=retired,  # type: ignore[arg-type]
                  deadline=deadline, waiting_since=since, waiting_events=count,
                  seen_at=seen_at), changed


def quiet_repeat(before: Record | None, after: Record, changed: bool) -> bool:
    """True for an event that changed nothing but the record's clocks (when the gateway was last
    heard from, how many events the pairing wait saw, the gateway's own clock) less than
    QUIET_MS after the stored ones: a store need not write it. A gateway that cannot reach
    WhatsApp repeats the same event several times a second for hours; each stored repeat would
    cost a Redis write and a dedupe key."""
    return (not changed and before is not None and before.seen_at is not None
            and after.seen_at is not None and after.seen_at - before.seen_at < QUIET_MS
            and after.deadline == before.deadline and after.waiting_since == before.waiting_since
            and after.retired == before.retired and after.snapshot == before.snapshot)
