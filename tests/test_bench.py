"""bench/ builds on tests/support: its scripts must still start, from any working directory,
when a helper here changes (the benchmarks themselves are too slow and noisy for the suite)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.fixtures import REPO


def run_probe(tmp_path: Path, code: str, *args: str, text: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess[Any]:
    """``code`` in a fresh Python started in ``tmp_path``, its argv bench/ and the repository
    (as the bench scripts put them first on their path), then ``args``."""
    return subprocess.run([sys.executable, "-c", code, str(REPO / "bench"), str(REPO), *args],
                          cwd=tmp_path, capture_output=True, text=text, timeout=timeout)


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
    result = run_probe(tmp_path, probe)
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
    result = run_probe(tmp_path, probe, text=False)
    assert result.returncode == 0, result.stderr.decode()
    head, _, raw = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /webhooks/evolution HTTP/1.1\r\n")
    assert f"Content-Length: {len(raw)}".encode() in head.split(b"\r\n")
    body = json.loads(raw)
    assert body["event"] == "connection.update" and body["instance"] == "storm-8"
    assert body["data"] == {"instance": "storm-8", "state": "connecting", "statusReason": 200}
    assert body["date_time"] == "2026-12-01T21:16:42.697Z"


def test_bench_targets_include_the_relay_on_a_cluster(tmp_path: Path) -> None:
    probe = ("import sys; sys.path[:0] = sys.argv[1:]; from params import parse_args; "
             "print(parse_args(None, ['--targets', 'relay,relay-cluster,node']).targets); "
             "parse_args(None, ['--targets', 'cluster'])")
    result = run_probe(tmp_path, probe)
    assert result.stdout.strip() == "['relay', 'relay-cluster', 'node']", result.stderr
    assert result.returncode == 2 and "unknown target 'cluster'" in result.stderr


CLUSTER_PROBE = """
import json, sys, threading, time
from pathlib import Path
sys.path[:0] = sys.argv[1:3]
from stores import TargetUnavailable, new_store

logs = Path(sys.argv[3])
store = new_store("cluster", logs)
store.start()
out = {"url": store.url, "pids": store.pids, "base": str(store.cluster.base)}
store.stop()
store.stop()
# Stopped from another thread while it starts (Ctrl-C): the start gives up at once.
late = new_store("cluster", logs / "late")
errors = []
def start():
    try:
        late.start()
    except TargetUnavailable as err:
        errors.append(str(err))
thread = threading.Thread(target=start)
thread.start()
deadline = time.monotonic() + 20
while len(late.pids) < 3 and time.monotonic() < deadline:
    time.sleep(0.005)
out["late_pids"] = late.pids
t0 = time.monotonic()
late.stop()
thread.join(20)
out.update(abort_s=time.monotonic() - t0, abort_errors=errors, late_base=str(late.cluster.base))
print(json.dumps(out))
"""


def test_bench_cluster_store_is_every_node_and_stops_even_while_starting(tmp_path: Path) -> None:
    """The relay-cluster target's Redis: three masters whose CPU the bench sums, all stopped
    (also when stopped during its start, as on Ctrl-C), their logs kept."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: run `make test` (it installs it)")
    result = run_probe(tmp_path, CLUSTER_PROBE, str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["url"].startswith("redis+cluster://127.0.0.1:") and out["url"].count(",") == 2
    assert len(out["pids"]) == 3 and len(out["late_pids"]) == 3
    assert out["abort_s"] < 12 and out["abort_errors"] and "did not start" in out["abort_errors"][0]
    for pid in out["pids"] + out["late_pids"]:
        assert not Path(f"/proc/{pid}").exists(), f"redis-server {pid} outlived stop()"
    assert not Path(out["base"]).exists() and not Path(out["late_base"]).exists()
    assert len(list(tmp_path.glob("redis-*-cluster.log"))) == 3


CPU_SHARE_PROBE = """
import subprocess, sys
sys.path[:0] = sys.argv[1:3]
from cpushare import share_cpu
line = share_cpu()
child = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True).stdout
print(line)
print(child)
"""


def test_bench_runs_every_process_as_its_own_cpu_entity(tmp_path: Path) -> None:
    """Autogroup would schedule the relay's workers (one session) as one group and each Node
    process as its own: a run moves itself into a CPU cgroup, which its children inherit, or
    says in its header that it could not."""
    result = run_probe(tmp_path, CPU_SHARE_PROBE)
    assert result.returncode == 0, result.stderr
    line, _, child = result.stdout.partition("\n")
    assert line.startswith("scheduling: "), line
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    on = autogroup.exists() and autogroup.read_text().strip() == "1"
    if "this run in CPU cgroup /relay-bench" in line:
        groups = [entry.split(":", 2) for entry in child.splitlines() if entry.count(":") >= 2]
        cpu = [path for _, controllers, path in groups if "cpu" in controllers.split(",")] \
            or [path for number, _, path in groups if number == "0"]
        assert cpu == ["/relay-bench"], child
    elif not on:
        assert "autogroup off" in line, line
    elif "where autogroup does not apply" not in line:  # already in a CPU cgroup of its own
        assert "no CPU cgroup could be made" in line and "run as root" in line, line
