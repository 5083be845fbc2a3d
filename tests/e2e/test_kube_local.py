"""kubectl for real (issue 14): `modelserve up --kube-local` runs a real kube-apiserver (1.20,
`make kube`) and serves what it holds; every operator step here is the real kubectl.

One platform for the module, the steps in order (each test builds on the one before): apply,
wait Ready, get, a changed spec with a 20 % canary, rollback, promote, the `--kube` CLI, the
API server killed and restarted, `up` restarted, a spec the policy refuses, delete. Then a
second API server with KServe's full CRD for `kubectl apply --dry-run=server` of every manifest,
which `up --kube --kubeconfig` then serves a namespace of, as it would a kind cluster.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from gateway.controlplane.kube.apiserver import RECONCILER_USER, KubeNotInstalled, find_binaries
from gateway.controlplane.kube.applying import reconciler_binding, reconciler_role
from tests.support import ROOT, Platform, run_platform

KUBECTL = str(Path(sys.executable).parent / "kubectl")
MANIFEST = ROOT / "inferenceservices" / "sklearn-iris.yaml"
KSERVE_CRD = ROOT.parent / "shared" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
V2 = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                  "data": [5.1, 3.5, 1.4, 0.2]}]}
SPLIT_REQUESTS = 2000

try:
    find_binaries(ROOT / ".kube")
    NOT_BUILT = ""
except KubeNotInstalled as exc:
    NOT_BUILT = str(exc)
pytestmark = pytest.mark.skipif(bool(NOT_BUILT), reason=NOT_BUILT)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], input=input,
                            capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def isvc(kubeconfig: Path, name: str = "sklearn-iris") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", "isvc", name, "-o", "json").stdout)
    return doc


def wait_for(what: str, check: Any, timeout: float = 180.0) -> Any:
    """Poll `check()` until it returns something truthy (no timing is asserted)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def traffic(doc: dict[str, Any]) -> dict[str, int]:
    return {t["revisionName"]: t["percent"]
            for t in doc.get("status", {}).get("components", {}).get("predictor", {})
            .get("traffic", [])}


def revisions_seen(platform: Platform, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            response = client.post(f"{platform.url}/v2/models/sklearn-iris/infer", json=V2)
            assert response.status_code == 200, response.text
            seen[response.headers["x-modelserve-revision"]] += 1
    return seen


def settled(kubeconfig: Path, expected: dict[str, int]) -> dict[str, Any] | None:
    """The CR once its status is for its current generation, Ready, with `expected` traffic
    and every revision in it ready."""
    doc = isvc(kubeconfig)
    status = doc.get("status") or {}
    if status.get("observedGeneration") != doc["metadata"]["generation"]:
        return None
    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}
    revisions = {r["name"]: r["ready"] for r in status.get("modelserve", {}).get("revisions", [])}
    ok = (ready.get("Ready") == "True" and traffic(doc) == expected
          and all(revisions.get(r) for r, p in expected.items() if p))
    return doc if ok else None


@pytest.fixture(scope="module")
def kube_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kube")


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-manifests")


class Up:
    """`up --kube-local` that a test may restart (same state folder, new ports)."""

    def __init__(self, models_root: Path, logs: Path, kube_dir: Path, files: list[Path]) -> None:
        self.args = (models_root, logs, kube_dir, files)
        self._context: Any = None
        self.platform: Platform | None = None

    def start(self) -> Platform:
        models_root, logs, kube_dir, files = self.args
        self._context = run_platform(models_root, logs, files=files,
                                     args=["--kube-local", "--kube-dir", str(kube_dir)])
        self.platform = self._context.__enter__()
        return self.platform

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = self.platform = None


@pytest.fixture(scope="module")
def up(models_root: Path, logs: Path, kube_dir: Path, empty_dir: Path) -> Iterator[Up]:
    running = Up(models_root, logs, kube_dir, [empty_dir])
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def kubeconfig(up: Up, kube_dir: Path) -> Path:
    return kube_dir / "kubeconfig"


