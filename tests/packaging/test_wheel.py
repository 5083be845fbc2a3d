"""The package users install: the wheel built from this checkout, installed into a fresh venv
in a temporary folder and run from a folder that is not the checkout: `build-models`, `up` on
a manifest there, `loadtest` with the user's SLO file (and then the user's payloads), and the
dashboard reading that SLO file and the report `loadtest` wrote.

The wheel is built from a copy of the checkout's files (tracked and untracked, not ignored), so
a stale `build/` here cannot slip files into it. uv installs from its cache (offline first, the
index only when the cache lacks something).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import ROOT, free_ports, read_admin_token, wait_ready

pytestmark = pytest.mark.e2e
UV = Path(sys.executable).parent / "uv"
UV_TIMEOUT_S = 300
BUILD_MODELS_TIMEOUT_S = 300
LOADTEST_TIMEOUT_S = 120
# What the wheel carries besides Python modules: the dashboard's page, and the demo payloads
# and SLOs that are `loadtest`'s and the dashboard's defaults; and the Locust users.
SHIPPED = (
    "gateway/controlplane/api/dashboard/static/index.html",
    "gateway/controlplane/api/dashboard/static/app.js",
    "gateway/controlplane/api/dashboard/static/style.css",
    "gateway/loadgen/locustfile.py",
    "gateway/loadgen/users.py",
    "gateway/loadgen/grpc_user.py",
    "gateway/loadgen/bodies.py",
    "gateway/loadgen/shapes.py",
    "gateway/loadgen/demo/slo.yaml",
    "gateway/loadgen/demo/payloads/sklearn-iris.v1.json",
    "gateway/loadgen/demo/payloads/sklearn-iris.v2.json",
    "gateway/loadgen/demo/payloads/tf-digits.tfserving.json",
)
# Targets no working server misses (tests never depend on this machine's speed): what is
# checked is that the user's file is the one applied.
USER_SLO = {"p50_ms": 5000, "p95_ms": 10000, "p99_ms": 20000, "max_error_ratio": 0,
            "min_rps": 1}
# The user's own request: two rows, v2 only (the demo payloads have a v1 one too).
USER_V2 = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4],
                       "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}


def _uv(*args: str) -> None:
    """`uv ARGS`, from the cache alone first; with the index if the cache lacks something."""
    for offline in (["--offline"], []):
        done = subprocess.run([str(UV), *args, *offline], capture_output=True, text=True,
                              timeout=UV_TIMEOUT_S)
        if done.returncode == 0:
            return
    raise AssertionError(f"uv {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `uv build --wheel` makes from a copy of the checkout."""
    if not UV.is_file():
        pytest.fail(f"{UV} is missing: `make install` puts uv in the venv")
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=30,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is not there
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _uv("build", "--quiet", "--wheel", "--out-dir", str(dist), str(source))
    (built,) = dist.glob("modelserve-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the checkout with the wheel, its `sklearn` extra (the demo
    predictor and `build-models`) and Locust (`loadtest` runs it)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    _uv("venv", "--quiet", "--python", sys.executable, str(where))
    _uv("pip", "install", "--quiet", "--python", str(where / "bin" / "python"),
        f"modelserve[sklearn] @ {wheel.as_uri()}", "locust>=2.29")
    return where


def test_the_wheel_ships_the_dashboard_the_locust_users_and_the_demo_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in SHIPPED if name not in names] == []
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} <= {
        "servers", "gateway", "demos"
    }
    assert "tests" not in tops and "loadtests" not in tops


@dataclass
class _Up:
    """`modelserve up` of the installed venv, and where it listens."""

    url: str
    grpc_target: str
    admin_url: str
    token: str


def _environ(runtime_dir: Path) -> dict[str, str]:
    """This environment without the checkout's venv and settings: what a user's shell has."""
    kept = {k: v for k, v in os.environ.items()
            if not k.startswith(("MODELSERVE_", "LOADTEST_", "PYTHON", "VIRTUAL_ENV"))}
    return {**kept, "PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": str(runtime_dir)}


