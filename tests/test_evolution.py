"""Every Evolution fixture through the parser and the rules (shared/fixtures/evolution)."""

from __future__ import annotations

import copy

import jwt
import pytest

from relay.auth import webhook_allowed
from relay.errors import BadEventError
from relay.reasons import MESSAGES
from relay.rules import apply
from relay.snapshot import Record
from relay.wire import dump_record, load_record
from relay.gateways import evolution, evolution_api
from tests.support.fixtures import fixture, fixture_paths

TTL = 45_000
EVENT_FILES = [p.stem for p in fixture_paths("evolution") if p.stem.startswith(("webhook-", "websocket-"))
               and "request-headers" not in p.stem]
EXPECTED_STATE = {
    "qrcode-updated": "connecting",
    "connection-update-connecting": "connecting",
    "connection-update-open": "open",
    "connection-update-close": "close",
    "logout-instance": "close",
    "remove-instance": "close",
    "instance-delete": "close",  # a deletion: shown as "removed", like remove.instance
}


def test_fixture_set_is_what_we_think() -> None:
    assert len(EVENT_FILES) >= 15  # the suite really reads the shared fixtures


@pytest.mark.parametrize("name", EVENT_FILES)
def test_every_event_fixture(name: str) -> None:
    body = fixture("evolution", name)
    event = evolution.parse(body)
    kind = name.split("-", 1)[1]
    if kind not in EXPECTED_STATE:
        assert event is None, "instance.create and others are accepted and ignored"
        return
    assert event is not None
    assert event.instance == "my-instance" and event.upstream == "evolution"
    assert event.gateway_ts is not None
    record, changed = apply(None, event, qr_ttl_ms=TTL)
    snap = record.snapshot
    assert changed and snap["state"] == EXPECTED_STATE[kind]
    assert snap["cause"] == body["event"]
    if kind == "qrcode-updated":
        assert snap["qr"]["code"] == body["data"]["qrcode"]["code"]
        assert snap["qr"]["image"] == body["data"]["qrcode"]["base64"]  # already a data URL: not doubled
        assert snap["qr"]["pairingCode"] is None
    else:
        assert snap["qr"] is None
    if kind == "connection-update-open":
        assert snap["profile"] == {"wuid": "5511999999999@s.whatsapp.net", "name": "Example Name",
                                   "pictureUrl": body["data"]["profilePictureUrl"]}
    if kind == "connection-update-close":
        assert snap["reason"] == {"code": "logged_out", "message": MESSAGES["logged_out"],
                                  "gateway": {"statusReason": 401}}


def test_webhook_and_socket_copies_of_one_event_are_one_event() -> None:
    for kind in ("qrcode-updated", "connection-update-open", "logout-instance"):
        hook = evolution.parse(fixture("evolution", f"webhook-{kind}"))
        sock = evolution.parse(fixture("evolution", f"websocket-{kind}"))
        assert hook is not None and sock is not None
        assert hook.dedupe_key == sock.dedupe_key  # key order and `destination` don't matter


def test_pairing_code_and_limit_shapes() -> None:
    body = fixture("evolution", "webhook-qrcode-updated")
    body["data"]["qrcode"]["pairingCode"] = "WZYEH1YY"
    event = evolution.parse(body)
    assert event is not None and event.qr is not None and event.qr.pairing_code == "WZYEH1YY"
    limit = copy.deepcopy(body)
    limit["data"] = {"message": "QR code limit reached, please login again", "statusCode": 500}
    event = evolution.parse(limit)
    assert event is not None and event.state == "refused" and event.clear_qr
    refused = fixture("evolution", "webhook-connection-update-close")
    refused["data"]["state"], refused["data"]["statusReason"] = "refused", 428
    record, _ = apply(None, evolution.parse(refused), qr_ttl_ms=TTL)  # type: ignore[arg-type]
    assert record.snapshot["state"] == "refused"
    assert record.snapshot["reason"] == {"code": "qr_limit", "message": MESSAGES["qr_limit"],
                                         "gateway": {"statusReason": 428}}
    limited = apply(None, evolution.parse(limit), qr_ttl_ms=TTL)  # type: ignore[arg-type]
    assert limited is not None and limited[0].snapshot["reason"] == {
        "code": "qr_limit", "message": MESSAGES["qr_limit"],
        "gateway": {"statusCode": 500, "message": "QR code limit reached, please login again"}}


