"""Row 10 of issue 9: bad input must get a 4xx, never a 5xx. A seeded fuzzer of webhook bodies:
the gateways' own payloads (shared/fixtures) with fields replaced by random JSON, the kinds the
issue found (deep nesting, `data.state` a list or an object, lone surrogates, a 5,000-character
code), bad names, and broken bytes; plus `qr.svg` of the longest code a webhook may store."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from typing import Any

from hardening_clients import Answers, http_post, post_many
from hardening_kit import Finding, Lab, quote, timed

from tests.support.clients import post, token
from tests.support.fixtures import evolution_event, fixture, fixture_paths

EVOLUTION_PATHS = ["/webhooks/evolution", "/webhooks/evolution/qrcode-updated",
                   "/webhooks/evolution/connection-update", "/webhooks/evolution/a/b/c"]
WPP_PATHS = ["/webhooks/wppconnect", "/webhooks/wppconnect?session=s1", "/webhooks/wppconnect?session="]
ODD_TEXT = ["\ud800", "\udfff", "\x00", "\n", " x ", "*", "", "x" * 201, "é" * 3000, "\u202e",
            "a" * 70_000, "2@" + "a" * 5000, "null", "[]"]


def _text(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(ODD_TEXT)
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000),
                                   rng.randrange(0xD800, 0xE000), rng.randrange(0x10000, 0x10FFFF)]))
                   for _ in range(rng.randrange(0, 24)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 10**100, rng.randrange(-10**6, 10**6)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, 1e-308, rng.random()])
    if kind in (4, 5):
        return _text(rng)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


MARK = "@@nested@@"  # stands for a deep value until the body is encoded (json.dumps recurses)


def _nest(depth: int, dicts: bool) -> bytes:
    return (b'{"a":' * depth + b'"open"' + b"}" * depth) if dicts else \
        (b"[" * depth + b'"open"' + b"]" * depth)


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*at, i))
    return out


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def _encode(rng: random.Random, body: Any) -> bytes:
    if rng.random() < 0.7:
        return json.dumps(body).encode()  # lone surrogates as \ud800 escapes
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw, invalid UTF-8


def bodies(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` (path, body) pairs, the same for the same seed."""
    rng = random.Random(seed)
    evolution = [p.stem for p in fixture_paths("evolution") if p.stem.startswith("webhook-")
                 and "headers" not in p.stem]
    wpp = [p.stem for p in fixture_paths("wppconnect") if p.stem.startswith("webhook-")]
    out: list[tuple[str, bytes]] = []
    while len(out) < n:
        kind = rng.choice(["mutate", "mutate", "mutate", "deep", "state", "odd", "code", "bytes"])
        gateway = "evolution" if rng.random() < 0.75 or not wpp else "wppconnect"
        path = rng.choice(EVOLUTION_PATHS if gateway == "evolution" else WPP_PATHS)
        body = copy.deepcopy(fixture(gateway, rng.choice(evolution if gateway == "evolution" else wpp)))
        if kind == "mutate":
            for _ in range(rng.randrange(1, 4)):
                body = _set(body, rng.choice(_paths(body)), _value(rng))
        elif kind == "deep":
            nested = _nest(rng.choice([30, 31, 32, 33, 40, 100, 1000, 3000]), rng.random() < 0.5)
            if rng.random() < 0.5:
                body = {"event": "connection.update", "instance": "x", "data": {"state": MARK}}
            else:
                body = _set(body, rng.choice(_paths(body)), MARK)
            out.append((path, json.dumps(body).encode().replace(f'"{MARK}"'.encode(), nested)))
            continue
        elif kind == "state":
            body = {"event": "connection.update", "instance": "x", "data": {"state": _value(rng, 2)}}
        elif kind == "odd":
            body = evolution_event("webhook-qrcode-updated", instance=rng.choice(ODD_TEXT + [_text(rng)]))
            path = rng.choice(EVOLUTION_PATHS)
        elif kind == "code":
            size = rng.choice([2047, 2048, 2049, 5000, 100_000])
            body = evolution_event("webhook-qrcode-updated", code="2@" + "".join(
                rng.choice("ABCdef012,+/=") for _ in range(size - 2)))
            path = rng.choice(EVOLUTION_PATHS)
        if kind == "bytes":
            raw = json.dumps(body).encode()
            cut = rng.randrange(0, len(raw) + 1)
            out.append((path, rng.choice([raw[:cut], raw[:cut] + b"\xff\xfe", bytes(
                rng.randrange(256) for _ in range(rng.randrange(1, 300))), b"\xed\xa0\x80"])))
        else:
            out.append((path, _encode(rng, body)))
    return out


