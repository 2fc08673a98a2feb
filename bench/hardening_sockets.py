"""Rows 11 and 14 of issue 9, and a part of row 6: what an unauthenticated client can do with
the Engine.IO/Socket.IO front (malformed frames, sockets that never connect)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
import websockets

from hardening_clients import RawViewer
from hardening_kit import Finding, Lab, Prober, log_since, log_size, quote, rss_mb, timed

from tests.support.clients import token
from tests.support.rawsio import WS_PATH
from tests.support.relay import RelayProcess


DEEP = "40" + "[" * 30000 + "]" * 30000  # a Socket.IO CONNECT with a 60 KB nested payload


async def _frames_websocket(port: int, frames: int) -> str:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}{WS_PATH}", max_size=None,
                                  compression=None, ping_interval=None)
    await ws.recv()
    sent, replies = 0, Counter[str]()
    try:
        for _ in range(frames):
            await ws.send(DEEP)
            sent += 1
        while True:  # read every answer (an unread queue would stall the client's close)
            replies[str(await asyncio.wait_for(ws.recv(), 1.0))[:40]] += 1
    except (websockets.ConnectionClosed, asyncio.TimeoutError):
        pass
    code = ws.close_code
    await ws.close()
    answers = ", ".join(f"{n}× `{r}`" for r, n in replies.items()) or "nothing"
    return (f"websocket: {sent} frames sent, answered {answers}, "
            + (f"closed by the relay ({code})" if code else "left open by them"))


async def _frames_polling(url: str, frames: int) -> str:
    """The same frames over Engine.IO long-polling (python-socketio), a new session whenever
    the relay drops one."""
    statuses: dict[int, int] = {}
    sid, sessions = None, 0
    async with aiohttp.ClientSession() as session:
        for _ in range(frames):
            if sid is None:
                async with session.get(f"{url}/socket.io/?EIO=4&transport=polling") as resp:
                    opened = await resp.text()
                sid = opened[opened.index('"sid":"') + 7:].split('"', 1)[0]
                sessions += 1
            async with session.post(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                                    data=DEEP.encode(), headers={"Content-Type": "text/plain"}) as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status != 200:
                    sid = None
    answers = ", ".join(f"{n}×{s}" for s, n in sorted(statuses.items()))
    return f"long-polling: {frames} frames over {sessions} session(s), answers {answers}"


async def row11(lab: Lab, frames: int) -> Finding:
    relay = lab.relay("frames")
    parts, problems = [], []
    for name, run in (("websocket", _frames_websocket(relay.port, frames)),
                      ("long-polling", _frames_polling(relay.url, frames))):
        size0, t0 = log_size(relay), time.monotonic()
        said = await run
        took = time.monotonic() - t0
        await asyncio.sleep(1.0)
        grew = log_size(relay) - size0
        lines = [quote(line.split(": ", 1)[-1], 90) for line in log_since(relay, size0).splitlines()]
        parts.append(f"{said}, in {took:.1f} s: log +{grew:,} B ({len(lines)} line(s)"
                     + (f": \"{lines[0]}\"" if lines else "") + ")")
        if grew > 20_000:
            problems.append(f"#11 ({name}): log +{grew:,} B for {frames} frames")
    health = (await timed("GET", f"{relay.url}/healthz"))[0]
    f = Finding(11, f"one socket, {frames} frames `40[[[…]]]` of 60 KB, without a token: over a "
                    "websocket (lean front), then over long-polling (python-socketio); log at "
                    "`info`; 1 worker, memory",
                "; ".join(parts) + f"; `/healthz` after: {health}", problems)
    lab.done(relay)
    return f


async def _anonymous_ws(port: int, opened: list[float], lives: list[float], gate: asyncio.Semaphore) -> None:
    async with gate:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}{WS_PATH}", compression=None,
                                      ping_interval=None, open_timeout=30)
        await ws.recv()  # Engine.IO OPEN; then never a CONNECT
        born = time.monotonic()
        opened.append(born)
    try:
        async for msg in ws:
            if msg == "2":
                await ws.send("3")  # answer pings like a live client
    except websockets.ConnectionClosed:
        pass
    lives.append(time.monotonic() - born)


async def _polling_alive(url: str, n: int) -> list[str]:
    sids = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"{url}/socket.io/?EIO=4&transport=polling") as resp:
                opened = await resp.text()
            sids.append(opened[opened.index('"sid":"') + 7:].split('"', 1)[0])
    return sids


async def _still_polling(url: str, sids: list[str]) -> int:
    async def one(session: aiohttp.ClientSession, sid: str) -> bool:
        try:
            async with session.get(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                                   timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        except asyncio.TimeoutError:
            return True  # a live session: the long-poll waits for data
    async with aiohttp.ClientSession() as session:
        return sum(await asyncio.gather(*(one(session, sid) for sid in sids)))


async def row14(lab: Lab, count: int, polling: int) -> Finding:
    relay = lab.relay("anonymous")
    await asyncio.sleep(1.0)
    rss0 = rss_mb(relay)
    keeper = RawViewer()
    await keeper.open(relay.port, token("shop"), "shop")
    opened: list[float] = []
    lives: list[float] = []
    gate = asyncio.Semaphore(100)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(_anonymous_ws(relay.port, opened, lives, gate)) for _ in range(count)]
    sids = await _polling_alive(relay.url, polling)
    polled = time.monotonic()

    def failed() -> int:
        return sum(1 for t in tasks if t.done() and not t.cancelled() and t.exception() is not None)
    while len(opened) + failed() < count and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.1)
    last_open = max(opened) if opened else time.monotonic()
    peak, open_at_peak = rss_mb(relay), len(opened) - len(lives)
    await asyncio.sleep(max(0.0, max(last_open, polled) + 15 - time.monotonic()))
    still = len(opened) - len(lives)
    polling_left = await _still_polling(relay.url, sids)
    lives.sort()
    await asyncio.sleep(1.0)
    rss1 = rss_mb(relay)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    kept = keeper.closed_at is None
    await keeper.close()
    per = (peak - rss0) * 1024 / max(1, open_at_peak)
    f = Finding(14, f"{count:,} websockets that answer pings but never send `40` (opened "
                    f"{len(opened):,} in {last_open - t0:.1f} s), plus {polling} long-polling "
                    "sessions that never connect; counted 15 s after the last one opened; one "
                    "viewer with a token alongside; 1 worker, memory",
                f"still open after 15 s: {still:,} of {len(opened):,} websockets, {polling_left} of "
                f"{polling} polling sessions; websockets lived {lives[0]:.1f}-{lives[-1]:.1f} s"
                if lives else f"still open after 15 s: {still:,} of {len(opened):,}")
    f.now += (f"; relay RSS {rss0:.0f} → {peak:.0f} MB with them all open (~{per:.0f} KB each "
              f"while open), {rss1:.0f} MB after; the viewer with a token "
              + ("stayed connected" if kept else "was disconnected"))
    if still or polling_left or not kept or len(opened) < count:
        f.problems.append(f"#14: {still} websockets and {polling_left} polling sessions open after "
                          f"15 s, {count - len(opened)} never opened, token viewer kept: {kept}")
    lab.done(relay)
    return f


@dataclass
class Siege:
    text: str
    failed: bool


async def websocket_siege(relay: RelayProcess, n: int, seconds: float) -> Siege:
    """``n`` websockets that never send CONNECT, each reopened as soon as it is closed, for
    ``seconds``; meanwhile /healthz is probed and a viewer with a token tries to connect."""
    stop = asyncio.Event()
    held = Counter[str]()

    async def holder() -> None:
        while not stop.is_set():
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{relay.port}{WS_PATH}", compression=None,
                                              ping_interval=None, open_timeout=5)
                await ws.recv()
                held["opened"] += 1
                closed = asyncio.create_task(ws.wait_closed())
                await asyncio.wait([closed, asyncio.create_task(stop.wait())],
                                   return_when=asyncio.FIRST_COMPLETED)
                await ws.close()
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                held["refused"] += 1
                await asyncio.sleep(0.1)

    holders = [asyncio.create_task(holder()) for _ in range(n)]
    await asyncio.sleep(1.0)
    probe = Prober(f"{relay.url}/healthz", every=0.2, timeout=3).start()
    viewer = RawViewer()
    try:
        await asyncio.wait_for(viewer.open(relay.port, token("shop"), "shop"), 5)
        joined = "connected"
    except Exception as err:  # noqa: BLE001 - what the viewer sees is the figure
        joined = f"failed ({type(err).__name__})"
    await viewer.close()
    await asyncio.sleep(max(0.0, seconds - 1.0 - (time.monotonic() - probe.t0)))
    await probe.stop()
    stop.set()
    await asyncio.gather(*holders, return_exceptions=True)
    ok = sum(1 for _, status, _ in probe.samples if status == 200)
    text = (f"{held['opened']:,} websocket opens without a token in {seconds:g} s ({held['refused']:,} "
            f"refused); `/healthz` {ok}/{len(probe.samples)} answered 200; a viewer with a token: {joined}")
    return Siege(text, ok < len(probe.samples) or joined != "connected")