@pytest.mark.parametrize("body, reason", [
    ([], "JSON object"),
    ({"instance": "x"}, "missing 'event'"),
    ({"event": "qrcode.updated"}, "missing 'instance'"),
    ({"event": "qrcode.updated", "instance": "x", "data": None}, "'data' object"),
    ({"event": "qrcode.updated", "instance": "x", "data": {"qrcode": {"code": ""}}}, "non-empty"),
    ({"event": "qrcode.updated", "instance": "x", "data": {"other": 1}}, "neither"),
    ({"event": "connection.update", "instance": "x", "data": {"state": "sideways"}}, "unknown state"),
])
def test_malformed_envelopes_name_the_problem(body: object, reason: str) -> None:
    with pytest.raises(BadEventError) as info:
        evolution.parse(body)
    assert reason in info.value.detail


def test_uppercase_event_names_are_understood() -> None:
    body = fixture("evolution", "webhook-qrcode-updated")
    body["event"] = "QRCODE_UPDATED"
    event = evolution.parse(body)
    assert event is not None and event.cause == "qrcode.updated"


def test_date_time_is_compared_only_with_itself() -> None:
    # Sao Paulo local time labelled Z: parsed naively, ordering within the gateway still holds.
    assert evolution.parse_time("2025-10-21T11:40:39.123Z") == evolution.parse_time("2025-10-21T11:40:39.123") 
    assert evolution.parse_time("2025-10-21T11:40:39.123Z") < evolution.parse_time("2025-10-21T11:40:39.124Z")  # type: ignore[operator]
    assert evolution.parse_time("yesterday") is None


def test_rest_connect_answers() -> None:
    qr = evolution_api.connect_answer("my-instance", fixture("evolution", "rest-instance-connect-200-qr"))
    assert qr is not None and qr.qr is not None and qr.qr.code.startswith("2@")  # type: ignore[union-attr]
    pairing = evolution_api.connect_answer("my-instance", fixture("evolution", "rest-instance-connect-200-pairing-code"))
    assert pairing is not None and pairing.qr.pairing_code == "WZYEH1YY"  # type: ignore[union-attr]
    assert evolution_api.connect_answer("my-instance", fixture("evolution", "rest-instance-connect-200-count0")) is None
    opened = evolution_api.connect_answer("my-instance", fixture("evolution", "rest-instance-connect-200-already-open"))
    assert opened is not None and opened.state == "open"


def test_error_envelopes_become_the_gateways_words() -> None:
    assert evolution_api._message(fixture("evolution", "rest-error-404-instance-not-found")) == \
        'The "my-instance" instance does not exist'
    assert evolution_api._message(fixture("evolution", "rest-error-401-unauthorized")) == "Unauthorized"
    assert evolution_api._message(fixture("evolution", "rest-instance-restart-200-error-when-closed")) is None


def test_webhook_header_fixtures_authenticate() -> None:
    secret = "RELAY-SHARED-SECRET-PLACEHOLDER"
    headers = fixture("evolution", "webhook-request-headers-instance")
    assert webhook_allowed(secret, headers["authorization"], None)
    assert not webhook_allowed(secret, "Bearer wrong", None)
    glob = fixture("evolution", "webhook-request-headers-global")
    assert "Authorization" not in glob and "authorization" not in glob
    assert not webhook_allowed(secret, None, None)
    assert webhook_allowed(secret, None, secret)  # the global webhook puts it in the path
    # jwt_key: a fresh HS256 JWT per event with Evolution's claims.
    import time
    now = int(time.time())
    good = jwt.encode({"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}, secret,
                      algorithm="HS256")
    assert webhook_allowed(secret, f"Bearer {good}", None)
    expired = jwt.encode({"iat": now - 700, "exp": now - 100, "app": "evolution", "action": "webhook"},
                         secret, algorithm="HS256")
    assert not webhook_allowed(secret, f"Bearer {expired}", None)
    forged = jwt.encode({"iat": now, "exp": now + 600}, "not-the-secret-not-the-secret-123", algorithm="HS256")
    assert not webhook_allowed(secret, f"Bearer {forged}", None)


def test_record_roundtrip() -> None:
    event = evolution.parse(fixture("evolution", "webhook-qrcode-updated"))
    record, _ = apply(None, event, qr_ttl_ms=TTL)  # type: ignore[arg-type]
    again = load_record(dump_record(record))
    assert again == record
