"""`modelserve loadtest` against the running platform: met SLOs pass, a violated SLO fails the
run by name, and every protocol's user (gRPC included) reports its requests.

Tests never depend on this machine's speed: the passing case uses SLOs no working server can
miss; the demo SLOs (gateway/loadgen/demo/slo.yaml) are enforced by the CI gate
(loadtests/ci_gate.sh)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.loadgen import LOCUSTFILE
from tests.e2e.conftest import Platform
from tests.support import ROOT

pytestmark = pytest.mark.e2e
TIMEOUT_S = 60


def loadtest(platform: Platform, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "modelserve"), "loadtest", *args,
               "--url", platform.url, "--grpc-url", platform.grpc_target,
               "--reports", str(reports)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(handle)}


def test_loadtest_passes_met_slos_over_every_protocol(platform: Platform, tmp_path: Path) -> None:
    slo = tmp_path / "lenient.yaml"
    slo.write_text("services:\n  sklearn-iris: {p50_ms: 30000, p95_ms: 30000, p99_ms: 30000,"
                   " max_error_ratio: 0, min_rps: 0.1}\n")
    done = loadtest(platform, tmp_path, "sklearn-iris", "--slo", str(slo), "--duration", "5s",
                    "--users", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    rows = stats_rows(tmp_path / "sklearn-iris_stats.csv")
    for name in ("POST v1 sklearn-iris", "POST v2 sklearn-iris", "POST v2-binary sklearn-iris",
                 "grpc ModelInfer sklearn-iris"):
        assert int(rows[name]["Request Count"]) > 0, name
        assert rows[name]["Failure Count"] == "0", name
    assert (tmp_path / "sklearn-iris.html").stat().st_size > 0


def test_the_users_payloads_win_over_the_demo_ones(platform: Platform, tmp_path: Path) -> None:
    payloads = tmp_path / "payloads"
    payloads.mkdir()
    # Only a v2 request (the demo directory has a v1 one too): no v1 user runs.
    (payloads / "sklearn-iris.v2.json").write_text(
        '{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4],'
        ' "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}'
    )
    slo = tmp_path / "lenient.yaml"
    slo.write_text("services:\n  sklearn-iris: {p50_ms: 30000, p95_ms: 30000, p99_ms: 30000,"
                   " max_error_ratio: 0, min_rps: 0.1}\n")
    done = loadtest(platform, tmp_path, "sklearn-iris", "--slo", str(slo), "--payloads",
                    str(payloads), "--duration", "3s", "--users", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = stats_rows(tmp_path / "sklearn-iris_stats.csv")
    assert {"POST v2 sklearn-iris", "POST v2-binary sklearn-iris",
            "grpc ModelInfer sklearn-iris"} <= set(rows)
    assert not any(" v1 " in name for name in rows)
    v2 = rows["POST v2 sklearn-iris"]
    assert int(v2["Request Count"]) > 0 and v2["Failure Count"] == "0"


def test_violated_slo_exits_1_and_names_it(platform: Platform, tmp_path: Path) -> None:
    slo = tmp_path / "strict.yaml"
    slo.write_text("services:\n  sklearn-iris: {p50_ms: 0.001, p95_ms: 0.001, p99_ms: 60,"
                   " max_error_ratio: 0.01, min_rps: 1}\n")
    done = loadtest(platform, tmp_path, "sklearn-iris", "--slo", str(slo), "--duration", "2s",
                    "--users", "2", "--protocols", "grpc")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL sklearn-iris p95 " in done.stdout and "> 0.001 ms" in done.stdout
    assert int(stats_rows(tmp_path / "sklearn-iris_stats.csv")[
        "grpc ModelInfer sklearn-iris"]["Request Count"]) > 0


def test_locustfile_alone_checks_slos_when_quitting(platform: Platform, tmp_path: Path) -> None:
    slo = tmp_path / "strict.yaml"
    slo.write_text("services:\n  iris-classifier: {p50_ms: 60, p95_ms: 60, p99_ms: 60,"
                   " max_error_ratio: 0, min_rps: 1000000}\n")
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
               "--headless", "--only-summary", "-u", "2", "-r", "2", "-t", "2s",
               "--host", platform.url, "--exit-code-on-error", "0"]
    env = {**os.environ, "LOADTEST_SERVICE": "iris-classifier", "LOADTEST_SLO": str(slo)}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL iris-classifier rps " in done.stderr
