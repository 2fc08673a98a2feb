"""Rows of the reconnect-storm benchmark and their plain-text / Markdown tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from report import percentile

COLUMNS = [
    "target",
    "scenario",
    "viewers (hit/all)",
    "back",
    "recovery s",
    "p50 / p99 s",
    "conn→snap p50 / p99 / max ms",
    "srv stall ms",
    "client stall ms",
    "lost / stale",
    "non-2xx",
    "srv CPU s",
    "client cores",
    "other cores",
]


@dataclass
class Row:
    """One (target, scenario) measurement. Times are ms unless named otherwise."""

    target: str
    scenario: str
    viewers: int
    affected: int
    back: int  # affected viewers subscribed again at the end
    recovery_ms: float | None  # event -> the last affected viewer's snapshot ack
    from_event_ms: list[float]  # per affected viewer, event -> its snapshot ack (sorted)
    conn_to_snap_ms: list[float]  # per affected viewer, its successful attempt's start -> ack
    server_stall_ms: float | None  # the server's own event-loop stall measure, during the storm
    client_stall_ms: float | None  # longest GET /healthz on a kept-alive connection, during the storm
    lost: int  # accepted updates a viewer never got, nor anything newer of its instance
    stale: int  # viewers whose final state is older than their instance's newest accepted event
    non2xx: int
    server_cpu_s: float
    client_cores: float
    other_cores: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.back == self.affected and self.lost == 0 and self.stale == 0

    def cells(self) -> list[str]:
        p = self.from_event_ms
        c = self.conn_to_snap_ms
        return [
            self.target,
            self.scenario,
            f"{self.affected:,} / {self.viewers:,}",
            f"{self.back:,}",
            _num(None if self.recovery_ms is None else self.recovery_ms / 1e3, 2),
            f"{_num(_s(percentile(p, 0.5)), 2)} / {_num(_s(percentile(p, 0.99)), 2)}",
            f"{_num(percentile(c, 0.5), 0)} / {_num(percentile(c, 0.99), 0)} / "
            f"{_num(c[-1] if c else None, 0)}",
            _num(self.server_stall_ms, 0),
            _num(self.client_stall_ms, 0),
            f"{self.lost} / {self.stale}",
            str(self.non2xx),
            f"{self.server_cpu_s:.2f}",
            f"{self.client_cores:.2f}",
            f"{self.other_cores:.2f}",
        ]


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile of sorted ``values`` (index floor(q * n)), None when empty."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table (numbers right-aligned)."""
    grid = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(grid):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + "|"
    return "\n".join([head, sep, *("| " + " | ".join(r.cells()) + " |" for r in rows)])


LEGEND = """\
scenario: *drop* = every viewer's TCP connection is reset by the client at once, each viewer
reconnects at a uniformly random moment of the next --window s; *restart* = one of the two server
processes is SIGKILLed (relay: a uvicorn worker, restarted by its supervisor; Node: one peer,
restarted on the same port by the harness at once) and its viewers reconnect after a random
0..--window s delay (and again after each failed attempt). viewers (hit/all): viewers that lost
their connection / all viewers. back: hit viewers subscribed again with a snapshot at the end.
recovery s: from the event (first cut, or the kill) to the last hit viewer's subscribe ack.
p50 / p99 s: the same per hit viewer (includes the deliberate random delay). conn→snap: from the
start of a viewer's successful attempt (TCP connect) to its subscribe ack: the server's part.
srv stall ms: longest event-loop stall during the storm (event .. last viewer back), as the
server measures it: relay = `relay_loop_lag_max_seconds` scraped every --lag-every s; Node =
bench/node_lag.js loaded into the peer (same definition: lateness of a 20 ms timer; reports >=5 ms,
"n/a" = none that long). client stall ms: the same figure seen from outside, for both servers:
longest answer to `GET /healthz` among requests sent during the storm on kept-alive connections
opened before it, 3 per server process (relay workers told apart through /proc), one request
every 50 ms each. lost: accepted updates (2xx) that a viewer neither received (as an update or in its subscribe snapshot) nor saw superseded by a newer one of its
instance; stale: viewers whose final state is older than their instance's newest accepted update,
after the load stopped and --grace s passed. non-2xx: webhooks of the scenario not answered 2xx
(connection errors included). srv CPU s: CPU seconds of the server's processes during the storm
(a killed worker up to its last sample, a new one from its birth). client cores: CPU of the
viewer processes + harness during the storm / its wall time. other cores: machine busy time minus
server, redis and client over the storm: unrelated load; rows with a high value are suspect."""