def test_up_prints_the_kubeconfig_and_grants_the_reconciler_only_what_it_needs(
    up: Up, kube_dir: Path, kubeconfig: Path
) -> None:
    assert up.platform is not None
    assert f"export KUBECONFIG={kube_dir.resolve() / 'kubeconfig'}" in up.platform.log.read_text()
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    reconciler = kube_dir / "reconciler.kubeconfig"
    allowed = {
        ("get", "inferenceservices.serving.kserve.io"): "yes",
        ("watch", "inferenceservices.serving.kserve.io"): "yes",
        ("patch", "inferenceservices.serving.kserve.io", "--subresource=status"): "yes",
        ("create", "inferenceservices.serving.kserve.io"): "no",
        ("delete", "inferenceservices.serving.kserve.io"): "no",
        ("patch", "inferenceservices.serving.kserve.io"): "no",
        ("get", "secrets"): "no",
        ("create", "pods"): "no",
    }
    for (verb, resource, *extra), expected in allowed.items():
        answer = kubectl(reconciler, "auth", "can-i", verb, resource, *extra, check=False)
        assert answer.stdout.strip() == expected, (verb, resource, answer.stdout, answer.stderr)
    # The admin is the user's: it can do anything.
    assert kubectl(kubeconfig, "auth", "can-i", "*", "*").stdout.strip() == "yes"
    # No anonymous access, no insecure port.
    with httpx.Client(verify=False, timeout=10) as client:
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert client.get(f"{server}/api/v1/namespaces").status_code == 401


def test_kubectl_apply_then_wait_ready_and_get(up: Up, kubeconfig: Path) -> None:
    started = time.monotonic()
    out = kubectl(kubeconfig, "apply", "-f", str(MANIFEST)).stdout
    assert "inferenceservice.serving.kserve.io/sklearn-iris created" in out
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "isvc/sklearn-iris", "--timeout=180s")
    print(f"apply to Ready: {time.monotonic() - started:.1f} s")
    table = kubectl(kubeconfig, "get", "isvc").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "URL", "READY"], table
    row = table[1].split()
    assert row[0] == "sklearn-iris" and row[1] == "http://sklearn-iris.default.example.com"
    assert row[2] == "True", table
    assert up.platform is not None
    assert revisions_seen(up.platform, 5) == {"sklearn-iris-predictor-00001": 5}
    doc = isvc(kubeconfig)
    component = doc["status"]["components"]["predictor"]
    assert component["latestReadyRevision"] == "sklearn-iris-predictor-00001"
    assert [{k: t[k] for k in ("revisionName", "percent", "latestRevision")}
            for t in component["traffic"]] == [
        {"revisionName": "sklearn-iris-predictor-00001", "percent": 100, "latestRevision": True}]
    assert doc["status"]["url"] == "http://sklearn-iris.default.example.com"


def _changed_manifest(tmp_path: Path, percent: int | None) -> Path:
    doc = yaml.safe_load(MANIFEST.read_text())
    predictor = doc["spec"]["predictor"]
    predictor["containers"][0]["env"].append({"name": "MODELSERVE_TEST_CHANGE", "value": "2"})
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    path = tmp_path / "sklearn-iris-v2.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_changed_spec_with_a_20_percent_canary_splits_20_80(
    up: Up, kubeconfig: Path, tmp_path: Path
) -> None:
    assert up.platform is not None
    out = kubectl(kubeconfig, "apply", "-f", str(_changed_manifest(tmp_path, 20))).stdout
    assert "configured" in out
    old, new = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"
    doc = wait_for("the canary", lambda: settled(kubeconfig, {old: 80, new: 20}))
    by_tag = {t.get("tag"): t for t in doc["status"]["components"]["predictor"]["traffic"]}
    assert by_tag["latest"]["revisionName"] == new and by_tag["prev"]["revisionName"] == old
    seen = revisions_seen(up.platform, SPLIT_REQUESTS)
    share = seen[new] / SPLIT_REQUESTS
    print(f"canary 20 %: {seen[new]} of {SPLIT_REQUESTS} to {new} ({share:.1%})")
    # binomial(SPLIT_REQUESTS, 0.2): within 5 sd (±0.03 of 2000 was 3.35 sd, a flake).
    sd = (SPLIT_REQUESTS * 0.2 * 0.8) ** 0.5
    assert set(seen) == {old, new} and abs(seen[new] - 0.2 * SPLIT_REQUESTS) <= 5 * sd, seen
    columns = kubectl(kubeconfig, "get", "isvc", "sklearn-iris", "--no-headers").stdout.split()
    assert columns[2:5] == ["True", "80", "20"], columns


def test_kubectl_patch_rollback_then_promote(up: Up, kubeconfig: Path) -> None:
    assert up.platform is not None
    old, new = "sklearn-iris-predictor-00001", "sklearn-iris-predictor-00002"
    kubectl(kubeconfig, "patch", "isvc", "sklearn-iris", "--type", "merge",
            "-p", '{"spec":{"predictor":{"canaryTrafficPercent":0}}}')
    wait_for("the rollback", lambda: settled(kubeconfig, {old: 100, new: 0}))
    assert set(revisions_seen(up.platform, 50)) == {old}
    kubectl(kubeconfig, "patch", "isvc", "sklearn-iris", "--type", "json",
            "-p", '[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]')
    wait_for("the promote", lambda: settled(kubeconfig, {new: 100}))
    assert set(revisions_seen(up.platform, 50)) == {new}


