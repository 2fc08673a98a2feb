"""Which component a traced allocation belongs to, growth per component between two
tracemalloc snapshots, and the kernel's memory for sockets; used by bench/memory_breakdown.py in
the process that runs the relay.

An allocation belongs to the innermost frame of its traceback that lies in a relay module or a
named library ("owners": relay.*, uvicorn, httptools, socketio, engineio, websockets, starlette,
the bench harness); only when none does, to the innermost asyncio/uvloop or ssl frame. So a Queue
or Future that websockets creates is websockets', not asyncio's. Frames beyond the loop's run
(asyncio/runners.py) belong to the entry point and are ignored; an allocation with nothing above
that frame but unowned code is the loop's own: with uvloop, its transports, libuv handles and its
weak map of transports. httptools' parser is compiled (no Python frames): what it allocates shows under
uvicorn's frames that call it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

ASYNCIO = "asyncio / uvloop (transports, loop)"
OTHER = "other"

# (module, file or folder inside it or "", component, tier): tier 0 owners win over tier 1.
_RULES: list[tuple[str, str, str, int]] = [
    ("relay", "eio/connection.py", "relay.eio.connection", 0),
    ("relay", "eio/rooms.py", "relay.eio.rooms", 0),
    ("relay", "eio/front.py", "relay.eio.front", 0),
    ("relay", "eio/frames.py", "relay.eio.frames", 0),
    ("relay", "viewers.py", "relay.viewers", 0),
    ("relay", "hub.py", "relay.hub", 0),
    ("relay", "sockets.py", "relay.sockets + internals.sio", 0),
    ("relay", "internals/sio.py", "relay.sockets + internals.sio", 0),
    ("relay", "internals/http.py", "relay.internals.http + fastpath (GuardedHttp)", 0),
    ("relay", "internals/fastpath.py", "relay.internals.http + fastpath (GuardedHttp)", 0),
    ("relay", "", "relay (other modules)", 0),
    ("uvicorn", "protocols/websockets/", "uvicorn websocket protocol", 0),
    ("uvicorn", "", "uvicorn (http protocol, server)", 0),
    ("httptools", "", "httptools", 0),
    ("socketio", "", "python-socketio", 0),
    ("engineio", "", "python-engineio", 0),
    ("websockets", "", "websockets", 0),
    ("starlette", "", "starlette", 0),
    ("uvloop", "", ASYNCIO, 1),
    ("asyncio", "", ASYNCIO, 1),
    ("ssl", "", "ssl", 1),
]
ORDER = list(dict.fromkeys(component for _, _, component, _ in _RULES))
HARNESS = "bench harness (this process: viewer pool, measuring)"
ORDER += [HARNESS, OTHER]


def _where(name: str) -> str | None:
    module: ModuleType | None = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name)
        except ImportError:
            return None
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file)
    return str(path.parent if path.name == "__init__.py" else path)


class Classifier:
    """Traceback → (component, the frame that decided it, as "path:line")."""

    def __init__(self, harness: Iterable[Path]) -> None:
        self.prefixes: list[tuple[str, str, int]] = []
        for module, inside, component, tier in _RULES:
            base = _where(module)
            if base is not None:
                self.prefixes.append(((base + "/" + inside) if inside else base, component, tier))
        self.prefixes += [(str(p), HARNESS, 0) for p in harness]
        self.runner = str(Path(asyncio.__file__).parent / "runners.py")
        homes = {str(Path(where).parent) for m, _, _, _ in _RULES if (where := _where(m))}
        homes.add(str(Path(asyncio.__file__).parents[1]))  # the standard library
        self.roots = sorted(homes, key=len, reverse=True)  # paths shown relative to these
        self._files: dict[str, tuple[str, int] | None] = {}

    def _file(self, filename: str) -> tuple[str, int] | None:
        if filename not in self._files:
            hit = None
            for prefix, component, tier in self.prefixes:
                if filename == prefix or filename.startswith(prefix.rstrip("/") + "/"):
                    hit = (component, tier)
                    break
            self._files[filename] = hit
        return self._files[filename]

    def short(self, filename: str) -> str:
        for root in self.roots:
            if filename.startswith(root + "/"):
                return filename[len(root) + 1:]
        return filename

    def classify(self, frames: Iterable[tuple[str, int]]) -> tuple[str, str]:
        """``frames`` innermost first. The loop's run frame (asyncio/runners.py) is a boundary:
        what lies beyond it is the entry point, the same for every allocation."""
        best: tuple[str, str, int] | None = None
        innermost: tuple[str, int] | None = None
        for depth, (filename, lineno) in enumerate(frames):
            innermost = innermost or (filename, lineno)
            if filename == self.runner:
                if depth == 0:
                    return ASYNCIO, f"C code under the loop's run ({self.site(filename, lineno)})"
                # Python code the loop's C code called, for no owner: the loop's (e.g. uvloop's
                # WeakValueDictionary of transports).
                if best is None:
                    return ASYNCIO, f"{self.site(*innermost)}, called by the loop"
                break
            hit = self._file(filename)
            if hit is not None and hit[1] == 0:
                return hit[0], self.site(filename, lineno)
            if hit is not None and best is None:
                best = (hit[0], filename, lineno)
        if best is not None:
            return best[0], self.site(best[1], best[2])
        return OTHER, self.site(*innermost) if innermost else ""

    def site(self, filename: str, lineno: int) -> str:
        return f"{self.short(filename)}:{lineno}"


def _padding(size: int) -> int:
    """What the allocator adds to a block of ``size`` bytes (an estimate): pymalloc rounds blocks
    of up to 512 bytes to 16; glibc malloc adds an 8-byte header and rounds to 16 (at least 32)."""
    return (-size % 16) if size <= 512 else max(32, (size + 23) & ~15) - size


def attribute(classify: Classifier, base: tracemalloc.Snapshot,
              final: tracemalloc.Snapshot) -> dict[str, Any]:
    """Growth from ``base`` to ``final`` (per traceback: what was freed counts too) in bytes and
    blocks, per component and per deciding frame (the allocation site); and the allocators'
    padding of the blocks gained (taking each traceback's blocks to be of its mean size)."""
    components: dict[str, list[int]] = {}
    sites: dict[tuple[str, str], list[int]] = {}
    padding = 0
    for diff in final.compare_to(base, "traceback"):
        # Traceback: oldest frame first; the innermost decides.
        component, site = classify.classify(
            (f.filename, f.lineno) for f in reversed(diff.traceback))
        for key in (component, (component, site)):
            table: dict[Any, list[int]] = components if isinstance(key, str) else sites
            entry = table.setdefault(key, [0, 0])
            entry[0] += diff.size_diff
            entry[1] += diff.count_diff
        if diff.count:
            padding += diff.count_diff * _padding(round(diff.size / diff.count))
    top = sorted(sites.items(), key=lambda kv: -abs(kv[1][0]))[:100]
    return {"components": components, "sites": [[c, s, b, n] for (c, s), (b, n) in top],
            "traced": sum(b for b, _ in components.values()), "rounding": padding}


_SKMEM = re.compile(r"skmem:\(([^)]*)\)")


def kernel_socket_bytes(port: int) -> tuple[int, int]:
    """(sockets, bytes) of the established TCP sockets on local ``port`` as ``ss -tm`` reports
    them: receive queue + send queue + forward allocation + options + backlog (kernel memory
    charged to the socket, not in any process's RSS). (0, 0) when ss is missing."""
    try:
        out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0, 0
    sockets = total = 0
    for match in _SKMEM.finditer(out):
        fields = {k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", match.group(1))}
        sockets += 1
        total += sum(fields.get(k, 0) for k in ("r", "w", "f", "o", "bl"))
    return sockets, total


# One of each per TCP socket: the socket (tcp_sock), its inode, the open file, its dentry, and
# the epoll registration of the event loop.
SLABS = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")


def socket_struct_bytes() -> int:
    """Bytes of kernel objects one TCP socket holds, from /proc/slabinfo object sizes (an
    estimate: one object of each of SLABS); 0 when unreadable."""
    try:
        lines = Path("/proc/slabinfo").read_text().splitlines()
    except OSError:
        return 0
    sizes = {f[0]: int(f[3]) for f in (line.split() for line in lines[2:]) if len(f) > 3}
    return sum(sizes.get(name, 0) for name in SLABS)
