"""Rows 3 and 13 of issue 9: a gateway's error on one instance, and a Redis that hangs under
load."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from hardening_clients import RawViewer, http_post, post_many
from hardening_kit import Finding, Lab, Prober, levels, log_since, log_size, ms, timed
from hardening_state import stamp

from relay.fakes import EvolutionEmulator
from tests.support.clients import token
from tests.support.fixtures import evolution_event
from tests.support.relay import RelayProcess

ERROR_TEXT = "Evolution could not start instance bad"


async def row3(lab: Lab, instances: int) -> Finding:
    emu = EvolutionEmulator()
    emu.connect_errors["bad"] = ERROR_TEXT
    await emu.start()
    try:
        for n in range(instances):
            emu.add_instance(f"tenant-{n}")
        emu.add_instance("bad")
        relay = lab.relay("gateway", {"RELAY_EVOLUTION_URL": emu.url, "RELAY_EVOLUTION_APIKEY": emu.apikey,
                                      "RELAY_GATEWAY_PROBE_INTERVAL": "1"})
        known = await post_many(relay.port, [http_post("/webhooks/evolution", json.dumps(evolution_event(
            "webhook-connection-update-close", instance=f"tenant-{n}")).encode()) for n in range(instances)])
        watched = [f"tenant-{n}" for n in (0, 7, instances // 2, instances - 1)]
        viewers = []
        for name in watched:
            v = RawViewer()
            await v.open(relay.port, token(name), name)
            viewers.append(v)
        victim = RawViewer()
        await victim.open(relay.port, token("bad"), "bad")
        await asyncio.sleep(1.0)
        before = len(emu.requests)
        auth = {"Authorization": f"Bearer {token('bad')}"}
        status, took, answer = await timed("POST", f"{relay.url}/v1/instances/bad/connect", headers=auth)
        await asyncio.sleep(3.0)
        calls = Counter(r.path.rsplit("/", 1)[0] if r.path.count("/") > 2 else r.path
                        for r in emu.requests[before:])
        seen = [s for v in viewers for _, s in v.updates[1:]]
        leaked = [s for s in seen if "bad" in json.dumps(s)]
        bad_seen = [s for _, s in victim.updates[1:]]
        before = len(emu.requests)
        again = Counter([(await timed("POST", f"{relay.url}/v1/instances/bad/connect", headers=auth,
                                      timeout=5))[0] for _ in range(10)])
        again_calls = sum(1 for r in emu.requests[before:] if r.path == "/instance/connect/bad")
        outage = await _gateway_outage(emu, viewers)
        for v in viewers + [victim]:
            await v.close()
    finally:
        await emu.stop()
    detail = answer.get("detail") if isinstance(answer, dict) else answer
    f = Finding(3, f"Evolution emulator answering `{{\"error\":true}}` for `bad`; {instances:,} "
                   f"instances known to it and to the relay ({known.text()} webhooks); viewers of "
                   f"{len(watched)} other tenants and of `bad`; one `connect` with a token for "
                   "`bad` only, then 10 more; then the gateway stopped and restarted (probe every "
                   "1 s here, default 10 s) and the calls of the recovery counted; 1 worker, memory",
                f"connect: {status} \"{detail}\" in {ms(took)}; gateway calls in the 3 s after "
                "(`fetchInstances` is the probe's): "
                f"{dict(calls) or 'none'}; other tenants' viewers got {len(seen)} update(s), "
                f"{len(leaked)} mentioning `bad`; `bad`'s viewer got {len(bad_seen)}"
                + (f" (upstream.ok {bad_seen[-1]['upstream']['ok']})" if bad_seen else "")
                + f"; 10 more connects in a row: {dict(again)}, {again_calls} reached the gateway"
                + (" (`connect` is not rate-limited)" if again_calls >= 10 else "") + f"; {outage}")
    caused = sum(n for path, n in calls.items() if path != "/instance/fetchInstances")  # the probe's
    if seen or caused > 1 or status < 400 or status >= 600:
        f.problems.append(f"#3: other tenants got {len(seen)} updates, calls {dict(calls)}, "
                          f"connect {status}")
    return f


async def _gateway_outage(emu: EvolutionEmulator, viewers: list[RawViewer]) -> str:
    """Stop the gateway until every viewer is told, start it again on the same port: how long
    each took, and which calls the relay made to resync."""
    port, t0 = emu.port, time.monotonic()
    await emu.stop()
    while not all(v.paused_at for v in viewers) and time.monotonic() - t0 < 15:
        await asyncio.sleep(0.1)
    told = time.monotonic() - t0
    before, t1 = len(emu.requests), time.monotonic()
    await emu.start(port)

    def ok() -> bool:
        return all(v.latest is not None and v.latest["upstream"]["ok"] for v in viewers)
    while not ok() and time.monotonic() - t1 < 15:
        await asyncio.sleep(0.1)
    back = time.monotonic() - t1
    await asyncio.sleep(3.0)
    calls = Counter(r.path.rsplit("/", 1)[0] if r.path.count("/") > 2 else r.path
                    for r in emu.requests[before:])
    return (f"gateway stopped: {sum(1 for v in viewers if v.paused_at)}/{len(viewers)} viewers told "
            f"in {told:.1f} s; restarted: all clear again in {back:.1f} s, gateway calls in the "
            f"{back + 3:.0f} s after: {dict(calls)}")


@dataclass
class _Gateway:
    """Posts QR updates like a gateway: unique codes, each retried until 200 (Evolution retries
    5xx), alternating workers; keeps every attempt."""

    workers: list[RelayProcess]
    accepted: dict[str, str] = field(default_factory=dict)
    attempts: list[tuple[float, float, int]] = field(default_factory=list)  # (start, seconds, status)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, instance: str, period: float, offset: float) -> None:
        await asyncio.sleep(offset)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            k = 0
            while not self.stop.is_set():
                k += 1
                code = f"2@{instance}-{k}," + "x" * 40
                body = evolution_event("webhook-qrcode-updated", instance=instance, code=code, date_time=stamp())
                while True:
                    url = f"{self.workers[(k + len(self.attempts)) % 2].url}/webhooks/evolution"
                    t0 = time.monotonic()
                    try:
                        async with session.post(url, json=body) as resp:
                            status = resp.status
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        status = 0
                    self.attempts.append((t0, time.monotonic() - t0, status))
                    if status == 200:
                        self.accepted[instance] = code
                        break
                    await asyncio.sleep(0.25)
                await asyncio.sleep(period)


async def row13(lab: Lab, stop_for: float) -> Finding:
    store, w1, w2 = lab.pair("hang")
    workers = [w1, w2]
    instances = [f"fault-{i}" for i in range(10)]
    viewers = []
    for n in range(50):
        v = RawViewer()
        await v.open(workers[n % 2].port, token(instances[n % 10]), instances[n % 10])
        viewers.append(v)
    gateway = _Gateway(workers)
    load = [asyncio.create_task(gateway.run(i, 0.5, n / 20)) for n, i in enumerate(instances)]
    await asyncio.sleep(3.0)
    sizes = [log_size(w) for w in workers]
    probes = [Prober(f"{w.url}/readyz", every=0.5, timeout=20).start() for w in workers]
    stopped = time.monotonic()
    store.pause()
    await asyncio.sleep(stop_for)
    store.resume()
    resumed = time.monotonic()
    for p in probes:
        await p.stop()
    logged = "".join(log_since(w, s) for w, s in zip(workers, sizes))
    await asyncio.sleep(3.0)
    gateway.stop.set()
    await asyncio.gather(*load)
    final = dict(gateway.accepted)

    def stale() -> list[RawViewer]:
        return [v for v in viewers if v.latest is None or v.code != final.get(v.latest["instance"])
                or not v.latest["upstream"]["ok"]]
    ended = time.monotonic()
    while stale() and time.monotonic() - ended < 30:
        await asyncio.sleep(0.1)
    caught_up = time.monotonic() - ended
    left = len(stale())
    closed = sum(v.closed_at is not None for v in viewers)
    for v in viewers:
        await v.close()
    told = [v.paused_at - stopped for v in viewers if v.paused_at is not None and v.paused_at > stopped]
    during = [(s, t, c) for s, t, c in gateway.attempts if stopped <= s < resumed]
    statuses = Counter(c for _, _, c in during)
    bad = Counter(c for _, _, c in gateway.attempts if c >= 500 and c != 503)
    ready = [(status, took) for p in probes for _, status, took in p.samples]
    first_503 = [min((at + took for at, status, took in p.samples if status == 503), default=None)
                 for p in probes]
    said_503 = "/".join(f"{t:.1f} s" if t is not None else "never" for t in first_503)
    f = Finding(13, f"Redis SIGSTOPped {stop_for:g} s (then SIGCONT) under load: 50 viewers over "
                    "10 instances and ~20 QR webhooks/s, each retried until 200 (as Evolution "
                    "does); `/readyz` of each worker probed every 0.5 s; 2 workers on Redis",
                f"viewers told \"paused\": {len(told)}/50, after "
                + (f"{statistics.median(told):.1f} s median, {max(told):.1f} s max" if told else "—")
                + f"; webhook attempts started during the stop: {dict(statuses)} (the 200s "
                "answered after SIGCONT), longest answer "
                f"{ms(max((t for _, t, _ in during), default=0))}; other 5xx in the run: "
                f"{dict(bad) or 'none'}; `/readyz` during the stop: "
                f"{dict(Counter(s for s, _ in ready))}, longest {ms(max((t for _, t in ready), default=0))}, "
                f"first 503 at {said_503} (worker 1/2); "
                f"after SIGCONT every viewer showed the last accepted QR with upstream ok "
                + (f"{caught_up:.1f} s after the load stopped" if not left else f"— NOT: {left} stale after 30 s")
                + f" ({closed} viewers disconnected); log during the stop: {levels(logged)}")
    slowest = max((t for _, t in ready), default=0.0)
    if len(told) < 50 or max(told, default=99) > 4 or bad or left or slowest > 2 \
            or max((t for _, t, _ in during), default=0) > 3:
        f.problems.append(f"#13: told {len(told)}/50 (max {max(told, default=0):.1f} s), other 5xx "
                          f"{dict(bad)}, stale {left}, readyz longest {slowest:.1f} s")
    return f
