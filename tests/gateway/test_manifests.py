"""InferenceService manifests: the demo files parse; bad ones fail naming file and field."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.controlplane.manifests import ManifestError, load_manifests
from tests.support import ROOT

MANIFESTS = ROOT / "inferenceservices"

GOOD = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    minReplicas: {min_replicas}
    containers:
      - name: kserve-container
        command: [python, -m, servers.sklearn]
        args: [--model_name={name}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_manifests_parse_with_their_components() -> None:
    services = {s.name: s for s in load_manifests([MANIFESTS])}
    assert {"sklearn-iris", "iris-classifier"} <= set(services)

    iris = services["sklearn-iris"]
    assert iris.namespace == "default"
    assert iris.entry == "predictor"
    assert [c for c, _ in iris.components()] == ["predictor"]
    assert iris.spec.predictor.containerConcurrency == 32
    container = iris.spec.predictor.containers[0]
    assert container.command == ["python", "-m", "servers.sklearn"]
    assert {e.name: e.value for e in container.env} == {
        "STORAGE_URI": "pvc://modelserve-models/iris"
    }

    classifier = services["iris-classifier"]
    assert classifier.entry == "transformer"
    assert [c for c, _ in classifier.components()] == ["predictor", "transformer"]
    assert classifier.spec.transformer is not None
    assert "--predictor_protocol=v2" in classifier.spec.transformer.containers[0].args
    assert classifier.metadata.annotations["autoscaling.knative.dev/target"] == "8"


def test_single_file_and_multi_document_with_other_kinds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n"
            + GOOD.format(name="a", min_replicas=1) + "---\n"
            + GOOD.format(name="b", min_replicas=2))
    path = write(tmp_path, "many.yaml", text)
    with caplog.at_level(logging.WARNING):
        services = load_manifests([path])
    assert [s.name for s in services] == ["a", "b"]
    assert services[1].spec.predictor.minReplicas == 2
    assert "ConfigMap" in caplog.text


def test_unknown_fields_are_kept_not_rejected(tmp_path: Path) -> None:
    text = GOOD.format(name="a", min_replicas=1) + "    someFutureField: true\n"
    [service] = load_manifests([write(tmp_path, "a.yaml", text)])
    assert service.spec.predictor.model_extra == {"someFutureField": True}


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (GOOD.format(name="a", min_replicas='"ten"'), "spec.predictor.minReplicas",
         "integer"),
        (GOOD.format(name="a", min_replicas='"10"'), "spec.predictor.minReplicas",
         "integer"),
        (GOOD.replace("  name: {name}\n", "  namespace: default\n").format(
            name="a", min_replicas=1), "metadata.name", "required"),
        (GOOD.replace("        command: [python, -m, servers.sklearn]\n", "").format(
            name="a", min_replicas=1), "spec.predictor.containers[0].command", "no command"),
        (GOOD.replace("    containers:", "    sklearn: {{storageUri: 'gs://x'}}\n    old:").format(
            name="a", min_replicas=1), "spec.predictor.containers", "exactly one container"),
        (GOOD.replace("apiVersion: serving.kserve.io/v1beta1",
                      "apiVersion: serving.kserve.io/v1alpha1").format(
            name="a", min_replicas=1), "apiVersion", "v1beta1"),
    ],
    ids=["wrong-type", "string-for-integer", "missing-name", "no-command", "no-container",
         "wrong-version"],
)
def test_bad_manifest_names_file_and_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ManifestError) as caught:
        load_manifests([path])
    [problem] = caught.value.problems
    assert problem.where == str(path)
    assert problem.path == field
    assert message in problem.message
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD.format(name="same", min_replicas=1))
    second = write(tmp_path, "b.yaml", GOOD.format(name="same", min_replicas=1))
    with pytest.raises(ManifestError) as caught:
        load_manifests([tmp_path])
    [problem] = caught.value.problems
    assert problem.where == str(second) and problem.path == "metadata.name"
    assert "duplicate" in problem.message and str(first) in problem.message


def test_valuefrom_env_cannot_run_locally(tmp_path: Path) -> None:
    text = GOOD.format(name="a", min_replicas=1) + (
        "        env:\n          - name: TOKEN\n"
        "            valueFrom: {secretKeyRef: {name: s, key: k}}\n")
    with pytest.raises(ManifestError, match=r"containers\[0\]\.env\[0\].*TOKEN"):
        load_manifests([write(tmp_path, "a.yaml", text)])


def test_missing_path_invalid_yaml_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_manifests([tmp_path / "nope.yaml"])
    with pytest.raises(ManifestError, match="cannot read YAML"):
        load_manifests([write(tmp_path, "x.yaml", "a: [unclosed\n")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="no InferenceService"):
        load_manifests([empty])
