"""Rows 5, 7, 9, 12 and 15 of issue 9: who may post and watch, for how long, and what the log
keeps of it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt as pyjwt
import socketio
import websockets

from hardening_clients import RawViewer, http_post, post_many
from hardening_kit import HOOK_SECRET, Finding, Lab, levels, log_since, log_size, quote, refusal, timed

from tests.support.clients import post, token
from tests.support.fixtures import evolution_event
from tests.support.procs import free_port
from tests.support.rawsio import WS_PATH, handshake
from tests.support.relay import SECRET


def _said(text: str, *needles: str) -> list[str]:
    return [quote(line.split(": ", 1)[-1], 130) for line in text.splitlines()
            if any(n in line for n in needles)]


async def row5(lab: Lab) -> Finding:
    relay = lab.relay("open")
    said = _said(log_since(relay), "RELAY_WEBHOOK_SECRET", "webhooks need no secret")
    attack = evolution_event("webhook-qrcode-updated", instance="victim", code="2@ATTACKER,QR,x,y")
    open_status, answer = await post(f"{relay.url}/webhooks/evolution", attack)
    code, line = await asyncio.to_thread(refusal, {}, ["--host", "192.0.2.1", "--port", str(free_port())],
                                         lab.log_dir, "no-secret-off-loopback")
    locked = lab.relay("locked", {"RELAY_WEBHOOK_SECRET": HOOK_SECRET})
    locked_status, _ = await post(f"{locked.url}/webhooks/evolution", attack)
    f = Finding(5, "attacker's QR posted to `/webhooks/evolution` with no secret: on a relay "
                   "without `RELAY_WEBHOOK_SECRET` on 127.0.0.1, on one with it set; and "
                   "`relay serve --host 192.0.2.1` (a TEST-NET address this machine does not "
                   "have: a refusal comes before any bind) without it",
                f"127.0.0.1, no secret: {open_status} {json.dumps(answer)}, start-up says: "
                + ("; ".join(f"\"{s}\"" for s in said) or "nothing")
                + f"; with the secret set: {locked_status}; --host 192.0.2.1 without it: "
                + (f"exit {code}, \"{quote(line)}\"" if code is not None else "STARTED"))
    if not said or locked_status != 401 or code in (None, 0) or "RELAY_WEBHOOK_SECRET" not in line:
        f.problems.append(f"#5: warning {said}, locked relay {locked_status}, off-loopback exit "
                          f"{code}: {line}")
    return f


class _Sse:
    """An SSE stream: the times of its events and of its end."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []  # (time, event, data)
        self.ended_at: float | None = None

    async def run(self, url: str) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                buf, event = "", "message"
                async for chunk in resp.content.iter_any():
                    buf += chunk.decode()
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        for line in block.splitlines():
                            if line.startswith("event: "):
                                event = line[7:]
                            elif line.startswith("data: "):
                                self.events.append((time.monotonic(), event, line[6:]))
                                event = "message"
        self.ended_at = time.monotonic()


