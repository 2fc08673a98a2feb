"""The package type-checks (mypy, settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.fixtures import REPO


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "relay"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
