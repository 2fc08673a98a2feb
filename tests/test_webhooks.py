"""The webhook endpoints in-process: answers, secrets, limits, and property-based fuzzing
(any body, any headers → 2xx or 4xx, never 5xx, never a crash)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, Union

import httpx

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from starlette.testclient import TestClient

from relay.app import create_app
from relay.auth import mint_token
from relay.logs import Throttle
from tests.support.fixtures import fixture
from tests.support.relay import SECRET as SECRET_KEY, settings, threaded_relay

SECRET = "hook-secret-0123456789"
Client = Union[TestClient, httpx.Client]


@contextlib.contextmanager
def client(via: str, **changes: Any) -> Iterator[Client]:
    """A client of the relay: in-process through ASGI, or over TCP to real uvicorn (where the
    HTTP front answers webhooks itself: relay/internals/fastpath.py). Both must answer alike."""
    if via == "asgi":
        with TestClient(create_app(settings(**changes))) as asgi:
            yield asgi
    else:
        with threaded_relay(settings(**changes)) as server, \
                httpx.Client(base_url=server.url, timeout=10) as tcp:
            yield tcp


@pytest.fixture(scope="module", params=["asgi", "uvicorn"])
def open_client(request: pytest.FixtureRequest) -> Iterator[Client]:
    with client(request.param, max_body=64 * 1024) as c:
        yield c


@pytest.fixture(scope="module", params=["asgi", "uvicorn"])
def locked_client(request: pytest.FixtureRequest) -> Iterator[Client]:
    with client(request.param, webhook_secret=SECRET) as c:
        yield c


def test_answers(open_client: Client) -> None:
    qr = fixture("evolution", "webhook-qrcode-updated")
    assert open_client.post("/webhooks/evolution", json=qr).json() == {"ok": True, "updated": True}
    assert open_client.post("/webhooks/evolution/qrcode-updated", json=qr).json() == {"ok": True, "updated": False}
    ignored = open_client.post("/webhooks/evolution", json=fixture("evolution", "webhook-instance-create"))
    assert ignored.status_code == 200 and ignored.json()["ignored"] is True
    bad = open_client.post("/webhooks/evolution", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"] == "bad_json"
    shape = open_client.post("/webhooks/evolution", json={"event": "connection.update", "instance": "x", "data": {}})
    assert shape.status_code == 400 and "unknown state" in shape.json()["detail"]
    big = open_client.post("/webhooks/evolution", content=b"{" + b" " * (70 * 1024) + b"}")
    assert big.status_code == 413 and big.json()["error"] == "too_large"


def test_secret_by_header_jwt_or_path(locked_client: Client) -> None:
    import jwt
    import time

    qr = fixture("evolution", "webhook-qrcode-updated")
    assert locked_client.post("/webhooks/evolution", json=qr).status_code == 401
    assert locked_client.post("/webhooks/evolution", json=qr,
                              headers={"Authorization": "Bearer nope"}).status_code == 401
    assert locked_client.post(f"/webhooks/evolution/not-{SECRET}", json=qr).status_code == 401
    assert locked_client.post("/webhooks/evolution", json=qr,
                              headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    assert locked_client.post(f"/webhooks/evolution/{SECRET}", json=qr).status_code == 200
    assert locked_client.post(f"/webhooks/evolution/{SECRET}/qrcode-updated", json=qr).status_code == 200
    now = int(time.time())
    token = jwt.encode({"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}, SECRET,
                       algorithm="HS256")
    assert locked_client.post("/webhooks/evolution/qrcode-updated", json=qr,
                              headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A viewer-shaped token is never a webhook credential, whatever signed it.
    viewerish = jwt.encode({"instances": ["*"], "exp": now + 600}, SECRET, algorithm="HS256")
    assert locked_client.post("/webhooks/evolution", json=qr,
                              headers={"Authorization": f"Bearer {viewerish}"}).status_code == 401
    assert locked_client.post(f"/webhooks/wppconnect/{SECRET}?session=mysession",
                              json=fixture("wppconnect", "webhook-qrcode")).status_code == 200


# Text includes lone surrogates (JSON can carry "\ud800"): they must be a 400, never a 503.
text = st.text(max_size=20, alphabet=st.characters(blacklist_categories=()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {"event": st.sampled_from(["qrcode.updated", "connection.update", "logout.instance", "remove.instance",
                               "QRCODE_UPDATED", "messages.upsert", "qrcode", "status-find"]) | st.text(max_size=15)},
    optional={"instance": st.text(max_size=12) | json_values, "data": json_values,
              "date_time": st.text(max_size=30), "session": st.text(max_size=10) | json_values,
              "status": st.text(max_size=12), "qrcode": json_values, "urlcode": json_values},
)


def deep(depth: int) -> bytes:
    return b'{"event":"connection.update","instance":"x","data":' + b"[" * depth + b"]" * depth + b"}"


BAD_INPUTS = [  # the 5xx of the hardening report, each a clear 4xx now
    deep(3000), deep(40),
    json.dumps({"event": "connection.update", "instance": "x", "data": {"state": ["open"]}}).encode(),
    json.dumps({"event": "connection.update", "instance": "x", "data": {"state": {"a": 1}}}).encode(),
    json.dumps({"event": "connection.update", "instance": "\ud800", "data": {"state": "open"}}).encode(),
    b'{"event":"qrcode.updated","instance":"x","data":{"qrcode":{"code":"\\ud800"}}}',
    json.dumps({"event": "qrcode.updated", "instance": "x", "data": {"qrcode": {"code": "2@" + "a" * 5000}}}).encode(),
]


@pytest.mark.parametrize("body", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_bad_input_is_a_4xx(open_client: Client, body: bytes) -> None:
    resp = open_client.post("/webhooks/evolution", content=body)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)


@pytest.mark.parametrize("via", ["asgi", "uvicorn"])
def test_oversized_qr_images_are_not_kept(via: str) -> None:
    """A QR PNG is a few KB: a 900 KB "image" is not kept (the page draws from the code); with no
    code to draw from, it is refused."""
    with client(via) as c:
        body = {"event": "qrcode", "session": "s", "urlcode": "2@x,y,z,w", "qrcode": "A" * 900_000}
        assert c.post("/webhooks/wppconnect", json=body).status_code == 200
        tok = mint_token(SECRET_KEY, ["s"], 60)
        snap = c.get("/v1/instances/s", headers={"Authorization": f"Bearer {tok}"}).json()
        assert snap["qr"]["code"] == "2@x,y,z,w" and snap["qr"]["image"] is None
        del body["urlcode"]
        refused = c.post("/webhooks/wppconnect", json=body)
        assert refused.status_code == 400 and "larger than 256 KB" in refused.json()["detail"]


header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | envelopes.map(lambda e: json.dumps(e).encode()) |
       json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/webhooks/evolution", "/webhooks/evolution/qrcode-updated",
                             "/webhooks/evolution/a/b/c", "/webhooks/wppconnect",
                             "/webhooks/wppconnect?session=s1", f"/webhooks/evolution/{SECRET}"]),
       # (stripped: HTTP has no header value with spaces around it; h11 refuses to send one)
       auth=st.none() | header_values.map(lambda v: ("Bearer " + v).strip()) | header_values.map(str.strip),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]))
def test_fuzz_never_5xx(open_client: Client, locked_client: Client, body: bytes, path: str,
                        auth: str | None, content_type: str) -> None:
    headers = {"content-type": content_type}
    if auth is not None:
        headers["authorization"] = auth
    for client in (open_client, locked_client):
        resp = client.post(path, content=body, headers=headers)
        assert 200 <= resp.status_code < 500, (resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/json")
        if resp.status_code >= 400:
            assert set(resp.json()) == {"error", "detail"}


def test_refusals_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    with client("asgi", webhook_secret=SECRET) as locked_client:
        refusals_logged(locked_client, caplog)


def refusals_logged(locked_client: Client, caplog: pytest.LogCaptureFixture) -> None:
    locked_client.app.webhooks.throttle = Throttle(10.0)  # type: ignore[attr-defined]
    caplog.set_level("WARNING", logger="relay.webhooks")
    qr = fixture("evolution", "webhook-qrcode-updated")
    assert locked_client.post("/webhooks/evolution", json=qr,
                              headers={"Authorization": "Bearer guess-guess"}).status_code == 401
    assert locked_client.post("/webhooks/evolution", json=qr,
                              headers={"Authorization": "Bearer guess-again"}).status_code == 401
    refused = [r.getMessage() for r in caplog.records if r.name == "relay.webhooks"]
    assert refused == ["refused a webhook from evolution with 401: missing or wrong webhook secret"]  # once
    assert not any("guess" in m or SECRET in m or "PLACEHOLDER" in m for m in refused)


def test_the_dedupe_key_is_the_one_earlier_versions_computed() -> None:
    """Workers of two versions share dedupe keys in Redis during a rolling update: the key must
    stay the hash of ``json.dumps(parts, sort_keys=True, default=str)``."""
    import datetime
    import hashlib

    from relay.gateways.dedupe import dedupe_key

    for parts in (["qrcode.updated", "shop", "2025-10-21T12:00:00.000Z", ["qr", "2@abc,d,e,f", None]],
                  ["connection.update", "loja-ção", None, {"state": "open", "b": [1, 2.5], "a": True}],
                  ["shop", "phoneCode", datetime.datetime(2025, 1, 2, 3, 4, 5)]):
        old = hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(),
                              digest_size=16).hexdigest()
        assert dedupe_key(parts) == old
