"""`model:` predictors run locally by the stand-in of their KServe ServingRuntime."""

from __future__ import annotations

import sys
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from gateway.controlplane.components import PlanError, parse_args, plan_service
from gateway.controlplane.manifests import (
    ComponentSpec,
    InferenceService,
    ManifestError,
    load_manifests,
)
from gateway.controlplane.runtimes import RuntimeNotAvailable, resolve_runtime, runs_tritonserver
from tests.support import ROOT

CLUSTER = ROOT / "inferenceservices" / "cluster"


def ports() -> Any:
    numbers = count(42000)
    return lambda: next(numbers)


def model_service(model: dict[str, Any]) -> InferenceService:
    return InferenceService.model_validate({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "svc"}, "spec": {"predictor": {"model": model}},
    })


def test_tf_serving_runtime_is_played_by_our_tensorflow_server(tmp_path: Path) -> None:
    [isvc] = load_manifests([CLUSTER / "tf-digits-classifier.yaml"])
    predictor, transformer = plan_service(isvc, tmp_path, ports())
    assert predictor.argv[:3] == (sys.executable, "-m", "servers.tensorflow")
    assert dict(parse_args(list(predictor.argv[3:]))) == {
        "--model_name": "tf-digits-classifier",  # TF Serving's --model_name={{.Name}}
        "--model_dir": str(tmp_path.resolve() / "digits-tf"),  # storageUri, "mounted"
        "--http_port": "42000",
        "--grpc_port": "42001",
    }
    assert predictor.model_dir == tmp_path.resolve() / "digits-tf"
    # TF Serving speaks the v1 REST predict API: the transformer calls the REST port.
    transformer_flags = dict(parse_args(list(transformer.argv[3:])))
    assert transformer_flags["--predictor_protocol"] == "v1"
    assert transformer_flags["--predictor_host"] == "127.0.0.1:42000"


def test_model_args_and_env_follow_the_runtime_ones(tmp_path: Path) -> None:
    isvc = model_service({
        "modelFormat": {"name": "sklearn"}, "storageUri": "pvc://claim/iris",
        "args": ["--method=predict_proba"], "env": [{"name": "EXTRA", "value": "1"}],
    })
    [plan] = plan_service(isvc, tmp_path, ports())
    assert plan.argv[:3] == (sys.executable, "-m", "servers.sklearn")
    assert dict(parse_args(list(plan.argv[3:])))["--method"] == "predict_proba"
    assert plan.env["EXTRA"] == "1"
    assert plan.env["STORAGE_URI"] == str(tmp_path.resolve() / "iris")


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ({"modelFormat": {"name": "tensorflow"}, "runtime": "kserve-torchserve"},
         "no local stand-in"),
        ({"modelFormat": {"name": "paddle"}}, "no local runtime serves"),
        ({"modelFormat": {"name": "xgboost", "version": "0"}}, "no local runtime serves"),
        ({"modelFormat": {"name": "pytorch"}}, "no local runtime serves"),  # autoSelect off
        ({"modelFormat": {"name": "sklearn"}, "runtime": "kserve-tensorflow-serving"},
         "does not serve modelFormat 'sklearn'"),
    ],
)
def test_runtimes_that_cannot_run_here_are_named(
    tmp_path: Path, model: dict[str, Any], fragment: str
) -> None:
    isvc = model_service(model)
    with pytest.raises(RuntimeNotAvailable, match=fragment):
        resolve_runtime(isvc.spec.predictor.model)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match=fragment):
        plan_service(isvc, tmp_path, ports())
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(isvc.model_dump_json())
    with pytest.raises(ManifestError, match=r"spec\.predictor\.model\.runtime"):
        load_manifests([manifest])