@contextmanager
def _up(modelserve: Path, work: Path, env: dict[str, str], *args: str) -> Iterator[_Up]:
    """`modelserve up ARGS` in `work` on free loopback ports; SIGTERM (then SIGKILL) after."""
    port, grpc_port, admin_port = free_ports(3)
    log = work / "up.log"
    command = [str(modelserve), "up", *args, "--port", str(port), "--grpc-port",
               str(grpc_port), "--admin-port", str(admin_port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log, timeout=120)
        token = read_admin_token(Path(env["XDG_RUNTIME_DIR"]), admin_port)
        yield _Up(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}",
                  f"http://127.0.0.1:{admin_port}", token)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _loadtest(modelserve: Path, work: Path, env: dict[str, str], up: _Up,
              *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(modelserve), "loadtest", "sklearn-iris", "--url", up.url, "--grpc-url",
               up.grpc_target, "--duration", "5s", "--users", "4", *args]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=LOADTEST_TIMEOUT_S)


def _stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(handle)}


def test_installed_modelserve_serves_and_meets_the_users_slos_outside_the_checkout(
    venv: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT) and not venv.resolve().is_relative_to(ROOT)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = _environ(runtime)
    modelserve = venv / "bin" / "modelserve"

    built = subprocess.run([str(modelserve), "build-models", "--out", "models"], cwd=work,
                           env=env, capture_output=True, text=True,
                           timeout=BUILD_MODELS_TIMEOUT_S)
    assert built.returncode == 0, built.stdout + built.stderr
    assert (work / "models" / "iris").is_dir(), built.stdout + built.stderr
    # The demo manifest as a user would copy it: pvc://modelserve-models/iris is ./models/iris.
    shutil.copy(ROOT / "inferenceservices" / "sklearn-iris.yaml", work / "sklearn-iris.yaml")
    (work / "my-slo.yaml").write_text(yaml.safe_dump({"services": {"sklearn-iris": USER_SLO}}))
    (work / "my-payloads").mkdir()
    (work / "my-payloads" / "sklearn-iris.v2.json").write_text(json.dumps(USER_V2))

    with _up(modelserve, work, env, "sklearn-iris.yaml", "--slo", "my-slo.yaml") as up:
        # The demo payloads (shipped in the wheel) against the user's SLOs.
        done = _loadtest(modelserve, work, env, up, "--slo", "my-slo.yaml")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SLO" in done.stdout and "pass" in done.stdout and "FAIL" not in done.stdout
        assert re.search(r"^p99 +<= 20000 ms", done.stdout, re.MULTILINE), done.stdout
        rows = _stats(work / "loadtest-reports" / "sklearn-iris_stats.csv")
        assert int(rows["POST v1 sklearn-iris"]["Request Count"]) > 0

        # The dashboard reads the user's SLO file and the report `loadtest` wrote next to it.
        slo = httpx.get(f"{up.admin_url}/v1/slo", timeout=30,
                        headers={"authorization": f"Bearer {up.token}"}).json()
        assert (work / slo["slo_file"]).resolve() == (work / "my-slo.yaml").resolve()
        service = slo["services"]["sklearn-iris"]
        assert service["targets"] == USER_SLO
        assert service["report_error"] is None and service["report"]["measured"]["requests"] > 0

        # The user's own payloads instead of the demo ones: no v1 user, v2 over every protocol.
        mine = _loadtest(modelserve, work, env, up, "--slo", "my-slo.yaml",
                         "--payloads", "my-payloads", "--reports", "mine")
        assert mine.returncode == 0, mine.stdout + mine.stderr
        rows = _stats(work / "mine" / "sklearn-iris_stats.csv")
        assert not [name for name in rows if " v1 " in name]
        for name in ("POST v2 sklearn-iris", "POST v2-binary sklearn-iris",
                     "grpc ModelInfer sklearn-iris"):
            assert int(rows[name]["Request Count"]) > 0, name
            assert rows[name]["Failure Count"] == "0", name
