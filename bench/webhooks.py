"""Webhook load: realistic Evolution `qrcode.updated` bodies posted on an open-loop schedule.

Open loop means event k is sent at t0 + k/R whether or not earlier requests have answered,
so a slow server shows up as latency and non-2xx instead of silently lowering the offered
rate (the "coordinated omission" trap of closed-loop generators).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
import zlib
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from viewers import EID_DIGITS

from tests.support.fixtures import evolution_event

FIXTURE = "webhook-qrcode-updated"
# Placeholders in the body template, replaced per event (cheaper than building a dict each time).
_S_INSTANCE = "@@BENCH_INSTANCE@@"
_S_CODE = "@@BENCH_CODE@@"
_S_DATE = "@@BENCH_DATE@@"
_PNG_URL = "data:image/png;base64,"


def fake_png(n_bytes: int) -> bytes:
    """A PNG-looking blob of about ``n_bytes``: real signature and IHDR, then incompressible
    IDAT-like bytes (real QR PNGs are already deflated, so random bytes model their base64 better
    than padding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 264, 264, 8, 6, 0, 0, 0))
    tail = chunk(b"IEND", b"")
    return head + chunk(b"IDAT", os.urandom(max(0, n_bytes - len(head) - len(tail) - 12))) + tail


class BodyFactory:
    """One Evolution ``qrcode.updated`` body per event (the shared fixture, its QR image a generated
    PNG so that the body is about ``body_bytes``); the QR code carries the run marker and event id."""

    def __init__(self, body_bytes: int, marker: str) -> None:
        self.marker = marker
        self._code_tail = evolution_event(FIXTURE)["data"]["qrcode"]["code"].removeprefix("2@")
        probe = self._fill(self._template(_PNG_URL), 0, "bench-0000", 0)
        png = fake_png(max(0, body_bytes - len(probe)) * 3 // 4)  # base64: 4 chars per 3 bytes
        self._body = self._template(_PNG_URL + base64.b64encode(png).decode())
        self.size = len(self._fill(self._body, 0, "bench-0000", 0))

    @staticmethod
    def _template(image: str) -> str:
        body = evolution_event(FIXTURE, instance=_S_INSTANCE, date_time=_S_DATE, code=_S_CODE,
                               image=image)
        return json.dumps(body, separators=(",", ":"))

    def code_for(self, eid: int) -> str:
        """QR ``code`` carrying the event id right after the run marker (what viewers search for)."""
        return f"2@{self.marker}{eid:0{EID_DIGITS}d}X{self._code_tail}"

    def _fill(self, template: str, eid: int, instance: str, date_ms: int) -> bytes:
        stamp = datetime.fromtimestamp(date_ms / 1000, tz=UTC)
        date_time = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date_ms % 1000:03d}Z"
        return (template.replace(_S_INSTANCE, instance).replace(_S_CODE, self.code_for(eid))
                .replace(_S_DATE, date_time).encode())

    def body(self, eid: int, instance: str, date_ms: int) -> bytes:
        """The body of event ``eid`` for ``instance``, stamped ``date_ms`` (ms since the epoch)."""
        return self._fill(self._body, eid, instance, date_ms)


@dataclass
class SendResult:
    """Per-event send times and statuses of one step (index = eid - first_eid)."""

    first_eid: int
    count: int
    send_ns: array[int]  # wall clock (time.time_ns) just before the POST was issued
    status: array[int]  # HTTP status; 0 = connection error, 1 = client timeout
    done_ns: array[int]  # wall clock when the response was read
    max_schedule_lag_ms: float  # how far the generator itself fell behind its schedule
    errors: dict[str, int]


