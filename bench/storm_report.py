"""bench/storm.py's output: one row per figure, one column per configuration, as text and as
Markdown, and what did not hold (each expectation checked against the measured figures)."""

from __future__ import annotations

from collections.abc import Callable

from storm_load import SLOW
from storm_run import DRAIN, STALL_LINE, Result, Window


Row = tuple[str, Callable[[Result], str]]


def n(value: float) -> str:
    return f"{value:,.0f}"


def core(cpu: float, seconds: float) -> str:
    return f"{100 * cpu / seconds:.1f} %" if seconds > 0 else "-"


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def log_kinds(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        kind = ("watchdog: no QR" if STALL_LINE in line else "loop stalled" if "event loop stalled" in line
                else "GC pause" if "garbage collection" in line else "other")
        out[kind] = out.get(kind, 0) + 1
    return out


def other_lines(w: Window, limit: int = 3) -> list[str]:
    seen: list[str] = []
    for line in w.log_text.splitlines():
        text = line.split(" ", 3)[-1][:160].replace("|", "/")
        if STALL_LINE not in line and text not in seen:
            seen.append(text)
    return seen[:limit]


def _events(r: Result) -> int:
    """Storm events the relay answered within the window (what its CPU in the window paid for)."""
    return r.storm.processed if r.storm else 0


def _sent(r: Result) -> int:
    return r.storm.storm.sent if r.storm else 0


def _win(r: Result) -> Window:
    assert r.window is not None
    return r.window


def _idle(r: Result) -> Window:
    assert r.idle is not None
    return r.idle


def _split(r: Result) -> str:
    w = _win(r)
    parts = [f"{'supervisor' if pid == r.root_pid and r.workers > 1 else 'worker ' + str(pid)} "
             f"{core(cpu, w.seconds)}" for pid, cpu in sorted(w.per_pid.items()) if cpu >= 0.01]
    return ", ".join(parts) or "-"


def _answers(r: Result) -> str:
    assert r.storm is not None
    t = r.storm.storm
    others = ", ".join(f"{v} × {s}" if s else f"{v} still unanswered {DRAIN:.0f} s after the storm"
                       for s, v in sorted(t.statuses.items()) if s != 200)
    return f"{n(t.statuses[200])} × 200 of {n(t.sent)}" + (f" ({others})" if others else "")


def _slow(r: Result) -> str:
    """Answers over storm_load.SLOW, grouped in bursts (gaps over 1 s), by when they were written."""
    if r.storm is None or not r.storm.storm.slow:
        return "0"
    start = r.storm.window[0]
    bursts: list[list[float]] = []
    for written, seconds in sorted(r.storm.storm.slow):
        if not bursts or written - bursts[-1][1] > 1.0:
            bursts.append([written, written, 0, 0.0])
        burst = bursts[-1]
        burst[1], burst[2], burst[3] = written, burst[2] + 1, max(burst[3], seconds)
    parts = [f"{int(b[2])} written at +{b[0] - start:.1f}-{b[1] - start:.1f} s (max {1000 * b[3]:.0f} ms)"
             for b in bursts[:3]]
    return f"{len(r.storm.storm.slow)}: " + "; ".join(parts) + ("; …" if len(bursts) > 3 else "")


def _redis_per_event(r: Result) -> str:
    w = _win(r)
    if r.name != "redis" or not _events(r):
        return "- (no Redis)"
    top = sorted(w.commands.items(), key=lambda kv: -kv[1])[:6]
    each = ", ".join(f"{k} {v / _events(r):.2f}" for k, v in top)
    return f"{sum(w.commands.values()) / _events(r):.2f} ({each})"


ROWS: list[Row] = [
    ("offered load", lambda r: f"{n(r.instances)} instances × {r.rate:g}/s = {n(r.instances * r.rate)}/s"),
    ("storm window", lambda r: f"{_win(r).seconds:.1f} s (after {r.storm.k_warm / (r.instances * r.rate):.0f} s "
                               f"of warm-up)" if r.storm else "-"),
    ("webhooks sent in window (achieved rate)", lambda r: f"{n(_sent(r))} ({n(_sent(r) / _win(r).seconds)}/s)"),
    ("answered within the window (relay's pace)", lambda r: f"{n(_events(r))} ({n(_events(r) / _win(r).seconds)}/s)"),
    ("unanswered at the window's start / end", lambda r: " / ".join(n(r.storm.at_edge[e][1])
                                                                    for e in ("start", "end")) if r.storm else "-"),
    ("answered (all 200?)", _answers),
    ("answer latency p50 / p99 / max, ms", lambda r: " / ".join(ms(r.storm.storm.latencies, q)
                                                                 for q in (0.5, 0.99, 1.0)) if r.storm else "-"),
    (f"answers over {SLOW * 1000:.0f} ms (when, into the window)", _slow),
    ("generator's worst lag behind schedule", lambda r: f"{1000 * r.storm.max_lag:.0f} ms" if r.storm else "-"),
    ("relay CPU, storm (% of one core)", lambda r: f"{core(_win(r).relay, _win(r).seconds)} "
                                                   f"({_win(r).relay:.2f} s)"),
    ("relay CPU per storm event answered", lambda r: f"{1e6 * _win(r).relay / max(1, _events(r)):.0f} µs"),
    ("relay CPU, idle, same viewers (% of one core)", lambda r: f"{core(_idle(r).relay, _idle(r).seconds)} "
                                                                f"({_idle(r).relay:.2f} s in {_idle(r).seconds:.0f} s)"),
    ("storm above idle, per event", lambda r: f"{1e6 * (_win(r).relay - _idle(r).relay * _win(r).seconds / _idle(r).seconds) / max(1, _events(r)):.0f} µs"),
    ("relay processes, storm", _split),
    ("viewer updates, warm-up (expected: one connecting each)", lambda r: f"{sum(r.updates_warm.values())} "
                                                                         f"({kinds(r.updates_warm)})"),
    ("viewer updates, storm (expected: one no_qr each)", lambda r: f"{sum(r.updates_storm.values())} "
                                                                   f"({kinds(r.updates_storm)})"),
    ("viewers ending on connecting + no_qr", lambda r: f"{r.final_ok} / {r.viewers}"),
    ("relay log lines, storm window", lambda r: f"{len(_win(r).log_text.splitlines())} "
                                                f"({kinds(log_kinds(_win(r).log_text))})"),
    ("relay log lines, idle window", lambda r: f"{len(_idle(r).log_text.splitlines())}"),
    ("relay's count of connection.update (whole run)", lambda r: kinds({k: int(v) for k, v in r.metrics.items()})),
    ("Redis commands per storm event", _redis_per_event),
    ("relay RSS, start → end of the storm window", lambda r: f"{_win(r).rss[0] / 2**20:.0f} → "
                                                            f"{_win(r).rss[1] / 2**20:.0f} MB"),
    ("Redis growth in the storm window", lambda r: f"+{n(_win(r).redis_mem[1])} keys, "
                                                   f"+{_win(r).redis_mem[0] / 2**20:.1f} MB "
                                                   f"({_win(r).redis_mem[0] / max(1, _events(r)):.0f} B per event)"
                                                   if r.name == "redis" else "-"),
    ("Redis commands/s, idle", lambda r: f"{sum(_idle(r).commands.values()) / _idle(r).seconds:.1f}"
                                         if r.name == "redis" else "-"),
    ("redis-server CPU, storm / idle", lambda r: f"{core(_win(r).redis, _win(r).seconds)} / "
                                                 f"{core(_idle(r).redis, _idle(r).seconds)}" if r.name == "redis" else "-"),
    ("load generator CPU, storm / idle (this process)", lambda r: f"{core(_win(r).client, _win(r).seconds)} / "
                                                                  f"{core(_idle(r).client, _idle(r).seconds)}"),
    ("rest of the machine, storm (other programs, kernel)", lambda r: f"{_win(r).other / _win(r).seconds:.2f} cores"),
]


def title(r: Result) -> str:
    return f"{'memory' if r.name == 'memory' else 'Redis'}, {r.workers} worker{'s' * (r.workers > 1)}"


def cells(results: list[Result]) -> list[list[str]]:
    out = []
    for label, get in ROWS:
        row = [label]
        for r in results:
            try:
                row.append(f"NOT MEASURED: {r.error}" if r.error else get(r))
            except (AssertionError, ZeroDivisionError, AttributeError, KeyError) as exc:
                row.append(f"- ({type(exc).__name__})")
        out.append(row)
    return out


def text_table(results: list[Result]) -> str:
    rows = [["", *(title(r) for r in results)], *cells(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def markdown_table(results: list[Result]) -> str:
    head = ["| | " + " | ".join(title(r) for r in results) + " |",
            "|---|" + "---|" * len(results)]
    return "\n".join(head + ["| " + " | ".join(row) + " |" for row in cells(results)])


def checks(results: list[Result]) -> list[str]:
    """What the storm should cost (no update, no log line per event), checked; notes."""
    out = []
    for r in results:
        if r.error or r.window is None or r.storm is None:
            out.append(f"{title(r)}: not measured ({r.error or 'no window'})")
            continue
        t, w = r.storm.storm, r.window
        offered = r.instances * r.rate
        if _sent(r) < 0.95 * offered * w.seconds:
            out.append(f"{title(r)}: the load generator reached {n(_sent(r) / w.seconds)}/s, "
                       f"not the {n(offered)}/s asked")
        if _events(r) < 0.95 * _sent(r):
            out.append(f"{title(r)}: the relay answered {n(_events(r) / w.seconds)}/s within the window, "
                       f"not the {n(_sent(r) / w.seconds)}/s sent: it fell behind "
                       f"({n(r.storm.at_edge['end'][1])} unanswered at the end; the machine's other "
                       f"load: {w.other / w.seconds:.2f} cores)")
        if t.statuses[200] != t.sent:
            out.append(f"{title(r)}: {t.sent - t.statuses[200]} storm webhooks not answered 200 "
                       f"({_answers(r)})")
        storm_updates = sum(r.updates_storm.values())
        if storm_updates > r.viewers or set(r.updates_storm) - {"connecting/no_qr"}:
            out.append(f"{title(r)}: viewers got {storm_updates} updates during the storm "
                       f"({kinds(r.updates_storm)}), expected at most one no_qr each")
        stalled = r.updates_storm.get("connecting/no_qr", 0)
        if stalled < r.viewers:
            out.append(f"{title(r)}: only {stalled} of {r.viewers} watched instances got their no_qr "
                       f"update during the window ({r.final_ok} ended on it)")
        lines = log_kinds(w.log_text)
        if lines.get("watchdog: no QR", 0) > r.viewers:
            out.append(f"{title(r)}: {lines['watchdog: no QR']} watchdog lines for {r.viewers} "
                       "watched instances")
        if sum(lines.values()) - lines.get("watchdog: no QR", 0):
            out.append(f"{title(r)}: other log lines in the storm window: " + " / ".join(other_lines(w)))
        if r.name == "redis" and w.commands:
            writes = {k: round(v / _events(r), 2) for k, v in w.commands.items()
                      if k in ("hset", "set", "pexpire", "publish") and v >= 0.05 * _events(r)}
            if writes:
                out.append(f"{title(r)}: Redis writes per storm event (expected none for a repeat): "
                           f"{writes}, {w.commands.get('evalsha', 0) / _events(r):.2f} EVALSHA; "
                           f"+{n(w.redis_mem[1])} keys (+{w.redis_mem[0] / 2**20:.1f} MB) in the window")
    return out
