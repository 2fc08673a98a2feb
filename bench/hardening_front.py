"""Rows 4 and 6 of issue 9: what an unauthenticated client can do to the HTTP front (huge
headers, slowloris; and, with websockets that never connect, the connection cap)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import statistics
import time
from collections.abc import Callable

from hardening_clients import http_post, read_response
from hardening_kit import Finding, Lab, Prober, cpu, log_since, log_size, ms, open_files, quote, rss_mb, timed
from hardening_sockets import websocket_siege

from tests.support.fixtures import evolution_event

MB = 2**20


async def _flood_connection(port: int, limit: int, chunk: bytes) -> tuple[int, bytes]:
    """One connection sending ``GET /healthz`` with an endless header until ``limit`` bytes or
    the relay cuts it: (bytes the client managed to write, the relay's answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read(200))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: ")
    sent = 0
    try:
        while sent < limit and not answer.done() and not writer.is_closing():
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(answer, 2)
    writer.close()
    got = answer.result() if answer.done() and not answer.cancelled() and answer.exception() is None else b""
    return sent, got


async def _whole_header(port: int, size: int) -> str:
    """The first line of the answer to a request whose ``size``-byte header is sent whole."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    try:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode("latin-1").strip()
    except (ConnectionError, asyncio.TimeoutError) as err:
        line = type(err).__name__
    writer.close()
    return line


async def _pipelined(port: int, size: int, count: int = 3) -> list[str]:
    """Answers to ``count`` webhooks of ``size`` bytes sent back to back on one keep-alive
    connection (HTTP/1.1 pipelining), e.g. ["200", "431", "closed"]."""
    body = json.dumps(evolution_event("webhook-qrcode-updated", image="A" * size)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(http_post("/webhooks/evolution", body) for _ in range(count)))
    out: list[str] = []
    try:
        while len(out) < count:
            status, _, close = await asyncio.wait_for(read_response(reader), 10)
            out.append(str(status))
            if close:
                out.append("closed")
                break
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError) as err:
        out.append(type(err).__name__)
    writer.close()
    return out


async def row4(lab: Lab, flood_mb: int, seconds: float) -> Finding:
    relay = lab.relay("headers")
    await asyncio.sleep(1.0)
    rss0, chunk, cpu0, t_one = rss_mb(relay), b"a" * 65536, cpu(relay), time.monotonic()
    sent, answer = await _flood_connection(relay.port, flood_mb * MB, chunk)
    one_cpu, one_wall = cpu(relay) - cpu0, time.monotonic() - t_one
    first = answer.split(b"\r\n", 1)[0].decode("latin-1") or "a reset"
    whole = {kb: await _whole_header(relay.port, kb * 1024) for kb in (31, 33, 64, 120, 130, 300)}
    passed = [kb for kb, line in whole.items() if kb > 32 and not line.startswith("HTTP/1.1 431")]
    piped = {kb: await _pipelined(relay.port, kb * 1000) for kb in (40, 250, 900)}
    # Then as an attacker would go on: a new endless header as soon as the last one is cut, for
    # at least `seconds` and at least flood_mb in all, /healthz probed all along.
    c0, t0, peak = cpu(relay), time.monotonic(), rss0
    probe = Prober(f"{relay.url}/healthz", every=0.1).start()
    total, conns = 0, 0
    while (total < flood_mb * MB or time.monotonic() - t0 < seconds) and time.monotonic() - t0 < 60:
        more, _ = await _flood_connection(relay.port, flood_mb * MB, chunk)
        total, conns = total + more, conns + 1
        if conns % 20 == 0:
            peak = max(peak, rss_mb(relay))
    wall, spent = time.monotonic() - t0, cpu(relay) - c0
    await probe.stop()
    await asyncio.sleep(1.0)
    rss1 = rss_mb(relay)
    logged = [quote(line.split(": ", 1)[-1], 100) for line in log_since(relay).splitlines()
              if "32 KB" in line]
    f = Finding(4, f"one connection: `GET /healthz` then an endless header, up to {flood_mb} MB"
                   "; headers of 31-300 KB sent whole (one write) and the answer read; 3 webhooks "
                   "with large bodies pipelined on one connection; then a new endless "
                   f"header as soon as the last was cut, for {seconds:g} s, `/healthz` probed every "
                   "0.1 s on fresh connections; 1 worker, memory",
                f"one connection: cut after {one_wall * 1000:.0f} ms (relay CPU {one_cpu:.2f} s), "
                f"once the client had written {sent / 1024:,.0f} KB into its socket (the client, "
                f"still writing, saw {first}); headers sent whole: "
                + ", ".join(f"{kb} KB → {line.split(' ', 2)[1] if ' ' in line else line}" for kb, line in whole.items())
                + "; 3 webhooks pipelined on one connection, small headers and bodies of "
                + ", ".join(f"{kb} KB → {'/'.join(v)}" for kb, v in piped.items())
                + f"; then the client wrote {total / MB:,.0f} MB into {conns:,} connections in {wall:.1f} s: relay CPU "
                f"{spent:.1f} s, `/healthz` {probe.summary()}; RSS {rss0:.0f} → {rss1:.0f} MB "
                f"(peak {peak:.0f}); logged: " + (f"\"{logged[0]}\" ({len(logged)} line(s), "
                                                 "throttled)" if logged else "nothing"))
    took = [s[2] for s in probe.samples]
    if passed:
        f.problems.append(f"#4: the 32 KB header limit holds only when the head arrives in more "
                          f"than one read: headers of {passed} KB sent in one write were served "
                          f"({whole[passed[0]]}), i.e. up to about the 128 KiB read size")
    bad_pipe = {kb: v for kb, v in piped.items() if v != ["200"] * 3}
    if bad_pipe:
        f.problems.append(f"#4: pipelined webhooks with large bodies are refused as if their "
                          f"headers were too large: {bad_pipe} (log: \"refused a request whose "
                          "headers passed 32 KB\"; their headers are ~150 B)")
    if sent > 16 * MB:
        f.problems.append(f"#4: one connection wrote {sent / MB:.0f} MB before it was cut")
    if not took or statistics.median(took) > 0.5 or rss1 - rss0 > 50:
        f.problems.append(f"#4: /healthz {probe.summary()}, RSS {rss0:.0f} → {rss1:.0f} MB")
    return f


def _limit_files(n: int) -> Callable[[], None]:
    def apply() -> None:  # in the relay's own process, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


def _open_count(socks: list[socket.socket]) -> int:
    """Sockets the relay has neither closed nor answered (peeked without blocking)."""
    alive = 0
    for s in socks:
        try:
            s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": closed; bytes: answered
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def _half_open(port: int, n: int, socks: list[socket.socket]) -> None:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never finish the headers
        s.setblocking(False)
        socks.append(s)


def _http_lines(text: str) -> list[str]:
    """The front's warnings, each with how many it stood for ("(N more since the last line)")."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if " relay.http: " not in line:
            continue
        message = line.split(" relay.http: ", 1)[1]
        held = re.search(r" \((\d+) more since the last line\)$", message)
        key = message[:held.start()] if held else message
        out[key] = out.get(key, 0) + 1 + (int(held.group(1)) if held else 0)
    return [f"\"{quote(k, 110)}\" ×{n}" for k, n in out.items()]


async def row6(lab: Lab, count: int, siege_seconds: float) -> Finding:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(count, soft - 200)  # this process holds every half-open socket
    relay = lab.relay("slowloris", preexec=_limit_files(1024))
    socks: list[socket.socket] = []
    probe = Prober(f"{relay.url}/healthz", every=0.2).start()
    t0 = time.monotonic()
    opener = asyncio.create_task(asyncio.to_thread(_half_open, relay.port, n, socks))
    peak_fds = 0
    while not opener.done():
        peak_fds = max(peak_fds, open_files(relay.pid))
        await asyncio.sleep(0.1)
    await opener
    opened = time.monotonic() - t0
    during = probe.summary()
    await probe.stop()
    after = [(await timed("GET", f"{relay.url}/healthz"))[:2] for _ in range(20)]
    open_now, timeline, last = _open_count(socks), [], 0.0
    while time.monotonic() - t0 - opened < 15:
        await asyncio.sleep(1.0)
        last = time.monotonic() - t0 - opened
        peak_fds = max(peak_fds, open_files(relay.pid))
        timeline.append((last, _open_count(socks)))
        if timeline[-1][1] == 0:
            break
    for s in socks:
        s.close()
    left = timeline[-1][1] if timeline else open_now
    lines = _http_lines(log_since(relay))
    size0 = log_size(relay)
    siege = await websocket_siege(relay, 1000, siege_seconds)
    siege_lines = _http_lines(log_since(relay, size0))
    ok = sum(1 for status, _ in after if status == 200)
    f = Finding(6, f"{n:,} half-open requests (`GET /` headers never finished) on one relay "
                   "under `ulimit -n 1024` (RLIMIT_NOFILE set in its process), default "
                   "RELAY_HEADER_TIMEOUT (10 s); `/healthz` probed meanwhile; 1 worker, memory",
                f"{n:,} opened in {opened:.1f} s; the relay held at most {peak_fds} files; "
                f"`/healthz` while opening: {during}; then 20 new requests: {ok}/20 answered 200 "
                f"(max {ms(max(t for _, t in after))}); {open_now:,} half-open still open at once, "
                f"{left:,} after {last:.0f} s; logged: " + ("; ".join(lines) or "nothing")
                + f". Then websockets instead: {siege.text}; logged: "
                + ("; ".join(siege_lines) or "nothing"))
    f.how += (f"; then 1,000 websockets that never send CONNECT, each reopened as soon as the "
              f"relay closes it, for {siege_seconds:g} s, `/healthz` probed every 0.2 s and a "
              "viewer with a token trying to connect")
    if ok < 20 or left > 0:
        f.problems.append(f"#6: {20 - ok} new request(s) failed, {left} half-open left after {last:.0f} s")
    if siege.failed:
        f.problems.append(f"#6: the connection cap is filled by websockets that never CONNECT "
                          f"(evicted only after 10 s, and reopened at once): {siege.text}")
    lab.done(relay)
    return f