class WebhookLoad:
    """Posts webhooks round-robin over instances and ports with a bounded aiohttp pool."""

    def __init__(self, ports: list[int], instances: list[str], factory: BodyFactory, pool: int,
                 timeout_s: float, date_base_ms: int, keepalive_s: float = 15.0,
                 trace: aiohttp.TraceConfig | None = None) -> None:
        self.urls = [f"http://127.0.0.1:{p}/webhooks/evolution" for p in ports]
        self.instances = instances
        self.factory = factory
        self.timeout_s = timeout_s
        self.date_base_ms = date_base_ms
        # Dummy cookie jar, no auto-decompression: less per-request work in the load client.
        # keepalive_s: how long an idle pooled connection is kept (aiohttp's default 15 s).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=0, force_close=False,
                                           keepalive_timeout=keepalive_s),
            timeout=aiohttp.ClientTimeout(total=timeout_s), cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
            trace_configs=[trace] if trace is not None else None)
        self._headers = {"Content-Type": "application/json"}

    def instance_of(self, eid: int) -> int:
        return eid % len(self.instances)

    def url_of(self, eid: int) -> str:
        # (eid // I) % P rather than eid % P: with an even I and P=2 the latter would pin each
        # instance to one port and never exercise cross-process fan-out from the webhook side.
        return self.urls[(eid // len(self.instances)) % len(self.urls)]

    async def run(self, first_eid: int, rate: float, duration: float) -> SendResult:
        """Post ``rate * duration`` events open-loop, starting at event id ``first_eid``."""
        n = max(1, int(rate * duration))
        res = SendResult(first_eid=first_eid, count=n, send_ns=array("q", bytes(8 * n)),
                         status=array("h", bytes(2 * n)), done_ns=array("q", bytes(8 * n)),
                         max_schedule_lag_ms=0.0, errors={})
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter() + 0.02
        k = 0
        while k < n:
            now = time.perf_counter()
            due = min(n, int((now - t0) * rate) + 1)  # every event whose slot has come
            if k < due:
                res.max_schedule_lag_ms = max(res.max_schedule_lag_ms, (now - (t0 + k / rate)) * 1e3)
            while k < due:
                task = asyncio.create_task(self._post(res, k))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                k += 1
            if k < n:
                # At least 1 ms: the loop's timer resolution is 1 ms, so shorter sleeps return
                # at once and the scheduler would spin, burning the CPU the server needs. The
                # next wake-up fires every event that became due (send times are recorded per
                # event, so the <= 1 ms batching does not bias latency).
                await asyncio.sleep(max(0.001, t0 + k / rate - time.perf_counter()))
        if tasks:  # bounded: every request has its own total timeout
            await asyncio.wait(list(tasks), timeout=self.timeout_s + 5)
        return res

    async def _post(self, res: SendResult, k: int) -> None:
        eid = res.first_eid + k
        instance = self.instances[self.instance_of(eid)]
        # date_time grows with eid, hence strictly increases per instance (ordering rules).
        body = self.factory.body(eid, instance, self.date_base_ms + eid)
        res.send_ns[k] = time.time_ns()
        try:
            async with self._session.post(self.url_of(eid), data=body, headers=self._headers) as resp:
                await resp.read()
                res.status[k] = resp.status
        except TimeoutError:
            res.status[k] = 1
            res.errors["timeout"] = res.errors.get("timeout", 0) + 1
        except aiohttp.ClientError as err:
            res.status[k] = 0
            name = type(err).__name__
            res.errors[name] = res.errors.get(name, 0) + 1
        res.done_ns[k] = time.time_ns()

    async def scrape_metric(self, port: int, name: str, samples: int) -> list[float] | None:
        """Values of gauge ``name`` seen over ``samples`` fresh connections (None if not exposed).

        Each sample uses a new connection so that, with several workers behind one port, the
        kernel may hand it to a different worker: we report what is worker-visible."""
        values: list[float] = []
        exposed = False
        url = f"http://127.0.0.1:{port}/metrics"
        for _ in range(samples):
            try:
                async with (
                    aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                          timeout=aiohttp.ClientTimeout(total=3)) as s,
                    s.get(url) as resp,
                ):
                    if resp.status != 200:
                        return None if not exposed else values
                    text = await resp.text()
            except (TimeoutError, aiohttp.ClientError):
                continue
            for line in text.splitlines():
                if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
                    exposed = True
                    try:
                        values.append(float(line.rsplit(" ", 1)[1]))
                    except ValueError:
                        pass
        return values if exposed else None

    async def close(self) -> None:
        await self._session.close()
