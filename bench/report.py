"""Result rows and their plain-text / Markdown tables."""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = [
    "target",
    "workers",
    "rate ev/s (off/ach)",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lost",
    "non-2xx",
    "CPU ms/event",
    "KB/idle viewer",
    "KB/viewer marginal",
    "redis ms/event",
    "srv pause ms",
    "client gap ms",
    "client cores",
    "other cores",
]


@dataclass
class Row:
    """One (target, rate) measurement."""

    target: str
    workers: int
    offered: float
    achieved: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lost: int
    non2xx: int
    cpu_ms_per_event: float | None
    kb_per_viewer: float | None
    kb_marginal: float | None  # (RSS all - RSS half) / viewers of the second half
    redis_ms_per_event: float | None
    server_pause_ms: str  # max of the relay's loop-lag gauge, or "n/a"
    client_gap_ms: (
        float | None
    )  # longest silence between two deliveries seen by viewers
    client_cores: float
    other_cores: float  # CPU used during the step by processes that are not part of the benchmark
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        return [
            self.target,
            str(self.workers),
            f"{self.offered:g} / {self.achieved:.0f}",
            _num(self.p50_ms, 1),
            _num(self.p99_ms, 1),
            _num(self.max_ms, 1),
            str(self.lost),
            str(self.non2xx),
            _num(self.cpu_ms_per_event, 2),
            _num(self.kb_per_viewer, 1),
            _num(self.kb_marginal, 1),
            _num(self.redis_ms_per_event, 3),
            self.server_pause_ms,
            _num(self.client_gap_ms, 1),
            f"{self.client_cores:.2f}",
            f"{self.other_cores:.2f}",
        ]


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def text_table(rows: list[Row]) -> str:
    """Aligned plain-text table (numbers right-aligned)."""
    grid = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(grid):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"
    body = ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join([head, sep, *body])


LEGEND = """\
latency: `update` received by a viewer minus the webhook POST issued (same clock), all deliveries.
lost: expected (2xx events x subscribed viewers of the instance) minus distinct deliveries received
within the grace period after the step's last send. CPU and redis ms/event: utime+stime of the
server's process tree (resp. redis-server; for relay-cluster summed over every cluster node) over
the step, per 2xx event. KB/idle viewer: server tree RSS with all viewers connected and idle minus
before any connected, per viewer (RSS sampled once it has been flat for --rss-settle s). KB/viewer marginal: the same over the second half of the
viewers only: it excludes one-time growth and V8's memory-reducer drops that can hit the average
(Node's average ranged -25..+50 KB across identical runs, its marginal 12..17 KB). srv pause: max of
the server's `relay_loop_lag_max_seconds` gauge over worker-visible /metrics samples ("n/a" when not
exposed). client gap: longest interval between consecutive deliveries seen by all viewers (the
schedule's own interval is 1000/rate ms; a server stall shows up as a larger gap). client cores:
CPU of the load client (viewer processes + webhook generator) over the step / step wall time.
other cores: machine busy time (/proc/stat) minus server, redis and client, over the step: load from
unrelated programs on the same machine; rows with a high value are suspect."""


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-q * len(sorted_values) // 1)))  # ceil(q*n)
    return sorted_values[min(rank, len(sorted_values)) - 1]
