"""Issue 9 ("Hardening: a bad day and a hostile network, measured") as filed: each row's finding
and what was seen then, quoted; and the table that puts this run's figures beside them."""

from __future__ import annotations

import textwrap

from hardening_kit import Finding

# (finding, in short; reproduced by, then; seen, then), quoted from the issue's table.
ISSUE: dict[int, tuple[str, str, str]] = {
    1: ("Restore after Redis came back empty can put back older state",
        "QR posted to worker 2; `GET` the snapshot on worker 1; `open` posted to worker 2; Redis "
        "SIGKILLed and restarted empty; wait 4 s",
        "in 2 of 6 trials the state went back to `connecting` with the old QR served as live; "
        "the accepted `open` lost"),
    2: ("One bad name stops every worker's updates (lone surrogate `\"\\ud800\"` in the broker's "
        "channel set)",
        "six raw sockets with a `[\"*\"]` token subscribe `\"\\ud800\"`; `CLIENT KILL TYPE pubsub`; "
        "8 webhooks",
        "0 of 10 viewers got anything; `/readyz` 503 on both workers (a balancer drops every relay)"),
    3: ("One viewer can make every tenant's page say \"gateway unreachable\"",
        "gateway answers `{\"error\":true}` for instance `bad`; 3,000 instances; one `connect` with "
        "a token for `bad` only",
        "a viewer of another tenant saw \"Evolution could not start instance bad\"; 3,001 "
        "`connectionState` calls to the gateway from one request"),
    4: ("Unauthenticated CPU/memory exhaustion with huge request headers",
        "one connection sends `GET /healthz` with a 200 MB header",
        "41.7 s of CPU in 41.5 s; `/healthz` median 4.9 s; RSS 56 → 265 MB"),
    5: ("Webhooks are open by default, silently",
        "no `RELAY_WEBHOOK_SECRET`; `POST /webhooks/evolution` with an attacker's QR",
        "200; start-up says nothing"),
    6: ("Slowloris: no header/body timeout, no connection limit",
        "4,000 half-open requests; a relay under `ulimit -n 1024`",
        "all open after 45 s; 1,008 half-open requests made every new request fail, nothing logged"),
    7: ("Sessions outlive their token: `exp` is checked only at connect",
        "3 s token; Socket.IO subscribed and SSE open; wait 6 s",
        "both still received updates; a second subscribe still `ok`"),
    8: ("Unbounded state: no cap on instances, no expiry, expired QR images kept; cache capped by "
        "count, not bytes",
        "50,000 instance names by webhook; 400 QRs with 900 KB images",
        "100,069 Redis keys, TTL -1; worker RSS 72 → 392 MB, Redis +416 MB; worst case ~10 GB per "
        "worker"),
    9: ("Tokens and the webhook secret in logs",
        "handshakes to `/socket.io/?…&token=JWT`, `/webhooks/evolution/<secret>`",
        "4 INFO lines with the full JWT and the secret"),
    10: ("5xx on bad input (deep nesting, `data.state` list/object, lone surrogates, 5,000-char "
         "code for `qr.svg`)",
         "3,000 fuzzed bodies in memory, 4,000 on Redis",
         "195×500 + 2×503; 257×500 + 3×503"),
    11: ("Log flooding without a token: a traceback per malformed CONNECT frame",
         "one socket, 300 frames `40[[[…]]]` of 60 KB",
         "log +988 KB in 2.1 s"),
    12: ("`RELAY_SECRET` equal to `RELAY_WEBHOOK_SECRET` lets any viewer inject QRs; no warning",
         "both set alike; webhook with `Bearer <viewer token for A>` for instance B",
         "200 `updated:true`"),
    13: ("A Redis hang (SIGSTOP) is not seen for 15 s",
         "10 s SIGSTOP under load",
         "no \"updates paused\" for viewers; webhooks held up to 10 s; `/readyz` took 6.2 s to "
         "answer"),
    14: ("Unauthenticated Engine.IO sockets that never send CONNECT stay open forever",
         "2,000 sockets answering pings, never sending `40`",
         "all open ≥ 55 s, ~30 KB each"),
    15: ("Smaller: JWT without `exp`, `\"*\"` and 60 KB names, no subscription cap, origins `*` "
         "and a 1-character admin key silent, an ERROR line per failed webhook in an outage",
         "(no reproduction given)", "(no figure given)"),
}

HEAD = ["#", "finding", "reproduced by (this run)", "seen then (issue 9)", "seen now (this run)"]
WIDTHS = [3, 24, 38, 34, 60]


def cells(f: Finding) -> list[str]:
    finding, _, then = ISSUE[f.num]
    return [str(f.num), finding, f.how, then, f.now]


def markdown(findings: list[Finding]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|---:|---|---|---|---|"]
    for f in findings:
        out.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells(f))
                   + " |")
    return "\n".join(out)


def text(findings: list[Finding]) -> str:
    """The same table for a terminal: fixed columns, cells wrapped."""
    def line(values: list[list[str]]) -> list[str]:
        height = max(len(v) for v in values)
        return [" | ".join((v[i] if i < len(v) else "").ljust(w) for v, w in zip(values, WIDTHS))
                .rstrip() for i in range(height)]

    rule = "-+-".join("-" * w for w in WIDTHS)
    out = line([[h] for h in HEAD]) + [rule]
    for f in findings:
        out += line([textwrap.wrap(c, w) or [""] for c, w in zip(cells(f), WIDTHS)]) + [rule]
    return "\n".join(out)
