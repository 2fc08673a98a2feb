"""The pairing rules on the pure functions: reason codes that tell what happened, the
watchdog's clock, and a deletion told apart from a logout whatever order its events come in
(the orders captured from Evolution 2.3.6, fixtures/evolution/captured-2.3.6)."""

from __future__ import annotations

import asyncio

import json
from typing import Any

import pytest

from relay.gateways import evolution
from relay.rules import QUIET_MS, apply, quiet_repeat
from relay.snapshot import Event, NewQR, Record, now_ms
from relay.watchdog import Watchdog
from tests.support.fixtures import SHARED

TTL, WAIT = 45_000, 30_000
RAW = SHARED / "fixtures" / "evolution" / "captured-2.3.6" / "raw"


def ev(state: str | None = None, **kw: Any) -> Event:
    return Event(upstream="evolution", instance="i", cause=kw.pop("cause", "connection.update"),
                 state=state, **kw)


def step(record: Record | None, event: Event, at: int) -> tuple[Record, bool]:
    result = apply(record, event, qr_ttl_ms=TTL, qr_wait_ms=WAIT, at_ms=at)
    assert result is not None, f"{event.cause} was stale"
    return result


def test_the_wait_starts_once_and_repeats_do_not_restart_it() -> None:
    record, changed = step(None, ev("connecting"), 1_000)
    assert changed and record.deadline == 1_000 + WAIT and record.waiting_since == 1_000
    for at in range(1_400, 30_000, 400):  # Evolution's storm: the same event, again and again
        record, changed = step(record, ev("connecting"), at)
        assert not changed and record.deadline == 1_000 + WAIT
    assert record.waiting_events == len(range(1_400, 30_000, 400))
    record, changed = step(record, ev(cause="watchdog", stall=True), 1_000 + WAIT - 1)
    assert not changed  # not due yet
    record, changed = step(record, ev(cause="watchdog", stall=True), 1_000 + WAIT)
    snap = record.snapshot
    assert changed and snap["state"] == "connecting" and snap["reason"]["code"] == "no_qr"  # type: ignore[index]
    assert snap["reason"]["message"].startswith("The gateway has not produced a QR code")  # type: ignore[index]
    for at in range(31_500, 60_000, 400):  # the storm goes on: "no QR" stays, nothing flaps
        record, changed = step(record, ev("connecting"), at)
        assert not changed


@pytest.mark.parametrize("clearing", [
    ev("open", clear_qr=True),
    ev("close", clear_qr=True),
    ev("connecting", cause="qrcode.updated", qr=NewQR(code="2@a,b,c,d", image=None)),
    ev(cause="connect", restart_wait=True),
])
def test_a_qr_open_a_state_change_or_a_new_request_clears_no_qr(clearing: Event) -> None:
    record, _ = step(None, ev("connecting"), 0)
    record, _ = step(record, ev(cause="watchdog", stall=True), WAIT)
    assert record.snapshot["reason"]["code"] == "no_qr"  # type: ignore[index]
    record, changed = step(record, clearing, WAIT + 5)
    assert changed and record.snapshot["reason"] is None


def test_a_new_request_restarts_the_clock_and_a_closed_instance_starts_connecting() -> None:
    record, _ = step(None, ev("close", clear_qr=True), 0)
    assert record.deadline is None
    record, changed = step(record, ev(cause="connect", restart_wait=True), 100)
    assert changed and record.snapshot["state"] == "connecting" and record.deadline == 100 + WAIT
    record, _ = step(record, ev("connecting"), 5_000)
    record, changed = step(record, ev(cause="connect", restart_wait=True), 9_000)
    assert not changed and record.deadline == 9_000 + WAIT  # asked again: wait again


def test_an_expired_qr_without_a_successor_is_a_stall_too() -> None:
    qr = ev("connecting", cause="qrcode.updated", qr=NewQR(code="2@a,b,c,d", image=None))
    record, _ = step(None, qr, 0)
    assert record.deadline == TTL + WAIT  # the QR's own life, then the wait for the next
    record, _ = step(record, ev(cause="watchdog", stall=True), TTL + WAIT - 1)
    assert record.snapshot["reason"] is None  # not due yet (the expired QR is dropped, though)
    record, changed = step(record, ev(cause="watchdog", stall=True), TTL + WAIT)
    assert changed and record.snapshot["qr"] is None and record.snapshot["reason"]["code"] == "no_qr"  # type: ignore[index]


def captured(name: str, *, path: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (RAW / name).read_text().splitlines()]
    out = []
    for row in rows:
        if path is not None and row.get("path") != path:
            continue
        if kind is not None and row.get("kind") != kind:
            continue
        out.append(row.get("body") or (row.get("args") or [None])[0])
    return out


