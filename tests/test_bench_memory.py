"""bench/memory_breakdown.py still runs end to end (both modes, a few viewers, from any working
directory) and reports numbers; their values are the benchmark's business, not the suite's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.fixtures import REPO

NUMBER = r"-?\d+\.\d\d"


def test_memory_breakdown_completes_and_reports_numbers(tmp_path: Path) -> None:
    out = tmp_path / "breakdown.md"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "memory_breakdown.py"), "--n", "50",
         "--instances", "10", "--client-procs", "1", "--settle", "0.25", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = out.read_text()
    for row in ("relay.eio.connection", "python-engineio", r"\*\*traced total\*\*",
                r"\*\*RSS growth\*\*", r"\*\*native remainder\*\*",
                "kernel, not RSS: socket objects"):
        assert re.search(rf"^\| {row}[^|]* \| \**{NUMBER}\** \| \**{NUMBER}\** \|$", table,
                         re.MULTILINE), f"no numbers on the {row!r} row:\n{table}"
    assert "lean front" in table and "engine.io" in table  # both modes ran, each on its path
    assert "traced total" in result.stdout