def test_triton_runtime_serves_the_repository_names_like_kserve(tmp_path: Path) -> None:
    [isvc] = load_manifests([ROOT / "inferenceservices" / "digits-classifier.yaml"])
    predictor, transformer = plan_service(isvc, tmp_path, ports())
    assert predictor.argv[:3] == (sys.executable, "-m", "servers.triton.tritonserver")
    # KServe's Triton runtime passes no model name: Triton serves the repository's names.
    assert dict(parse_args(list(predictor.argv[3:]))) == {
        "--model_dir": str(tmp_path.resolve() / "triton"),
        "--http_port": "42000",
        "--grpc_port": "42001",
    }
    transformer_flags = dict(parse_args(list(transformer.argv[3:])))
    assert transformer_flags["--predictor_host"] == "127.0.0.1:42000"  # v2 REST
    assert transformer_flags["--model_name"] == "digits-classifier"


@pytest.mark.parametrize(
    ("manifest", "screened"),
    [
        ("triton-digits.yaml", True),  # model: runtime kserve-tritonserver
        ("digits-classifier.yaml", False),  # the transformer (ours) is the entry
        ("sklearn-iris.yaml", False),
    ],
)
def test_the_gateway_screens_v2_bodies_for_a_tritonserver_entry(
    manifest: str, screened: bool
) -> None:
    [isvc] = load_manifests([ROOT / "inferenceservices" / manifest])
    entry = isvc.spec.transformer or isvc.spec.predictor
    assert runs_tritonserver(entry) is screened


def test_a_container_running_the_tritonserver_launcher_is_screened_too() -> None:
    spec = ComponentSpec.model_validate({"containers": [{
        "name": "kserve-container", "command": ["python", "-m", "servers.triton.tritonserver"],
        "args": ["--model_dir=/mnt/models"],
    }]})
    assert runs_tritonserver(spec)
    named = ComponentSpec.model_validate({"containers": [{
        "name": "kserve-container", "command": ["python", "-m", "servers.sklearn"],
        "args": ["--model_name=servers.triton.tritonserver"],
    }]})
    assert not runs_tritonserver(named)


@pytest.mark.parametrize(
    ("model_format", "runtime", "entry_point"),
    [
        ({"name": "xgboost"}, "kserve-xgbserver", "servers.xgboost"),
        ({"name": "xgboost", "version": "2"}, "kserve-xgbserver", "servers.xgboost"),
        ({"name": "lightgbm", "version": "4"}, "kserve-lgbserver", "servers.lightgbm"),
        ({"name": "sklearn", "version": "1"}, "kserve-sklearnserver", "servers.sklearn"),
        # Both TF Serving (priority 2) and Triton (1) serve tensorflow: KServe picks TF Serving.
        ({"name": "tensorflow"}, "kserve-tensorflow-serving", "servers.tensorflow"),
        ({"name": "onnx"}, "kserve-tritonserver", "servers.triton.tritonserver"),
    ],
)
def test_a_bare_model_format_gets_the_highest_priority_runtime_as_in_kserve(
    model_format: dict[str, str], runtime: str, entry_point: str
) -> None:
    backend = resolve_runtime(model_service({"modelFormat": model_format}).spec.predictor.model)  # type: ignore[arg-type]
    assert (backend.runtime, backend.entry_point) == (runtime, entry_point)


def test_a_protocol_version_narrows_the_candidates() -> None:
    # Triton speaks no v1: a tensorflow model asking for grpc-v2 goes to Triton, not TF Serving.
    model = model_service({"modelFormat": {"name": "tensorflow"}, "protocolVersion": "grpc-v2"})
    assert resolve_runtime(model.spec.predictor.model).runtime == "kserve-tritonserver"  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["xgboost-iris", "lightgbm-iris"])
def test_the_booster_demos_run_their_runtimes_with_kserves_args(tmp_path: Path, name: str) -> None:
    [isvc] = load_manifests([ROOT / "inferenceservices" / f"{name}.yaml"])
    [plan] = plan_service(isvc, tmp_path, ports())
    backend = name.split("-")[0]
    assert plan.argv[:3] == (sys.executable, "-m", f"servers.{backend}")
    flags = dict(parse_args(list(plan.argv[3:])))
    assert flags["--model_name"] == name and flags["--nthread"] == "1"
    assert flags["--model_dir"] == str(tmp_path.resolve() / name)

