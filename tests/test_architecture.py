"""The shape of relay/, checked from its imports: no cycle, and the graph reads top-down
(composition root → edges → core → contracts → rules), with library internals in one module."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.fixtures import REPO

PACKAGE = REPO / "relay"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> tuple[set[str], set[str]]:
    """(relay modules, third-party top-level names) imported anywhere in a module, including
    inside functions and under TYPE_CHECKING: a cycle dodged that way is still a cycle."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("relay") else theirs).add(
                    alias.name if alias.name.startswith("relay") else alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("relay"):
                theirs.add(target)
                continue
            for alias in node.names:  # `from . import x` may name a module
                candidate = f"{target}.{alias.name}"
                ours.add(candidate if candidate in MODULES else target)
    ours.discard(name)
    return {m for m in ours if m in MODULES}, theirs


GRAPH = {name: imports_of(name)[0] for name in MODULES}
LIBS = {name: imports_of(name)[1] for name in MODULES}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle() -> None:
    cycles = sorted(name for name in MODULES if name in reachable(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def importers(target: str) -> set[str]:
    return {name for name, deps in GRAPH.items() if target in deps}


def test_layers_read_top_down() -> None:
    rules = {"relay.snapshot", "relay.rules", "relay.reasons", "relay.names", "relay.errors",
             "relay.wire", "relay.phone"}
    contracts = {m for m in MODULES if m.startswith("relay.state")}
    core = {"relay.core", "relay.hub", "relay.watchdog", "relay.reachability", "relay.ports",
            "relay.asking"}
    above_core = {"relay.app", "relay.server", "relay.cli", "relay.demo", "relay.config",
                  "relay.routes", "relay.webhooks", "relay.sockets", "relay.internals",
                  "relay.internals.sio", "relay.internals.http", "relay.internals.run",
                  "relay.http", "relay.origins", "relay.viewers"} | {
        m for m in MODULES if m.startswith(("relay.gateways", "relay.fakes"))}
    for name in rules:
        assert GRAPH[name] <= rules, f"{name} (rules) imports {GRAPH[name] - rules}"
    for name in contracts:
        bad = GRAPH[name] & (above_core | core | {"relay.metrics"})
        assert not bad, f"{name} (a contract) imports {bad}"
    for name in core:
        bad = GRAPH[name] & above_core
        assert not bad, f"{name} (the core) imports {bad}"
    # The composition root is on top: only the ways to run it import it.
    assert importers("relay.app") <= {"relay.server", "relay.demo"}
    assert importers("relay.server") <= {"relay.cli", "relay.demo"}
    # The fakes are development tools: `relay serve` never loads them.
    assert "relay.fakes" not in reachable("relay.server") | {"relay.server"}
    assert {m for m in importers("relay.fakes") if not m.startswith("relay.fakes")} <= {"relay.demo"}


def test_library_internals_stay_in_one_module() -> None:
    for name, libs in LIBS.items():
        if name.startswith("relay.internals"):
            continue
        assert not {lib for lib in libs if lib.startswith(("engineio", "uvicorn.supervisors",
                                                            "uvicorn.protocols"))}, name
    # redis-py's connections are reached into in one module (the lean lanes of the hot paths).
    assert {n for n, libs in LIBS.items() if any(lib.startswith(("redis.asyncio.connection",
            "redis._parsers")) for lib in libs)} <= {"relay.state.redis_lane"}
    # Only the root and the ways to run it know uvicorn at all.
    assert {n for n, libs in LIBS.items() if any(lib.startswith("uvicorn") for lib in libs)} <= {
        "relay.internals.run", "relay.internals.http", "relay.internals.fastpath", "relay.server",
        "relay.demo"}


def test_modules_stay_small() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"
