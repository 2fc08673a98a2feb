"""Rows 1, 2 and 8 of issue 9: the state in Redis (the restore race, a name that could deafen a
worker, how much state piles up)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp
import redis

from hardening_clients import RawViewer, http_post, post_many
from hardening_kit import Finding, Lab, log_since, log_size, rss_mb, status_of, timed

from tests.support.clients import post, token
from tests.support.fixtures import evolution_event
from tests.support.redis import RedisServer
from tests.support.relay import RelayProcess


def stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


async def _state(session: aiohttp.ClientSession, relay: RelayProcess, instance: str) -> str:
    """What a page reading the snapshot would be told: state (+qr when a QR is served)."""
    try:
        async with session.get(f"{relay.url}/v1/instances/{instance}") as resp:
            if resp.status != 200:
                return str(resp.status)
            snap = await resp.json()
            return str(snap["state"]) + ("+qr" if snap.get("qr") else "")
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return "no answer"


async def _race(session: aiohttp.ClientSession, store: RedisServer, w1: RelayProcess, w2: RelayProcess,
                instance: str, read_during: bool, recheck: bool) -> tuple[tuple[str, str], str]:
    """One trial of the issue's race; returns both workers' states 4 s after Redis came back
    (and, when that is not `open`, what their logs said about restoring, and with ``recheck``
    the states 10 s later)."""
    qr = evolution_event("webhook-qrcode-updated", instance=instance, date_time=stamp())
    assert (await post(f"{w2.url}/webhooks/evolution", qr))[0] == 200
    cached = await _state(session, w1, instance)  # worker 1 reads it once (and caches it)
    assert cached.startswith("connecting"), cached
    opened = evolution_event("webhook-connection-update-open", instance=instance, date_time=stamp())
    assert (await post(f"{w2.url}/webhooks/evolution", opened))[0] == 200
    sizes = [log_size(w1), log_size(w2)]
    store.kill()
    store.start()
    t0 = time.monotonic()
    while read_during and time.monotonic() - t0 < 1.0:  # pages reading worker 2 meanwhile
        await _state(session, w2, instance)
    await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))  # the wait
    final = (await _state(session, w1, instance), await _state(session, w2, instance))
    if final == ("open", "open"):
        return final, ""
    said = [len([line for line in log_since(w, n).splitlines() if "restored it from" in line])
            for w, n in zip((w1, w2), sizes)]
    detail = f"{instance}: {final[0]}/{final[1]} after 4 s"
    if recheck:
        await asyncio.sleep(10.0)
        later = (await _state(session, w1, instance), await _state(session, w2, instance))
        detail += f", {later[0]}/{later[1]} 14 s after"
    return final, (detail + f"; \"restored it from this worker\" logged by worker 1: {said[0]}, "
                   f"worker 2: {said[1]}")


async def row1(lab: Lab, trials: int, read_trials: int) -> Finding:
    store, w1, w2 = lab.pair("race")
    results: dict[bool, list[tuple[tuple[str, str], str]]] = {False: [], True: []}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token('*')}"},
                                     timeout=aiohttp.ClientTimeout(total=3)) as session:
        for trial in range(trials + read_trials):
            reading = trial >= trials
            recheck = not any(detail for rows in results.values() for _, detail in rows)
            results[reading].append(await _race(session, store, w1, w2, f"race-{trial}", reading,
                                                recheck))

    def summary(rows: list[tuple[tuple[str, str], str]]) -> str:
        finals = Counter("/".join(final) for final, _ in rows)
        back = sum(1 for final, _ in rows if any(s.startswith("connecting") for s in final))
        return f"{back} of {len(rows)} back to `connecting` ({dict(finals)})"
    lost = [detail for rows in results.values() for _, detail in rows if detail]
    f = Finding(1, f"as the issue, {trials} times: QR to worker 2, `GET` on worker 1, `open` to "
                   "worker 2, Redis SIGKILLed and restarted empty, wait 4 s, read both workers; "
                   f"then {read_trials} more times with `GET`s on worker 2 back to back (as pages "
                   "reading it) in the first second after the restart; 2 workers on Redis",
                f"as the issue: {summary(results[False])}; with reads right after the restart: "
                f"{summary(results[True])}" + (f"; e.g. {lost[0]}" if lost else ""))
    if lost:
        f.problems.append(f"#1: the accepted `open` was lost and the old QR served as live in "
                          f"{len(lost)} of {trials + read_trials} trials: " + "; ".join(lost[:3])
                          + " (worker 2, which wrote `open`, did not restore it: a read of Redis "
                          "between worker 1's restore and its own seems to replace its newer "
                          "cached copy, see RedisRecords.get in relay/state/redis_records.py)")
    return f


async def row2(lab: Lab) -> Finding:
    store, w1, w2 = lab.pair("names")
    workers = [w1, w2]
    viewers = []
    for i in range(10):
        v = RawViewer()
        await v.open(workers[i % 2].port, token("shop"), "shop")
        viewers.append(v)
    acks = []
    raws = []
    for i in range(6):
        raw = RawViewer()
        await raw.open(workers[i % 2].port, token("*"), "probe")
        raws.append(raw)
        acks.append(await raw.call("subscribe", {"instance": "\ud800"}))
    codes = Counter(a["error"]["code"] if isinstance(a, dict) and not a.get("ok") else "ok" for a in acks)
    star = token("*")
    entry = {
        "webhook": (await post(f"{w1.url}/webhooks/evolution", None,
                               raw=b'{"event":"connection.update","instance":"\\ud800",'
                                   b'"data":{"state":"open"}}'))[0],
        "SSE": await status_of(f"{w1.url}/v1/instances/%ED%A0%80/events?token={star}"),
        "REST": await status_of(f"{w2.url}/v1/instances/%ED%A0%80?token={star}"),
    }
    with redis.Redis(port=store.port) as client:
        killed = client.client_kill_filter(_type="pubsub")
    t0 = time.monotonic()
    tries = 0
    for n in range(8):
        body = evolution_event("webhook-qrcode-updated", instance="shop", code=f"2@n{n},a,b,c",
                               date_time=stamp())
        for _ in range(50):  # while the listeners re-subscribe a webhook may get a 503: retried
            tries += 1
            if (await post(f"{workers[n % 2].url}/webhooks/evolution", body))[0] == 200:
                break
            await asyncio.sleep(0.1)
    while time.monotonic() - t0 < 10 and not all(v.code == "2@n7,a,b,c" for v in viewers):
        await asyncio.sleep(0.05)
    took = time.monotonic() - t0
    got = sum(v.code == "2@n7,a,b,c" for v in viewers)
    anything = sum(any(s.get("qr") for _, s in v.updates[1:]) for v in viewers)
    ready = [(await timed("GET", f"{w.url}/readyz", timeout=5))[0] for w in workers]
    for v in viewers + raws:
        await v.close()
    f = Finding(2, "as the issue: 10 viewers of `shop` over both workers; six raw sockets with a "
                   "`[\"*\"]` token subscribe `\"\\ud800\"`; `CLIENT KILL TYPE pubsub`; 8 webhooks "
                   "(each retried until 200); also the name by webhook (`\\ud800` in JSON) and "
                   "its UTF-8 bytes in SSE and REST URLs (`%ED%A0%80`, which the server decodes "
                   "to U+FFFD×3, a valid name); 2 workers on Redis",
                f"subscribe acks: {dict(codes)}; webhook/SSE/REST with that name: "
                f"{entry['webhook']}/{entry['SSE']}/{entry['REST']}; {killed} pub/sub connection(s) "
                f"killed; {got} of 10 viewers showed the 8th webhook's QR ({anything} got updates) "
                f"{took:.1f} s after the kill ({tries} posts for 8 webhooks); `/readyz` {ready}")
    if got < 10 or ready != [200, 200] or codes.get("ok") or any(s >= 500 for s in entry.values()):
        f.problems.append(f"#2: {got}/10 viewers updated, readyz {ready}, acks {dict(codes)}, "
                          f"other entry points {entry}")
    return f


def _ttl_stats(port: int) -> tuple[int, dict[str, list[int]]]:
    """(keys, every TTL in seconds by kind of key: the name up to the instance's hash tag)."""
    with redis.Redis(port=port) as client:
        keys = list(client.scan_iter(count=5000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        ttls = [int(t) for t in pipe.execute()]
    kinds: dict[str, list[int]] = {}
    for key, ttl in zip(keys, ttls):
        kinds.setdefault(key.decode("utf-8", "replace").split("{", 1)[0], []).append(ttl)
    return len(keys), kinds


def _ttl_text(kinds: dict[str, list[int]]) -> str:
    def span(ttls: list[int]) -> str:
        lo, hi = min(ttls), max(ttls)
        unit, div = ("days", 86400) if lo >= 86400 else ("min", 60)
        return f"{lo / div:.1f}-{hi / div:.1f} {unit}" if lo >= 0 else f"{lo}-{hi} s"
    return ", ".join(f"{len(t):,} `{k}…` (TTL {span(t)}, {sum(1 for x in t if x < 0)} without)"
                     for k, t in sorted(kinds.items()))


def _used_mb(port: int) -> float:
    with redis.Redis(port=port) as client:
        return int(client.info("memory")["used_memory"]) / 2**20


async def _spread(workers: list[RelayProcess], reqs: list[bytes], window: int = 32) -> Any:
    """Half the requests to each worker; ``window`` 1 sends each after the last one's answer,
    as gateways do (pipelined large bodies meet another bug: see row 4)."""
    halves = await asyncio.gather(*(post_many(w.port, reqs[k::2], conns=2, window=window)
                                    for k, w in enumerate(workers)))
    out = halves[0]
    out.statuses.update(halves[1].statuses)
    out.errors += halves[1].errors
    return out


async def row8(lab: Lab, names: int, big: int) -> Finding:
    store, w1, w2 = lab.pair("bounds")
    workers = [w1, w2]
    await asyncio.sleep(1.0)
    rss0, used0 = [rss_mb(w) for w in workers], _used_mb(store.port)
    base = evolution_event("webhook-qrcode-updated")
    reqs = []
    for i in range(names):
        base["instance"] = base["data"]["instance"] = base["data"]["qrcode"]["instance"] = f"name-{i}"
        reqs.append(http_post("/webhooks/evolution", json.dumps(base).encode()))
    named = await _spread(workers, reqs)
    await asyncio.sleep(1.0)
    keys, kinds = _ttl_stats(store.port)
    ttls = [t for values in kinds.values() for t in values]
    rss1, used1 = [rss_mb(w) for w in workers], _used_mb(store.port)
    image = "data:image/png;base64," + "A" * 900_000
    bigs = [http_post("/webhooks/evolution", json.dumps(evolution_event(
        "webhook-qrcode-updated", instance=f"big-{i}", image=image)).encode()) for i in range(big)]
    big_answers = await _spread(workers, bigs, window=1)
    _, _, snap = await timed("GET", f"{w2.url}/v1/instances/big-0?token={token('big-0')}")
    kept = "image kept" if isinstance(snap, dict) and (snap.get("qr") or {}).get("image") else "image dropped"
    await asyncio.sleep(1.0)
    rss2, used2 = [rss_mb(w) for w in workers], _used_mb(store.port)
    # Today's worst case: images as large as allowed (256 KB), with no code (nothing to drop).
    worst = [http_post("/webhooks/wppconnect", json.dumps({
        "event": "qrcode", "session": f"worst-{i}",
        "qrcode": "data:image/png;base64," + "A" * 250_000}).encode()) for i in range(big)]
    worst_answers = await _spread(workers, worst, window=1)
    await asyncio.sleep(1.0)
    rss3, used3 = [rss_mb(w) for w in workers], _used_mb(store.port)
    no_expiry = sum(1 for t in ttls if t < 0)

    def rss(values: list[float]) -> str:
        return "/".join(f"{v:.0f}" for v in values)
    f = Finding(8, f"{names:,} instance names by QR webhook ({len(reqs[0])} B each), then {big} QRs "
                   f"with 900 KB images (with their code), then {big} QRs of 250 KB images without "
                   "a code (today's largest kept: 256 KB); spread over 2 workers on Redis; the "
                   "large ones one at a time per connection, as gateways send",
                f"names: {named.text()} in {named.seconds:.0f} s; {keys:,} Redis keys: "
                f"{_ttl_text(kinds)}; worker RSS {rss(rss0)} → {rss(rss1)} MB, Redis used_memory {used0:.0f} → "
                f"{used1:.0f} MB; 900 KB QRs: {big_answers.text()}, {kept}, RSS {rss(rss2)} MB, "
                f"Redis {used2:.0f} MB; 250 KB worst case: {worst_answers.text()}, RSS {rss(rss3)} "
                f"MB, Redis {used3:.0f} MB")
    if no_expiry or kept == "image kept" or max(rss3) > 400 or named.fivexx():
        f.problems.append(f"#8: {no_expiry} keys without TTL, 900 KB {kept}, RSS {rss(rss3)} MB, "
                          f"names {named.text()}")
    return f