def test_the_kube_cli_commands_against_the_real_api_server(up: Up, kubeconfig: Path) -> None:
    cli = [str(Path(sys.executable).parent / "modelserve")]
    kube = ["--kube", "--kubeconfig", str(kubeconfig)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args, *kube], capture_output=True, text=True, timeout=120)

    status = run("status", "sklearn-iris")
    assert status.returncode == 0 and "sklearn-iris-predictor-00002" in status.stdout, status
    refused = run("rollback", "sklearn-iris")  # nothing to roll back after a promote
    assert refused.returncode == 1 and "nothing to roll back" in refused.stderr, refused
    # A canary of the promoted revision against itself: KServe keeps all traffic on it.
    canary = run("canary", "sklearn-iris", "--percent", "30")
    assert canary.returncode == 0 and "patched" in canary.stdout, canary
    assert isvc(kubeconfig)["spec"]["predictor"]["canaryTrafficPercent"] == 30
    promote = run("promote", "sklearn-iris")
    assert promote.returncode == 0, promote
    assert "canaryTrafficPercent" not in isvc(kubeconfig)["spec"]["predictor"]
    missing = run("status", "no-such-isvc")
    assert missing.returncode == 1 and "not found" in missing.stderr, missing
    wait_for("the promoted state", lambda: settled(
        kubeconfig, {"sklearn-iris-predictor-00002": 100}))


def _apiserver(kube_dir: Path) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("kube-apiserver") and any(
            str(kube_dir.resolve()) in part for part in cmdline
        ):
            return process
    raise AssertionError("no kube-apiserver running for this state folder")


def test_killing_the_api_server_leaves_serving_undisturbed_and_the_reconciler_catches_up(
    up: Up, kubeconfig: Path, kube_dir: Path
) -> None:
    assert up.platform is not None
    first = _apiserver(kube_dir)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # While it is away (and while it restarts), predictions go on.
    assert revisions_seen(up.platform, 100) == {"sklearn-iris-predictor-00002": 100}
    restarted = wait_for("the API server's restart", lambda: _apiserver(kube_dir).pid
                         != first.pid and kubectl(kubeconfig, "get", "isvc", check=False)
                         .returncode == 0)
    assert restarted
    kubectl(kubeconfig, "patch", "isvc", "sklearn-iris", "--type", "merge",
            "-p", '{"metadata":{"annotations":{"autoscaling.knative.dev/target":"6"}}}')
    # A changed annotation is a new revision; the reconciler saw the patch after its re-list.
    wait_for("the reconciler after the restart", lambda: settled(
        kubeconfig, {"sklearn-iris-predictor-00003": 100}))
    assert set(revisions_seen(up.platform, 20)) == {"sklearn-iris-predictor-00003"}


def test_restarting_up_adopts_what_the_api_server_holds(up: Up, kubeconfig: Path) -> None:
    up.stop()
    platform = up.start()
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "isvc/sklearn-iris", "--timeout=180s")
    seen = revisions_seen(platform, 20)
    assert sum(seen.values()) == 20 and len(seen) == 1, seen
    doc = wait_for("the adopted status", lambda: (d := isvc(kubeconfig)).get("status", {})
                   .get("observedGeneration") == d["metadata"]["generation"] and d)
    assert [c for c in doc["status"]["conditions"] if c["type"] == "Ready"][0]["status"] == "True"


def test_a_cr_the_launch_policy_refuses_is_not_run_and_says_why(
    up: Up, kubeconfig: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "shell", "namespace": "default"},
        "spec": {"predictor": {"containers": [{
            "name": "kserve-container", "image": "x",
            "command": ["sh", "-c", f"touch {marker}; sleep 600"],
        }]}},
    }
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(doc))

    def refused() -> dict[str, Any] | None:
        ready = [c for c in isvc(kubeconfig, "shell").get("status", {}).get("conditions", [])
                 if c["type"] == "Ready"]
        return ready[0] if ready and ready[0]["status"] == "False" else None

    condition = wait_for("the refusal", refused)
    assert condition["reason"] == "PolicyRefused", condition
    assert "sh" in condition["message"]
    assert not marker.exists()
    assert up.platform is not None
    assert httpx.get(f"{up.platform.url}/v2/models/shell/ready").status_code == 404
    kubectl(kubeconfig, "delete", "isvc", "shell")


