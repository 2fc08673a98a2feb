"""Webhooks answered on the HTTP protocol itself (relay/internals/fastpath.py), over raw TCP:
what HTTP/1.1 clients do that a test client never does (keep-alive, pipelining, Expect, chunks,
HTTP/1.0, a body too large while still being sent, going away mid-request)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.fixtures import fixture
from tests.support.relay import running_relay

QR = json.dumps(fixture("evolution", "webhook-qrcode-updated")).encode()
OPEN = json.dumps(fixture("evolution", "webhook-connection-update-open")).encode()


def post(body: bytes, path: str = "/webhooks/evolution", extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off the stream: status, headers, body (by content-length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line))
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


async def test_keep_alive_and_pipelining() -> None:
    async with running_relay() as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        for expected in (b'{"ok":true,"updated":true}', b'{"ok":true,"updated":false}'):
            writer.write(post(QR))
            status, headers, body = await response(reader)
            assert (status, body) == (200, expected)
            assert headers["content-type"] == "application/json" and "connection" not in headers
        # Four requests in one write, one of them not a webhook: four answers, in order.
        writer.write(post(OPEN) + b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n" + post(b"{nope")
                     + post(QR, "/webhooks/evolution/qrcode-updated"))
        answers = [await response(reader) for _ in range(4)]
        assert [a[0] for a in answers] == [200, 200, 400, 200]
        assert answers[0][2] == b'{"ok":true,"updated":true}'
        assert json.loads(answers[2][2])["error"] == "bad_json"
        writer.close()
        snapshot = relay.rt.snapshot
        assert (await snapshot("my-instance"))["state"] == "open"


async def test_expect_continue_chunked_and_http10() -> None:
    async with running_relay() as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(post(b"", extra=b"expect: 100-continue\r\n").replace(
            b"content-length: 0", f"content-length: {len(QR)}".encode()))
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == \
            b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(QR)
        assert (await response(reader))[0] == 200

        chunked = (b"POST /webhooks/evolution HTTP/1.1\r\nhost: relay\r\n"
                   b"transfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(OPEN), 7):
            part = OPEN[i:i + 7]
            chunked += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        writer.write(chunked + b"0\r\n\r\n")
        assert (await response(reader))[2] == b'{"ok":true,"updated":true}'
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(post(QR).replace(b"HTTP/1.1", b"HTTP/1.0"))
        status, headers, _ = await response(reader)
        assert status == 200 and headers["connection"] == "close" and await closed(reader)


async def test_too_large_while_sending() -> None:
    """The 413 comes as soon as the body passes the limit; the client still sending is read and
    dropped (never taken for headers: no 431), then the connection closes."""
    async with running_relay(max_body=64 * 1024) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        size = 1024 * 1024
        writer.write(post(b"").replace(b"content-length: 0", f"content-length: {size}".encode()))
        writer.write(b"{" + b" " * (100 * 1024))
        status, headers, body = await response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["error"] == "too_large"
        writer.write(b" " * (size - 100 * 1024 - 2) + b"}")
        await writer.drain()
        assert await closed(reader)
        # And the relay serves on.
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(post(QR))
        assert (await response(reader))[0] == 200
        writer.close()


async def test_client_leaving_mid_request(caplog: pytest.LogCaptureFixture) -> None:
    async with running_relay() as relay:
        for cut in (len(post(QR)) - len(QR) - 2, len(post(QR)) - 10):  # in the headers, in the body
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(post(QR)[:cut])
            await writer.drain()
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(post(QR))
        assert (await response(reader))[2] == b'{"ok":true,"updated":true}'
        writer.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_header_limit_holds_in_one_read_and_never_counts_bodies() -> None:
    """Headers over 32 KB get 431 even when they arrive in one read; bodies of pipelined
    webhooks are never taken for headers."""
    async with running_relay() as relay:
        for size in (33 * 1024, 120 * 1024):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(post(QR, extra=b"x-big: " + b"a" * size + b"\r\n"))
            status, headers, _ = await response(reader)
            assert status == 431 and headers["connection"] == "close" and await closed(reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        big = json.loads(QR)
        big["data"]["qrcode"]["base64"] = "data:image/png;base64," + "A" * 200_000
        bodies = [json.dumps({**big, "date_time": f"2025-10-21T11:40:4{n}.000Z"}).encode()
                  for n in range(3)]
        writer.write(b"".join(post(b) for b in bodies))  # one write: pipelined
        assert [(await response(reader))[0] for _ in bodies] == [200, 200, 200]
        writer.close()