def deletion(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tail of a capture from the first deletion event on."""
    start = next(i for i, b in enumerate(bodies) if b["event"] in ("remove.instance", "instance.delete"))
    return bodies[start:]


ORDERS = {
    "webhook, run 1": deletion(captured("evo-run1-webhook-raw.jsonl", path="/instance-hook")),
    "socket, run 1": deletion(captured("evo-run1-socketio-raw.jsonl", kind="event")),
    "webhook by events, São Paulo time": deletion(
        captured("evo-run2-webhook-raw.jsonl")),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_a_deletion_ends_removed_whatever_the_order(order: str) -> None:
    bodies = ORDERS[order]
    names = [b["event"] for b in bodies]
    assert "remove.instance" in names and "connection.update" in names  # the real sequence
    for sequence in (bodies, list(reversed(bodies))):
        record, _ = step(None, ev("connecting"), 0)
        for n, body in enumerate(sequence):
            event = evolution.parse(body)
            if event is None:
                continue  # status.instance: says nothing the others don't
            result = apply(record, event, qr_ttl_ms=TTL, qr_wait_ms=WAIT, at_ms=100 + n)
            if result is not None:  # an older one by the gateway's clock may be stale
                record = result[0]
        assert record.snapshot["state"] == "close"
        assert record.snapshot["reason"]["code"] == "removed", names  # type: ignore[index]


def test_a_logout_alone_is_logged_out_and_a_new_pairing_clears_removed() -> None:
    logout = [b for b in ORDERS["webhook, run 1"] if b["event"] in ("logout.instance", "connection.update")]
    record, _ = step(None, ev("open", clear_qr=True), 0)
    for n, body in enumerate(logout):
        record, _ = step(record, evolution.parse(body), 10 + n)  # type: ignore[arg-type]
    assert record.snapshot["reason"]["code"] == "logged_out"  # type: ignore[index]
    removed, _ = step(record, evolution.parse(ORDERS["webhook, run 1"][0]), 20)  # type: ignore[arg-type]
    assert removed.snapshot["reason"]["code"] == "removed"  # type: ignore[index]
    again, changed = step(removed, ev("connecting", gateway_ts=10**13), 30)  # created again
    assert changed and again.snapshot["reason"] is None


def test_the_qr_limit_is_not_hidden_by_the_logout_that_follows_it() -> None:
    limit = ev("refused", clear_qr=True, reason=evolution.reason("qr_limit", {"statusReason": 428}))
    logout = evolution.parse(ORDERS["webhook, run 1"][2])  # logout.instance
    record, _ = step(None, limit, 0)
    record, _ = step(record, logout, 1)  # type: ignore[arg-type]
    assert record.snapshot["reason"]["code"] == "qr_limit"  # type: ignore[index]


def test_errors_webhook_with_the_global_key_is_ignored() -> None:
    body = json.loads((RAW.parent / "webhook" / "webhook-run1-errors-error.json").read_text())["body"]
    assert "api_key" in body
    assert evolution.parse(body) is None


def test_a_repeat_that_moves_only_the_clocks_is_quiet_for_a_while() -> None:
    first, _ = step(None, ev("connecting", gateway_ts=1), 1_000)
    again, changed = step(first, ev("connecting", gateway_ts=2), 1_300)
    assert quiet_repeat(first, again, changed)  # a store need not write it
    later, changed = step(first, ev("connecting", gateway_ts=3), 1_000 + QUIET_MS)
    assert not quiet_repeat(first, later, changed)  # written once per QUIET_MS
    qr, changed = step(first, ev(cause="qrcode.updated", qr=NewQR(code="2@x", image=None)), 1_300)
    assert not quiet_repeat(first, qr, changed)
    assert not quiet_repeat(None, first, False)


async def test_the_watchdog_arms_again_a_timer_that_fired_early() -> None:
    fired: list[str] = []
    dog = Watchdog(fired.append)
    deadline = now_ms() + 60_000
    dog.arm("i", deadline)
    dog._due("i", deadline)  # the loop's clock fired it before the wall clock's deadline
    dog.arm("i", deadline)  # Relay.stall: not due yet by the rules, so armed again
    assert "i" in dog._timers
    dog.close()
    past = now_ms() - 1
    dog.arm("i", past)
    dog._due("i", past)  # its timer fired
    dog.arm("i", past)  # really passed: not again
    assert "i" not in dog._timers and fired == ["i", "i"]
    dog.close()


async def test_the_watchdog_keeps_its_timer_while_a_deadline_moves_later() -> None:
    """Each new QR moves the deadline later: the timer is not reset for it (it sets itself
    again when it comes); a deadline moved earlier resets it. Either way it fires once, not
    before the deadline wanted last."""
    fired: list[tuple[str, int]] = []
    dog = Watchdog(lambda instance: fired.append((instance, now_ms())))
    start = now_ms()
    dog.arm("i", start + 40)
    timer = dog._timers["i"][1]
    dog.arm("i", start + 120)
    assert dog._timers["i"][1] is timer  # the same timer
    dog.arm("j", start + 400)
    dog.arm("j", start + 60)
    assert dog._timers["j"][0] == start + 60  # moved earlier: set again
    for _ in range(300):
        if len(fired) == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # nothing more comes
    assert sorted(name for name, _ in fired) == ["i", "j"]
    at = dict(fired)
    assert at["i"] >= start + 120 and at["j"] >= start + 60
    assert not dog._timers
    dog.close()
