"""Rollout semantics a user can see, against a real `modelserve up` and the real CLI: rollback
after a promote says there is nothing to roll back, a failed revision keeps its component's
last output in the status, `modelserve delete` removes a service, and `up` applies the launch
policy to the manifests on its own command line."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import ROOT, Platform, free_ports, run_platform

pytestmark = pytest.mark.e2e

SKLEARN = ROOT / "inferenceservices" / "sklearn-iris.yaml"
MODELSERVE = str(Path(sys.executable).parent / "modelserve")
IRIS = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


@pytest.fixture(scope="module")
def platform(models_root: Path, logs: Path) -> Iterator[Platform]:
    with run_platform(models_root, logs, files=[SKLEARN]) as running:
        yield running


def _cli(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MODELSERVE, *args], capture_output=True, text=True, cwd=ROOT,
                          env=platform.env, timeout=120)


def _manifest(name: str, storage: str = "pvc://modelserve-models/iris") -> dict[str, Any]:
    doc = yaml.safe_load(SKLEARN.read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = name
    container = doc["spec"]["predictor"]["containers"][0]
    container["args"] = [a for a in container["args"] if not a.startswith("--model_name")]
    container["args"].append(f"--model_name={name}")
    container["env"] = [{"name": "STORAGE_URI", "value": storage}]
    return doc


def _wait(predicate: Any, what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_rollback_after_promote_exits_non_zero_saying_why(platform: Platform,
                                                          tmp_path: Path) -> None:
    doc = _manifest("iris-rollout")
    path = tmp_path / "v1.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert _cli(platform, "apply", str(path)).returncode == 0
    with platform.admin() as admin:
        _wait(lambda: admin.get("/v1/services/iris-rollout").json()["status"]
              .get("components", {}).get("predictor", {}).get("latestReadyRevision"),
              "the first revision")
    # A second revision as a canary, then promoted.
    doc["spec"]["predictor"]["canaryTrafficPercent"] = 20
    doc["spec"]["predictor"]["containers"][0]["args"].append("--max_batch_latency_us=10")
    path.write_text(yaml.safe_dump(doc))
    assert _cli(platform, "apply", str(path)).returncode == 0
    promoted = _cli(platform, "promote", "iris-rollout")
    assert promoted.returncode == 0, promoted.stderr
    rolled = _cli(platform, "rollback", "iris-rollout")
    assert rolled.returncode == 1
    assert "nothing to roll back" in rolled.stderr
    assert "no canary in progress" in rolled.stderr


def test_a_failed_revision_keeps_its_last_output(platform: Platform, models_root: Path) -> None:
    (models_root / "empty-model").mkdir(exist_ok=True)
    with platform.admin() as admin:
        created = admin.post("/v1/services",
                             json=_manifest("iris-broken", "pvc://modelserve-models/empty-model"))
        assert created.status_code == 201, created.text

        def failed() -> bool:
            conditions = admin.get("/v1/services/iris-broken").json()["status"]["conditions"]
            return any(c.get("reason") == "RevisionFailed" for c in conditions)

        _wait(failed, "the revision's failure")
        doc = admin.get("/v1/services/iris-broken").json()
        condition = next(c for c in doc["status"]["conditions"]
                         if c["type"] == "LatestDeploymentReady")
        assert condition["status"] == "False"
        message = condition["message"]
        _, _, output = message.partition("last output:")
        assert "no model file" in output, f"the output lines are missing: {message!r}"
        assert len(output.strip().splitlines()) <= 12
        [revision] = doc["status"]["modelserve"]["revisions"]
        assert revision["message"] == message
        assert admin.delete("/v1/services/iris-broken").status_code == 200


def test_delete_removes_the_service_and_stops_its_processes(platform: Platform) -> None:
    with platform.admin() as admin:
        assert admin.post("/v1/services", json=_manifest("iris-gone")).status_code == 201
        _wait(lambda: httpx.post(platform.url + "/v1/models/iris-gone:predict",
                                 json=IRIS).status_code == 200, "iris-gone serving")
        before = set(_children(platform))
    deleted = _cli(platform, "delete", "iris-gone")
    assert deleted.returncode == 0, deleted.stderr
    assert 'inferenceservice.serving.kserve.io "iris-gone" deleted' in deleted.stdout
    answer = httpx.post(platform.url + "/v1/models/iris-gone:predict", json=IRIS)
    assert answer.status_code == 404
    _wait(lambda: len(set(_children(platform))) < len(before), "the predictor to stop")
    again = _cli(platform, "delete", "iris-gone")
    assert again.returncode == 1 and "404" in again.stderr
    # The rest of the platform is untouched.
    served = httpx.post(platform.url + "/v1/models/sklearn-iris:predict", json=IRIS)
    assert served.status_code == 200


def _children(platform: Platform) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(platform.process.pid).children(recursive=True)]


def test_up_refuses_a_manifest_the_launch_policy_refuses(models_root: Path,
                                                        tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    spec = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "pwned"},
        "spec": {"predictor": {"containers": [
            {"name": "c", "image": "x", "command": ["sh", "-c", f"touch {marker}"]}
        ]}},
    }
    path = tmp_path / "pwned.yaml"
    path.write_text(yaml.safe_dump(spec))
    port, grpc_port, admin_port = free_ports(3)
    command = [MODELSERVE, "up", str(path), "--port", str(port), "--grpc-port",
               str(grpc_port), "--admin-port", str(admin_port), "--models-dir",
               str(models_root)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**platform_env(tmp_path)})
    assert done.returncode == 1
    assert "launch policy" in done.stderr and "--allow-custom-containers" in done.stderr
    assert not marker.exists()


def platform_env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
