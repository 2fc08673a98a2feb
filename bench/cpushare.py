"""How the kernel shares the CPUs between a run's processes: each process on its own, for every
target alike.

With autogroup (``kernel.sched_autogroup_enabled = 1``, the default of many distributions) the
kernel shares the CPUs between sessions first, then within each one. Every server process is
started in a session of its own (tests/support/procs.py). So the relay's workers, children of one
``relay serve``, would share one session's share, while each Node peer process has a whole one.
Measured on a 2-core machine at 1,000 ev/s, same code, three runs each way: the relay's p99 was
42-165 ms with its two workers in one group, 26-64 ms with one group each.

Autogroup applies only to processes in the root CPU cgroup. So a run moves itself, and with it
everything it starts, into a CPU cgroup of its own. There the kernel schedules every process on
its own, as in a container. This needs a writable CPU cgroup (root); the group is left in place
(empty once the run is over) for the next run. Without one, the report's header says how the
CPUs were shared.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
V1 = Path("/sys/fs/cgroup/cpu")  # cgroup v1: the cpu controller's own hierarchy
V2 = Path("/sys/fs/cgroup")  # cgroup v2: one hierarchy, controllers enabled per subtree
NAME = "relay-bench"

_line = "scheduling: not set up (bench/cpushare.py share_cpu() was not called)"


def _current_group() -> str | None:
    """This process's CPU cgroup ("/" for the root), or None when it cannot be told."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    for line in lines:  # v2: a group counts only where the cpu controller is enabled
        if line.startswith("0::"):
            path = line[3:]
            try:
                enabled = (V2 / path.lstrip("/") / "cgroup.controllers").read_text().split()
            except OSError:
                return None
            return path if path == "/" or "cpu" in enabled else "/"
    return None


def _own_group() -> Path:
    """Make (or reuse) the run's CPU cgroup; raises OSError when it cannot be made."""
    if (V1 / "cgroup.procs").exists():
        group = V1 / NAME
    else:
        if "cpu" not in (V2 / "cgroup.controllers").read_text().split():
            raise OSError(0, "no cpu controller")
        (V2 / "cgroup.subtree_control").write_text("+cpu")
        group = V2 / NAME
    group.mkdir(exist_ok=True)
    return group


def share_cpu() -> str:
    """Schedule this run's processes each on its own (see the module's doc); returns the line
    the report's header carries. Call it first thing: what was started before stays where it
    is."""
    global _line
    try:
        autogroup = AUTOGROUP.read_text().strip() == "1"
    except OSError:
        autogroup = False
    current = _current_group()
    if not autogroup:
        _line = "scheduling: autogroup off, every process scheduled on its own"
    elif current not in (None, "/"):
        _line = (f"scheduling: in CPU cgroup {current}, where autogroup does not apply: every "
                 "process scheduled on its own")
    else:
        try:
            group = _own_group()
            (group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as err:
            _line = ("scheduling: autogroup ON, and no CPU cgroup could be made "
                     f"({err.strerror or err}): each session is scheduled as one group, so the "
                     "relay's workers share one while each Node process has its own (run as root "
                     "to schedule every process on its own)")
        else:
            _line = (f"scheduling: this run in CPU cgroup /{NAME}, where autogroup does not "
                     "apply: every process scheduled on its own, as in a container")
    return _line


def scheduling_line() -> str:
    """What :func:`share_cpu` did, for the report's header."""
    return _line

