"""The snapshot (the one payload browsers see), the events that change it, and the record a
store keeps per instance. The rules that apply events live in :mod:`relay.rules`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TypedDict

from .reasons import Reason

STATES: tuple[str, ...] = ("unknown", "connecting", "open", "close", "refused")


class QR(TypedDict):
    code: str | None
    image: str | None
    pairingCode: str | None
    expiresAt: int


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
    # Set when the state stays closed; cleared by the rules when the state changes or a QR comes.
    reason: Reason | None = None
    # Used instead of ``reason`` when the instance had a QR in this pairing attempt
    # (WPPConnect's browserClose after a QR means it was not scanned in time).
    reason_if_qr: Reason | None = None
    # A generic close reason that must not replace a more specific one already shown
    # (WPPConnect's browserClose follows disconnectedMobile, in either order).
    weak_reason: bool = False
    profile: Profile | None = None
    clear_profile: bool = False
    gateway_ts: int | None = None
    dedupe_key: str | None = None
    # For state read over REST (resync): when it was read, on our clock. A record updated after
    # that holds a newer event, which such a read must not undo.
    read_at_ms: int | None = None
    # The gateway accepted a request for a QR: a closed instance is now connecting, and the
    # wait for its QR starts again (a "no QR" shown so far is cleared).
    restart_wait: bool = False
    # The pairing watchdog: the wait for a QR is over (applied when a deadline passes).
    stall: bool = False


RETIRED_MAX = 16


@dataclass
class Record:
    """What a store keeps per instance: the snapshot, the newest gateway time applied, short
    hashes of the QR codes this instance has moved past (so a stale QR never comes back), and
    the pairing watchdog's clock. Times other than ``gateway_ts`` are ours, in ms."""

    snapshot: Snapshot
    gateway_ts: int | None = None
    retired: list[str] = field(default_factory=list)
    # While connecting: when "no QR" is due if no QR has come by then, and since when the
    # instance has been waiting without a live QR (with how many gateway events meanwhile).
    deadline: int | None = None
    waiting_since: int | None = None
    waiting_events: int = 0
    # When the gateway last sent anything about the instance, a repeat included.
    seen_at: int | None = None


def _idents(code: str | None, image: str | None, pairing: str | None) -> list[str]:
    idents = [f"c:{code}"] if code else []
    if image:
        idents.append(f"i:{image}")
    return idents or [f"p:{pairing}"]


def _hash(ident: str) -> str:
    return hashlib.blake2b(ident.encode(), digest_size=8).hexdigest()


def qr_names(code: str | None, image: str | None, pairing: str | None = None) -> list[str]:
    """Short, non-reversible names of a QR (QR codes never go into logs or extra keys): one for
    its code and one for its image (WPPConnect's socket sends only the image), or its pairing
    code when it has neither."""
    return [_hash(i) for i in _idents(code, image, pairing)]


def qr_name(code: str | None, image: str | None, pairing: str | None = None) -> str:
    """The first of :func:`qr_names`, the QR's own identity (its code when it has one), without
    hashing a ~6 KB image for nothing on every event."""
    return _hash(_idents(code, image, pairing)[0])


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
