"""The snapshot (the one payload browsers see) and the rules that turn gateway events into it.

Everything here is pure: the memory and Redis stores both call :func:`apply`, so the rules exist
once. A store keeps a :class:`Record` per instance: the public snapshot plus the gateway time of
the newest event applied, which is what "an older event never overwrites newer state" compares.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

STATES: tuple[str, ...] = ("unknown", "connecting", "open", "close", "refused")


class QR(TypedDict):
    code: str | None
    image: str | None
    pairingCode: str | None
    expiresAt: int


class Reason(TypedDict):
    code: int | str | None
    message: str


class Profile(TypedDict):
    wuid: str | None
    name: str | None
    pictureUrl: str | None


class Upstream(TypedDict):
    name: str
    ok: bool
    detail: str | None


class Snapshot(TypedDict):
    instance: str
    seq: int
    state: str
    qr: QR | None
    reason: Reason | None
    profile: Profile | None
    upstream: Upstream
    updatedAt: int | None
    cause: str


@dataclass(frozen=True)
class NewQR:
    """A scannable QR as the gateway gave it (the relay adds the expiry)."""

    code: str | None
    image: str | None
    pairing_code: str | None = None


@dataclass(frozen=True)
class Event:
    """A gateway event, normalised. Only the fields that are not None change the snapshot.

    ``gateway_ts`` is the gateway's own clock (ms); it is only ever compared with other times of
    the same gateway, never with ours (Evolution's is local time labelled UTC).
    """

    upstream: str
    instance: str
    cause: str
    state: str | None = None
    qr: NewQR | None = None
    clear_qr: bool = False
    reason: Reason | None = None
    clear_reason: bool = False
    profile: Profile | None = None
    clear_profile: bool = False
    upstream_ok: bool | None = None
    upstream_detail: str | None = None
    gateway_ts: int | None = None
    dedupe_key: str | None = None
    # A generic close reason that must not replace a more specific one already shown
    # (WPPConnect's browserClose follows disconnectedMobile, in either order).
    keep_close_reason: bool = False
    # For state read over REST (resync): when it was read, on our clock. A record updated after
    # that holds a newer event, which such a read must not undo.
    read_at_ms: int | None = None


RETIRED_MAX = 16


@dataclass
class Record:
    """What a store keeps per instance: the snapshot, the newest gateway time applied, and short
    hashes of the QR codes this instance has moved past (so a stale QR never comes back)."""

    snapshot: Snapshot
    gateway_ts: int | None = None
    retired: list[str] = field(default_factory=list)


def qr_names(code: str | None, image: str | None, pairing: str | None = None) -> list[str]:
    """Short, non-reversible names of a QR (QR codes never go into logs or extra keys): one for
    its code and one for its image (WPPConnect's socket sends only the image), or its pairing
    code when it has neither."""
    idents = [f"c:{code}"] if code else []
    if image:
        idents.append(f"i:{image}")
    if not idents:
        idents.append(f"p:{pairing}")
    return [hashlib.blake2b(i.encode(), digest_size=8).hexdigest() for i in idents]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def next_seq(previous: int) -> int:
    """A seq that only grows, even after the store or the relay restarts empty.

    It is a hybrid clock: wall time in microseconds, or previous + 1 when that is larger. A page
    that holds seq N from before a restart therefore accepts what comes next. (2^53 microseconds
    is year 2255, so JavaScript numbers hold it exactly.)
    """
    return max(previous + 1, time.time_ns() // 1000)


def blank(instance: str, upstream: str) -> Snapshot:
    """The snapshot of an instance the relay has heard nothing about (never stored)."""
    return Snapshot(
        instance=instance,
        seq=next_seq(0),
        state="unknown",
        qr=None,
        reason=None,
        profile=None,
        upstream=Upstream(name=upstream, ok=True, detail=None),
        updatedAt=None,
        cause="subscribe",
    )


def live(snapshot: Snapshot, at_ms: int | None = None) -> Snapshot:
    """The snapshot as it may be served now: an expired QR is never served."""
    qr = snapshot["qr"]
    if qr is not None and qr["expiresAt"] <= (at_ms if at_ms is not None else now_ms()):
        copy = dict(snapshot)
        copy["qr"] = None
        return copy  # type: ignore[return-value]
    return snapshot


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


def is_stale(record: Record | None, event: Event) -> bool:
    """True when the event is older than what the record already reflects."""
    if record is None:
        return False
    # Checked by the event's own identity (its code if it has one); a past QR is retired under
    # all its names, so an image-only copy of it is recognised too.
    if event.qr is not None and qr_names(event.qr.code, event.qr.image,
                                         event.qr.pairing_code)[0] in record.retired:
        # A QR this instance already moved past: a late retry, or Evolution's REST `connect`
        # handing back the previous, expired QR (protocols/evolution.md §4.3).
        return True
    updated = record.snapshot["updatedAt"]
    if event.read_at_ms is not None and updated is not None and updated > event.read_at_ms:
        return True
    if event.gateway_ts is None or record.gateway_ts is None:
        return False
    if event.gateway_ts < record.gateway_ts:
        return True
    # Same millisecond: a QR can't be newer than the "open" it would hide.
    return (
        event.gateway_ts == record.gateway_ts
        and event.qr is not None
        and record.snapshot["state"] == "open"
    )


def apply(record: Record | None, event: Event, *, qr_ttl_ms: int, at_ms: int | None = None,
          default_upstream: str = "evolution") -> tuple[Record, bool] | None:
    """Apply one event. Returns ``(new record, changed)`` or None when the event is stale.

    ``changed`` is False when the event changes nothing a viewer sees (a repeat): the record is
    still returned, because its gateway clock may have moved on and must be stored.
    """
    if is_stale(record, event):
        return None
    at = at_ms if at_ms is not None else now_ms()
    current = record.snapshot if record else blank(event.instance, default_upstream)
    before = live(current, at)
    new: dict[str, Any] = dict(before)

    if event.state is not None:
        new["state"] = event.state
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
    if event.reason is not None:
        keep = event.keep_close_reason and before["state"] == "close" and before["reason"] is not None
        if not keep:
            new["reason"] = event.reason
    elif event.clear_reason:
        new["reason"] = None
    if event.profile is not None:
        new["profile"] = event.profile
    elif event.clear_profile:
        new["profile"] = None
    if event.upstream_ok is not None:
        new["upstream"] = Upstream(name=event.upstream, ok=event.upstream_ok,
                                   detail=None if event.upstream_ok else event.upstream_detail)
    elif before["upstream"]["name"] != event.upstream:
        new["upstream"] = Upstream(name=event.upstream, ok=before["upstream"]["ok"],
                                   detail=before["upstream"]["detail"])

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
    return Record(snapshot=new, gateway_ts=gateway_ts, retired=retired), changed  # type: ignore[arg-type]