def test_the_rollout_api_refuses_writes_while_the_api_server_holds_the_services(
    up: Up,
) -> None:
    assert up.platform is not None
    response = httpx.delete(f"{up.platform.admin_url}/v1/services/sklearn-iris",
                            headers=up.platform.admin_headers, timeout=30)
    assert response.status_code == 409 and "kubectl" in response.json()["error"], response.text


def test_kubectl_delete_stops_the_processes(up: Up, kubeconfig: Path) -> None:
    assert up.platform is not None
    pids = [p["pid"] for r in isvc(kubeconfig)["status"]["modelserve"]["revisions"]
            for replica in r["replicaDetails"] for p in replica["processes"] if p["pid"]]
    assert pids
    assert "deleted" in kubectl(kubeconfig, "delete", "isvc", "sklearn-iris").stdout
    wait_for("the processes to stop", lambda: not any(psutil.pid_exists(p) and psutil.Process(p)
                                                      .status() != psutil.STATUS_ZOMBIE
                                                      for p in pids))
    assert httpx.get(f"{up.platform.url}/v2/models/sklearn-iris/ready").status_code == 404


# --- KServe's full CRD ------------------------------------------------------------------------


@pytest.mark.skipif(not KSERVE_CRD.is_file(), reason=f"{KSERVE_CRD} is not here")
def test_every_manifest_passes_server_side_dry_run_against_kserves_crd(
    models_root: Path, logs: Path, tmp_path: Path, empty_dir: Path
) -> None:
    # 1.20 refuses KServe's `default: ""` lines (a copy without them; never in the repo).
    crd = tmp_path / "kserve-crd.yaml"
    crd.write_text("".join(line for line in KSERVE_CRD.read_text().splitlines(keepends=True)
                           if line.strip() != 'default: ""'))
    kube_dir = tmp_path / "kube"
    with run_platform(models_root, logs, files=[empty_dir],
                      args=["--kube-local", "--kube-dir", str(kube_dir), "--crd", str(crd)]):
        kubeconfig = kube_dir / "kubeconfig"
        manifests = sorted((ROOT / "inferenceservices").rglob("*.yaml"))
        assert len(manifests) >= 5
        for manifest in manifests:
            out = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", str(manifest))
            assert "(server dry run)" in out.stdout, out
        # The full schema refuses a wrong type server-side.
        bad = yaml.safe_load(MANIFEST.read_text())
        bad["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
        refused = kubectl(kubeconfig, "apply", "--dry-run=server", "--validate=false", "-f", "-",
                          input=json.dumps(bad), check=False)
        assert refused.returncode != 0 and "canaryTrafficPercent" in refused.stderr, refused
        _up_kube_serves_another_api_servers_namespace(models_root, logs, empty_dir, kube_dir)


def _up_kube_serves_another_api_servers_namespace(
    models_root: Path, logs: Path, empty_dir: Path, kube_dir: Path
) -> None:
    """`up --kube --kubeconfig`: an API server `up` did not start (here the one above, with
    KServe's CRD, as a kind cluster would be), one namespace, with the reconciler's own
    credentials bound to the Role the README gives."""
    admin, reconciler = kube_dir / "kubeconfig", kube_dir / "reconciler.kubeconfig"
    namespace = "team-a"
    kubectl(admin, "create", "namespace", namespace)
    role = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        reconciler_role(namespace), reconciler_binding(namespace, RECONCILER_USER)]})
    kubectl(admin, "apply", "-f", "-", input=role)
    doc = yaml.safe_load(MANIFEST.read_text())
    doc["metadata"]["namespace"] = namespace
    kubectl(admin, "apply", "-f", "-", input=json.dumps(doc))
    with run_platform(models_root, logs, files=[empty_dir],
                      args=["--kube", "--kubeconfig", str(reconciler), "--namespace", namespace]
                      ) as served:
        kubectl(admin, "-n", namespace, "wait", "--for=condition=Ready", "isvc/sklearn-iris",
                "--timeout=180s")
        response = httpx.post(f"{served.url}/v2/models/sklearn-iris/infer", json=V2, timeout=30)
        assert response.status_code == 200, response.text
        status = json.loads(kubectl(admin, "-n", namespace, "get", "isvc", "sklearn-iris",
                                    "-o", "json").stdout)["status"]
        assert status["url"] == f"http://sklearn-iris.{namespace}.example.com"
        assert status["components"]["predictor"]["latestReadyRevision"] == (
            "sklearn-iris-predictor-00001")
