"""CPU and memory of process trees, read from /proc (Linux): a server is its supervisor plus
workers (uvicorn, run.sh → node), so its cost is the sum over the tree."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is field 3, 'state')."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2:].split()


def process_tree(roots: Iterable[int]) -> list[int]:
    """The given pids plus all their live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in out or not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given live processes, in seconds."""
    ticks = 0
    for pid in pids:
        if (fields := _stat_fields(pid)) is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes (VmRSS; shared pages counted once per process, like ``ps``)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle or iowait) since boot, from /proc/stat.

    On a shared machine this shows how much CPU *other* programs took during a measurement:
    a neighbour's burst explains an outlier better than guessing."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def settled_rss(roots: Iterable[int], settle: float, tolerance: int, timeout: float,
                interval: float = 0.25) -> tuple[int, bool]:
    """RSS of the trees under ``roots`` once it has stopped moving: sampled every ``interval`` s
    until the last ``settle`` s of samples lie within ``tolerance`` bytes, or ``timeout`` s have
    passed. Returns the last sample and whether it settled.

    Why wait: allocators and runtimes hand memory back late (V8's memory reducer returns ~20 MiB
    per Node process 8-30 s after a burst), and a sample taken before that charges start-up
    garbage to whatever is being measured."""
    roots = list(roots)
    window = max(2, int(settle / interval))
    samples: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        samples.append(rss_bytes(process_tree(roots)))
        recent = samples[-window:]
        settled = len(recent) == window and max(recent) - min(recent) <= tolerance
        if settled or time.monotonic() > deadline:
            return recent[-1], settled
        time.sleep(interval)
