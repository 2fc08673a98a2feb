"""The snapshot rules (DESIGN.md "Semantics"), on the pure functions both stores share."""

from __future__ import annotations

import time

from relay.hub import Overlay
from relay.reasons import reason
from relay.rules import STREAM_FRESH_MS, apply
from relay.snapshot import Event, NewQR, Record, blank, live

TTL = 45_000


def qr(code: str, ts: int | None = None, **kw: object) -> Event:
    return Event(upstream="evolution", instance="i", cause="qrcode.updated", state="connecting",
                 qr=NewQR(code=code, image=f"data:image/png;base64,{code}"), gateway_ts=ts, **kw)  # type: ignore[arg-type]


def state(name: str, ts: int | None = None, **kw: object) -> Event:
    return Event(upstream="evolution", instance="i", cause="connection.update", state=name,
                 clear_qr=True, gateway_ts=ts, **kw)  # type: ignore[arg-type]


def run(*events: Event, at: int | None = None) -> tuple[Record | None, list[bool | None]]:
    record: Record | None = None
    outcomes: list[bool | None] = []
    for ev in events:
        result = apply(record, ev, qr_ttl_ms=TTL, at_ms=at)
        if result is None:
            outcomes.append(None)
            continue
        record, changed = result
        outcomes.append(changed)
    return record, outcomes