async def row7(lab: Lab) -> Finding:
    relay = lab.relay("expiry")
    tok = token("shop", "shop2", ttl=3)
    exp = time.monotonic() + pyjwt.decode(tok, options={"verify_signature": False})["exp"] - time.time()
    start = time.monotonic()
    ws = RawViewer()
    await ws.open(relay.port, tok, "shop")
    poll = socketio.AsyncClient(reconnection=False)
    got: list[tuple[float, Any]] = []
    gone: list[float] = []
    poll.on("update", lambda snap: got.append((time.monotonic(), snap)))
    poll.on("disconnect", lambda *_: gone.append(time.monotonic()))
    await poll.connect(relay.url, transports=["polling"], auth={"token": tok}, wait_timeout=10)
    await poll.call("subscribe", {"instance": "shop"}, timeout=10)
    sse = _Sse()
    reading = asyncio.create_task(sse.run(f"{relay.url}/v1/instances/shop/events?token={tok}"))
    posted: dict[str, float] = {}
    again: dict[str, Any] = {}

    async def second_subscribe() -> None:  # just past exp, before the 1 s sweep closes it
        await asyncio.sleep(max(0.0, exp + 0.02 - time.monotonic()))
        again["websocket"] = await ws.call("subscribe", {"instance": "shop2"})
        try:
            again["polling"] = await poll.call("subscribe", {"instance": "shop2"}, timeout=3)
        except Exception as err:  # noqa: BLE001 - what a client sees is the figure
            again["polling"] = type(err).__name__
    second = asyncio.create_task(second_subscribe())
    k = 0
    while time.monotonic() < start + 6:  # the wait
        k += 1
        code = f"2@expiry-{k},a,b,c"
        posted[code] = time.monotonic()
        await post(f"{relay.url}/webhooks/evolution", evolution_event(
            "webhook-qrcode-updated", instance="shop", code=code, date_time=f"2025-10-21T11:41:{k:02d}.000Z"))
        await asyncio.sleep(0.5)
    await second
    late = {c for c, t in posted.items() if t > exp}

    def after(codes: list[str]) -> int:
        return sum(1 for c in codes if c in late)
    ws_codes = [s["qr"]["code"] for _, s in ws.updates if s.get("qr")]
    poll_codes = [s["qr"]["code"] for _, s in got if isinstance(s, dict) and s.get("qr")]
    sse_codes = [json.loads(d)["qr"]["code"] for _, e, d in sse.events
                 if e == "update" and json.loads(d).get("qr")]
    expired = [t for t, e, _ in sse.events if e == "expired"]
    status, _, _ = await timed("GET", f"{relay.url}/v1/instances/shop/events?token={tok}", timeout=3)
    retry = RawViewer()
    try:
        await retry.open(relay.port, tok, "shop")
        reconnect = "accepted"
    except Exception as err:  # noqa: BLE001
        reconnect = quote(str(err), 60)
    await retry.close()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await ws.close()
    await poll.disconnect()

    def at(t: float | None) -> str:
        return f"exp{t - exp:+.1f} s" if t is not None else "never"
    f = Finding(7, f"token living {exp - start:.1f} s (JWT `exp` is whole seconds, `ttl=3`); one "
                   "Socket.IO viewer over websocket, one over long-polling, one SSE stream, all "
                   f"subscribed; a QR webhook every 0.5 s for 6 s ({k} posted, {len(late)} after "
                   "`exp`); a second subscribe just after `exp`",
                f"updates received after `exp`: websocket {after(ws_codes)}, polling "
                f"{after(poll_codes)}, SSE {after(sse_codes)}; websocket closed at {at(ws.closed_at)} "
                f"(Socket.IO disconnect at {at(ws.disconnect_at)}), polling disconnected at "
                f"{at(gone[0] if gone else None)}, SSE `event: expired` at "
                f"{at(expired[0] if expired else None)} and ended at {at(sse.ended_at)}; second "
                f"subscribe: websocket {json.dumps(again.get('websocket'))}, polling "
                f"{json.dumps(again.get('polling'))}; reconnect with the expired token: "
                f"{reconnect}; SSE with it: {status}")
    if after(ws_codes) or after(poll_codes) or after(sse_codes) or reconnect == "accepted" \
            or any(isinstance(a, dict) and a.get("ok") for a in again.values()):
        f.problems.append(f"#7: updates posted after the token's `exp` still reached the viewer: "
                          f"websocket {after(ws_codes)} (closed at {at(ws.closed_at)}), polling "
                          f"{after(poll_codes)}, SSE {after(sse_codes)}; second subscribe {again}; "
                          f"reconnect {reconnect}")
    return f