async def _fuzz(ports: list[int], n: int, seed: int) -> tuple[Answers, list[tuple[str, bytes]]]:
    """The bodies spread round-robin over ``ports``; the answers' indexes are into the cases."""
    cases = bodies(n, seed)
    shards = await asyncio.gather(*(post_many(port, [http_post(p, b) for p, b in cases[k::len(ports)]],
                                              conns=2, window=16) for k, port in enumerate(ports)))
    answers = Answers(seconds=max(a.seconds for a in shards))
    for k, shard in enumerate(shards):
        answers.statuses.update(shard.statuses)
        answers.errors += [(k + i * len(ports), s, b) for i, s, b in shard.errors]
    return answers, cases


def _evidence(lab: Lab, name: str, answers: Answers, cases: list[tuple[str, bytes]]) -> str:
    """Every 5xx, unanswered or 431 request with its body, in the run's log folder; returns
    that file's name."""
    if not answers.errors:
        return ""
    out = lab.log_dir / f"fuzz-errors-{name}.txt"
    with out.open("w") as f:
        for index, status, answer in answers.errors:
            path, body = cases[index]
            f.write(f"{status} {path} answer={answer!r}\nbody={body[:2000]!r}\n\n")
    return out.name


async def _svg(url: str) -> str:
    out = []
    for size in (2048, 2049, 5000):
        status, answer = await post(f"{url}/webhooks/evolution", evolution_event(
            "webhook-qrcode-updated", instance=f"svg-{size}", code="2@" + "A1," * ((size - 2) // 3)
            + "A" * ((size - 2) % 3)))
        shown = f"webhook {status}"
        if status == 200:
            got, took, _ = await timed("GET", f"{url}/v1/instances/svg-{size}/qr.svg?token={token('*')}")
            shown += f", qr.svg {got} in {took * 1000:.0f} ms"
        out.append(f"{size:,}-character code: {shown}")
    return "; ".join(out)


async def _alone(port: int, answers: Answers, cases: list[tuple[str, bytes]]) -> str:
    """Bodies answered 431 while pipelined, sent again alone on a connection of their own."""
    again = [cases[i] for i, status, _ in answers.errors if status == 431]
    if not again:
        return ""
    alone = await post_many(port, [http_post(p, b) for p, b in again], conns=1, window=1)
    return f" (the 431 body/bodies sent alone: {alone.text()}: row 4's pipelining bug)"


async def row10(lab: Lab, in_memory: int, on_redis: int, seed: int) -> Finding:
    relay = lab.relay("fuzz")
    mem, mem_cases = await _fuzz([relay.port], in_memory, seed)
    mem_431 = await _alone(relay.port, mem, mem_cases)
    svg = await _svg(relay.url)
    lab.done(relay)
    _, w1, w2 = lab.pair("fuzz")
    red, red_cases = await _fuzz([w1.port, w2.port], on_redis, seed + 1)
    red_431 = await _alone(w1.port, red, red_cases)
    files = {"memory": _evidence(lab, "memory", mem, mem_cases), "Redis": _evidence(lab, "redis", red, red_cases)}
    f = Finding(10, f"{in_memory:,} fuzzed webhook bodies on 1 worker in memory and {on_redis:,} "
                    f"on 2 workers on Redis (seed {seed}; sent pipelined, 16 at a time per "
                    "connection; fixtures with random fields, deep "
                    "nesting, `data.state` list/object, lone surrogates escaped and raw, long "
                    "codes, bad names, broken bytes); `qr.svg` of the longest codes",
                f"memory: {mem.text()} ({mem.fivexx()} 5xx){mem_431}; Redis: {red.text()} "
                f"({red.fivexx()} 5xx){red_431}; {svg}")
    for name, answers in (("memory", mem), ("Redis", red)):
        if answers.fivexx() or answers.statuses.get(0):
            sample = "; ".join([f"{s} {quote(a.decode('utf-8', 'replace'), 80)}"
                                for _, s, a in answers.errors if s != 431][:3])
            f.problems.append(f"#10 ({name}): {answers.fivexx()} 5xx, {answers.statuses.get(0, 0)} "
                              f"unanswered: {sample}" + (f" (bodies: {files[name]})" if files[name] else ""))
    if "qr.svg 5" in svg:
        f.problems.append(f"#10: {svg}")
    return f
