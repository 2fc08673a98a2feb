"""bench/ builds on tests/support: its scripts must still start, from any working directory,
when a helper here changes (the benchmarks themselves are too slow and noisy for the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import REPO


@pytest.mark.parametrize("script", ["run.py", "memory.py", "memory_breakdown.py", "hardening.py",
                                    "storm.py"])
def test_bench_script_starts_from_anywhere(script: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / script), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bench_webhook_body_is_the_fixture_at_the_wanted_size(tmp_path: Path) -> None:
    probe = ("import sys; sys.path[:0] = sys.argv[1:]; from webhooks import BodyFactory; "
             "f = BodyFactory(6144, 'BENCHtestE'); "
             "sys.stdout.write(f.body(42, 'bench-0001', 0).decode())")
    result = subprocess.run([sys.executable, "-c", probe, str(REPO / "bench"), str(REPO)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert abs(len(result.stdout) - 6144) < 64
    assert body["event"] == "qrcode.updated" and body["instance"] == "bench-0001"
    assert body["data"]["qrcode"]["code"].startswith("2@BENCHtestE0000000042X")
    assert body["data"]["qrcode"]["base64"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_bench_storm_request_is_the_captured_webhook(tmp_path: Path) -> None:
    probe = ("import sys; sys.path[:0] = sys.argv[1:]; from storm_load import requests; "
             "before, after = requests(8000, ['storm-7', 'storm-8'])[1]; "
             "sys.stdout.buffer.write(before + b'2026-12-01T21:16:42.697Z' + after)")
    result = subprocess.run([sys.executable, "-c", probe, str(REPO / "bench"), str(REPO)],
                            cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    head, _, raw = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /webhooks/evolution HTTP/1.1\r\n")
    assert f"Content-Length: {len(raw)}".encode() in head.split(b"\r\n")
    body = json.loads(raw)
    assert body["event"] == "connection.update" and body["instance"] == "storm-8"
    assert body["data"] == {"instance": "storm-8", "state": "connecting", "statusReason": 200}
    assert body["date_time"] == "2026-12-01T21:16:42.697Z"