async def row9(lab: Lab) -> Finding:
    relay = lab.relay("logs", {"RELAY_WEBHOOK_SECRET": HOOK_SECRET})
    jwt = token("shop")
    url, ws_url = relay.url, f"ws://127.0.0.1:{relay.port}"
    async with websockets.connect(f"{ws_url}{WS_PATH}&token={jwt}", compression=None) as ws:
        await handshake(ws, jwt, "shop")
    tried = 1
    for path in (f"/elsewhere?token={jwt}", f"/webhooks/evolution/{HOOK_SECRET}?token={jwt}",
                 f"/socket.io/?EIO=3&transport=websocket&token={jwt}"):
        tried += 1
        try:
            async with websockets.connect(f"{ws_url}{path}"):
                pass
        except (websockets.InvalidStatus, websockets.InvalidHandshake, OSError):
            pass
    body = evolution_event("webhook-qrcode-updated", instance="shop")
    hooks = [(await post(f"{url}/webhooks/evolution/{HOOK_SECRET}", body))[0],
             (await post(f"{url}/webhooks/evolution/not-{HOOK_SECRET}", body))[0],
             (await post(f"{url}/webhooks/evolution", body,
                         headers={"Authorization": f"Bearer {jwt}"}))[0]]
    gets = [(await timed("GET", f"{url}{p}", timeout=2))[0] for p in (
        f"/socket.io/?EIO=4&transport=polling&token={jwt}", f"/v1/instances/shop?token={jwt}",
        f"/nowhere?token={jwt}")]
    await asyncio.sleep(0.5)
    text = log_since(relay)
    leaks = [quote(line, 100) for line in text.splitlines()
             if jwt in line or HOOK_SECRET in line or SECRET in line]
    socket_lines = _said(text, "WebSocket")
    f = Finding(9, f"log at `info` from start-up on; {tried} websocket handshakes with "
                   "`?token=JWT` (`/socket.io/`, `/elsewhere`, `/webhooks/evolution/<secret>`, "
                   "EIO=3); webhooks to `/webhooks/evolution/<secret>`, a wrong secret, a viewer "
                   "JWT as Bearer; GETs with `?token=` (polling handshake, REST, 404)",
                f"{len(leaks)} line(s) with the JWT, the webhook secret or RELAY_SECRET, of "
                f"{len(text.splitlines())} ({levels(text)}); webhooks {hooks}, GETs {gets}; "
                "websocket lines: " + ("; ".join(f"\"{s}\"" for s in socket_lines[:3]) or "none"))
    if leaks:
        f.problems.append(f"#9: secrets in the log: {leaks[:3]}")
    return f


async def row12(lab: Lab) -> Finding:
    code, line = await asyncio.to_thread(refusal, {"RELAY_WEBHOOK_SECRET": SECRET},
                                         ["--port", str(free_port())], lab.log_dir, "same-secret")
    relay = lab.relay("secrets", {"RELAY_WEBHOOK_SECRET": HOOK_SECRET})
    body = evolution_event("webhook-qrcode-updated", instance="B", code="2@INJECTED,x,y,z")
    now = int(time.time())
    forged = pyjwt.encode({"instances": ["*"], "exp": now + 600}, HOOK_SECRET, algorithm="HS256")
    tries = {"Bearer <viewer token for A>": (await post(f"{relay.url}/webhooks/evolution", body,
             headers={"Authorization": f"Bearer {token('A')}"}))[0],
             "viewer-shaped JWT signed with the webhook secret": (await post(
                 f"{relay.url}/webhooks/evolution", body, headers={"Authorization": f"Bearer {forged}"}))[0],
             "viewer token as the path secret": (await post(
                 f"{relay.url}/webhooks/evolution/{token('A')}", body))[0]}
    f = Finding(12, "`relay serve` with RELAY_WEBHOOK_SECRET = RELAY_SECRET; then, secrets "
                    "apart, a webhook for instance B carrying a viewer token for A (three ways)",
                ("same secrets: " + (f"exit {code}, \"{quote(line)}\"" if code is not None else "STARTED"))
                + "; " + ", ".join(f"{k}: {v}" for k, v in tries.items()))
    if code in (None, 0) or any(v != 401 for v in tries.values()):
        f.problems.append(f"#12: same secrets exit {code}; injections {tries}")
    return f