def test_seq_only_grows() -> None:
    record, _ = run(qr("a", 1), qr("b", 2), state("open", 3))
    assert record is not None
    seqs = []
    rec = None
    for ev in (qr("a", 1), qr("b", 2), state("open", 3)):
        rec, _ = apply(rec, ev, qr_ttl_ms=TTL)  # type: ignore[misc]
        seqs.append(rec.snapshot["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_seq_survives_an_empty_store() -> None:
    # A page holding a seq from before a restart must accept what comes after it.
    before, _ = run(qr("a", 1))
    assert before is not None
    held = before.snapshot["seq"]
    time.sleep(0.002)
    assert blank("i", "evolution")["seq"] > held
    after, _ = run(qr("b", 1))
    assert after is not None and after.snapshot["seq"] > held


def test_qr_expiry_uses_ttl_and_is_never_served() -> None:
    record, _ = run(qr("a", 1), at=1_000)
    assert record is not None and record.snapshot["qr"]["expiresAt"] == 1_000 + TTL  # type: ignore[index]
    assert live(record.snapshot, 1_000 + TTL - 1)["qr"] is not None
    assert live(record.snapshot, 1_000 + TTL)["qr"] is None


def test_qr_cleared_by_open_close_refused_logout() -> None:
    for ending in ("open", "close", "refused"):
        record, outcomes = run(qr("a", 1), state(ending, 2, reason=reason("closed")))
        assert record is not None and record.snapshot["qr"] is None
        assert record.snapshot["state"] == ending and outcomes == [True, True]


def test_repeat_changes_nothing() -> None:
    _, outcomes = run(qr("a", 1), qr("a", 1), state("connecting", 1), state("connecting", 2))
    assert outcomes[0] is True and outcomes[1] is False
    assert outcomes[3] is False  # connecting again: same picture, no update


def test_older_event_never_overwrites_newer_state() -> None:
    record, outcomes = run(state("open", 10), qr("late", 5))
    assert outcomes == [True, None]
    assert record is not None and record.snapshot["state"] == "open"


def test_same_millisecond_qr_does_not_hide_open() -> None:
    _, outcomes = run(state("open", 10), qr("same", 10))
    assert outcomes == [True, None]


def test_a_qr_the_instance_moved_past_never_returns() -> None:
    # Evolution's REST connect may hand back the previous, expired QR (protocols §4.3).
    record, outcomes = run(qr("a", 1), qr("b", 2), qr("a", None))
    assert outcomes == [True, True, None]
    assert record is not None and record.snapshot["qr"]["code"] == "b"  # type: ignore[index]


def test_events_without_gateway_time_apply_in_arrival_order() -> None:
    record, outcomes = run(qr("a"), state("open"))
    assert outcomes == [True, True] and record is not None and record.snapshot["state"] == "open"


def test_upstream_status_is_an_overlay_not_part_of_the_record() -> None:
    """Reachability is the probe's verdict on a whole gateway, told to viewers on top of each
    record: one instance's events never carry it, nor another tenant's error text."""
    record, _ = run(qr("a", 1))
    assert record is not None and record.snapshot["upstream"] == {"name": "evolution", "ok": True, "detail": None}
    overlay = Overlay()
    assert not overlay.active and overlay.apply(record.snapshot) is record.snapshot
    overlay.gateways_down["wppconnect"] = "refused"
    assert overlay.apply(record.snapshot)["upstream"]["ok"] is True  # another gateway's trouble
    overlay.gateways_down["evolution"] = "connection refused"
    assert overlay.apply(record.snapshot)["upstream"] == {"name": "evolution", "ok": False,
                                                          "detail": "connection refused"}
    overlay.paused = "the relay lost its connection to Redis"
    assert overlay.apply(record.snapshot)["upstream"]["detail"] == overlay.paused
    assert record.snapshot["upstream"]["ok"] is True  # the record itself is never touched


def test_a_rest_read_never_undoes_a_newer_event() -> None:
    record, _ = run(qr("a", 1), at=1_000)
    record2 = apply(record, state("open", 2), qr_ttl_ms=TTL, at_ms=2_000)
    assert record2 is not None
    read_before_open = Event(upstream="evolution", instance="i", cause="resync", state="connecting",
                             read_at_ms=1_500)
    assert apply(record2[0], read_before_open, qr_ttl_ms=TTL, at_ms=2_500) is None
    read_after_open = Event(upstream="evolution", instance="i", cause="resync", state="close",
                            clear_qr=True, read_at_ms=2_100)
    result = apply(record2[0], read_after_open, qr_ttl_ms=TTL, at_ms=2_600)
    assert result is not None and result[0].snapshot["state"] == "close"


def test_a_rest_close_yields_to_a_fresh_connecting_stream() -> None:
    """Evolution answers "close" over REST while its socket loops through "connecting"
    (fixtures/CAPTURED.md): while that stream is fresh, such a read must not flap the page."""
    record, _ = run(state("connecting", 1), at=1_000)
    read = Event(upstream="evolution", instance="i", cause="resync", state="close", clear_qr=True,
                 read_at_ms=1_100)
    assert apply(record, read, qr_ttl_ms=TTL, at_ms=1_000 + STREAM_FRESH_MS - 1) is None
    later = apply(record, read, qr_ttl_ms=TTL, at_ms=1_000 + STREAM_FRESH_MS + 1)
    assert later is not None and later[0].snapshot["state"] == "close"  # the stream went quiet


def test_socket_image_and_webhook_code_are_one_qr() -> None:
    image = "data:image/png;base64,AAAA"
    sock = Event(upstream="wppconnect", instance="i", cause="qrCode", state="connecting",
                 qr=NewQR(code=None, image=image))
    hook = Event(upstream="wppconnect", instance="i", cause="qrcode", state="connecting",
                 qr=NewQR(code="2@ref,x,y,z", image=image))
    record, outcomes = run(sock, hook)
    assert record is not None and record.snapshot["qr"]["code"] == "2@ref,x,y,z"  # type: ignore[index]
    first = apply(None, sock, qr_ttl_ms=TTL, at_ms=1_000)
    assert first is not None
    merged = apply(first[0], hook, qr_ttl_ms=TTL, at_ms=9_000)
    assert merged is not None and merged[0].snapshot["qr"]["expiresAt"] == 1_000 + TTL  # type: ignore[index]
    again = apply(merged[0], sock, qr_ttl_ms=TTL, at_ms=9_500)
    assert again is not None and again[1] is False  # the socket copy after the webhook: no update


def test_pairing_codes_alone_follow_one_another() -> None:
    p1 = Event(upstream="evolution", instance="i", cause="qrcode.updated", state="connecting",
               qr=NewQR(code=None, image=None, pairing_code="AAAA1111"))
    p2 = Event(upstream="evolution", instance="i", cause="qrcode.updated", state="connecting",
               qr=NewQR(code=None, image=None, pairing_code="BBBB2222"))
    record, outcomes = run(p1, state("open"), p2, p1)
    assert outcomes == [True, True, True, None]  # a new code shows; the old one never returns
    assert record is not None and record.snapshot["qr"]["pairingCode"] == "BBBB2222"  # type: ignore[index]


def test_generic_close_keeps_the_specific_reason() -> None:
    specific = Event(upstream="wppconnect", instance="i", cause="status-find", state="close",
                     reason=reason("logged_out"))
    generic = Event(upstream="wppconnect", instance="i", cause="status-find", state="close",
                    reason=reason("closed"), reason_if_qr=reason("timed_out"), weak_reason=True)
    record, _ = run(specific, generic)
    assert record is not None and record.snapshot["reason"]["code"] == "logged_out"  # type: ignore[index]
    record, _ = run(qr("a"), generic)  # alone, after a QR: it was not scanned in time
    assert record is not None and record.snapshot["reason"]["code"] == "timed_out"  # type: ignore[index]
    record, _ = run(generic)  # alone, with no QR before it (the browser died): just closed
    assert record is not None and record.snapshot["reason"]["code"] == "closed"  # type: ignore[index]


def test_a_late_image_only_copy_of_a_past_qr_never_returns() -> None:
    image = "data:image/png;base64,OLD"
    hook = Event(upstream="wppconnect", instance="i", cause="qrcode", state="connecting",
                 qr=NewQR(code="2@old,x,y,z", image=image))
    newer = Event(upstream="wppconnect", instance="i", cause="qrcode", state="connecting",
                  qr=NewQR(code="2@new,x,y,z", image="data:image/png;base64,NEW"))
    late_socket_copy = Event(upstream="wppconnect", instance="i", cause="qrCode", state="connecting",
                             qr=NewQR(code=None, image=image))
    record, outcomes = run(hook, newer, late_socket_copy)
    assert outcomes == [True, True, None]
    assert record is not None and record.snapshot["qr"]["code"] == "2@new,x,y,z"  # type: ignore[index]