async def _outage_lines(lab: Lab, n: int) -> tuple[str, int]:
    redis = lab.redis()
    relay = lab.relay("outage", {"RELAY_REDIS_URL": redis.url})
    redis.kill()
    await asyncio.sleep(1.0)
    size0 = log_size(relay)
    reqs = [http_post("/webhooks/evolution", json.dumps(evolution_event(
        "webhook-connection-update-open", instance=f"out-{i}")).encode()) for i in range(n)]
    answers = await post_many(relay.port, reqs, conns=4, window=8)
    await asyncio.sleep(1.0)
    text = log_since(relay, size0)
    lines = _said(text, " ")
    return (f"{answers.text()} in {answers.seconds:.1f} s with Redis killed: {len(lines)} log "
            f"line(s) ({levels(text)})" + (f", e.g. \"{lines[0]}\"" if lines else "")), len(lines)


async def row15(lab: Lab) -> Finding:
    relay = lab.relay("small", {"RELAY_WEBHOOK_SECRET": HOOK_SECRET})
    hook = f"{relay.url}/webhooks/evolution"
    body = evolution_event("webhook-qrcode-updated")
    now = int(time.time())
    forever = pyjwt.encode({"app": "evolution"}, HOOK_SECRET, algorithm="HS256")
    fresh = pyjwt.encode({"app": "evolution", "exp": now + 600}, HOOK_SECRET, algorithm="HS256")
    out = [f"webhook JWT without `exp`: {(await post(hook, body, headers={'Authorization': f'Bearer {forever}'}))[0]} "
           f"(with `exp`: {(await post(hook, body, headers={'Authorization': f'Bearer {fresh}'}))[0]})"]
    for name, label in (("*", "`\"*\"`"), ("x" * 201, "201 characters"), ("a\nb", "a newline")):
        status, answer = await post(f"{hook}/{HOOK_SECRET}", evolution_event(
            "webhook-qrcode-updated", instance=name))
        out.append(f"webhook name {label}: {status} {answer.get('error') if isinstance(answer, dict) else ''}")
    star = token("*")
    for size in (60_000, 201):
        status, _, answer = await timed("GET", f"{relay.url}/v1/instances/{'x' * size}/events?token={star}",
                                        timeout=5)
        out.append(f"SSE name of {size:,} characters: {status} "
                   f"{answer.get('error') if isinstance(answer, dict) else quote(str(answer), 40)}")
    viewer = RawViewer()
    await viewer.open(relay.port, star, "i0")
    acks = [await viewer.call("subscribe", {"instance": f"i{n}"}) for n in range(1, 66)]
    await viewer.close()
    ok = sum(1 for a in acks if isinstance(a, dict) and a.get("ok"))
    refused = [a["error"]["code"] for a in acks if isinstance(a, dict) and not a.get("ok")]
    out.append(f"66 subscribes on one connection: {ok + 1} ok, then {refused}")
    code, line = await asyncio.to_thread(refusal, {"RELAY_ADMIN_KEY": "x"}, ["--port", str(free_port())],
                                         lab.log_dir, "admin-key")
    out.append("RELAY_ADMIN_KEY=x: " + (f"exit {code}, \"{quote(line, 90)}\"" if code is not None else "STARTED"))
    anyone = lab.relay("origins", {"RELAY_ALLOWED_ORIGINS": "*"})
    said = _said(log_since(anyone), "RELAY_ALLOWED_ORIGINS")
    out.append("RELAY_ALLOWED_ORIGINS='*': start-up says " + (f"\"{said[0]}\"" if said else "nothing"))
    outage, outage_lines = await _outage_lines(lab, 200)
    out.append(outage)
    f = Finding(15, "each smaller finding tried: webhook JWTs with and without `exp`; bad names by "
                    "webhook and SSE; 66 subscriptions on one connection; a 1-character admin key; "
                    "origins `*`; 200 webhooks while Redis is down (1 worker on Redis)",
                "; ".join(out))
    if not out[0].startswith("webhook JWT without `exp`: 401") or ok + 1 != 64 or code in (None, 0) \
            or not said or outage_lines > 20:
        f.problems.append("#15: " + "; ".join(out[:1] + out[-4:]))
    return f
