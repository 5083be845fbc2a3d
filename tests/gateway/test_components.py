"""Launch plans: what KServe would pass a pod, rewritten for a local process."""

from __future__ import annotations

import sys
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from gateway.controlplane.components import PlanError, parse_args, plan_service
from gateway.controlplane.manifests import InferenceService, load_manifests
from gateway.controlplane.policy import LaunchPolicy
from tests.support import ROOT


def ports() -> Any:
    numbers = count(41000)
    return lambda: next(numbers)


def service(args: list[str], env: dict[str, str] | None = None,
            transformer_args: list[str] | None = None) -> InferenceService:
    def component(module: str, component_args: list[str]) -> dict[str, Any]:
        return {"containers": [{
            "name": "kserve-container",
            "command": ["python3", "-m", module],
            "args": component_args,
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        }]}

    spec = {"predictor": component("servers.sklearn", args)}
    if transformer_args is not None:
        spec["transformer"] = component("servers.transformers.tabular", transformer_args)
    return InferenceService.model_validate({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "svc"}, "spec": spec,
    })


def flags(argv: tuple[str, ...]) -> dict[str, str | None]:
    return dict(parse_args(list(argv[3:])))


def test_parse_args_reads_both_flag_forms() -> None:
    assert parse_args(["--a=1", "--b", "2", "--c", "--d=x=y", "pos"]) == [
        ("--a", "1"), ("--b", "2"), ("--c", None), ("--d", "x=y"), ("pos", None)]


def test_demo_service_plan_runs_this_python_on_free_ports(tmp_path: Path) -> None:
    [isvc] = [s for s in load_manifests([ROOT / "inferenceservices"]) if s.name == "sklearn-iris"]
    [plan] = plan_service(isvc, tmp_path, ports())
    assert plan.argv[:3] == (sys.executable, "-m", "servers.sklearn")
    assert flags(plan.argv) == {
        "--max_batch_size": "32",
        "--max_batch_latency_us": "0",
        "--model_name": "sklearn-iris",
        "--model_dir": str(tmp_path.resolve() / "iris"),
        "--http_port": "41000",
        "--grpc_port": "41001",
    }
    assert plan.model_dir == tmp_path.resolve() / "iris"
    assert plan.revision == "sklearn-iris-predictor-00001"
    assert plan.name == "sklearn-iris-predictor"
    assert plan.ready_url == "http://127.0.0.1:41000/v2/health/ready"
    assert plan.env["STORAGE_URI"] == str(tmp_path.resolve() / "iris")
    assert plan.env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in plan.env  # the parent's environment too


def test_space_separated_flags_are_replaced_once_and_missing_ports_added(tmp_path: Path) -> None:
    isvc = service(["--model_name", "svc", "--http_port", "8080", "--workers", "2",
                    "--model_dir", "/mnt/models"], {"STORAGE_URI": "pvc://claim/deep/er"})
    [plan] = plan_service(isvc, tmp_path, ports())
    assert plan.argv[3:] == (
        "--model_name=svc", "--http_port=41000", "--workers=2",
        f"--model_dir={tmp_path.resolve()}/deep/er", "--grpc_port=41001")


# Every storage place the cases below read, allowed: what they check is where it maps to.
OPEN_STORAGE = {"allow_remote_storage": True, "trust_remote_pickles": True}
OTHER_ROOTS = (Path("/opt/models"), Path("/data"), Path("relative"))


@pytest.mark.parametrize(
    ("args", "storage_uri", "expected", "local"),
    [
        (["--model_dir=/mnt/models"], "pvc://claim", "{root}", True),
        (["--model_dir=/mnt/models/sub"], "pvc://claim/iris", "{root}/iris/sub", True),
        ([], "pvc://claim/iris", "{root}/iris", True),
        (["--model_dir=/mnt/models"], "file:///opt/models/iris", "/opt/models/iris", True),
        # A local path is read from its real path: relative to the working directory.
        (["--model_dir=/mnt/models"], "relative/iris", "{cwd}/relative/iris", True),
        (["--model_dir=/mnt/models"], "s3://bucket/iris", "s3://bucket/iris", False),
        (["--model_dir=/mnt/models"], "https://host/iris.joblib", "https://host/iris.joblib",
         False),
        (["--model_dir=/data/iris"], None, "/data/iris", True),
        (["--storage_uri=gs://b/iris"], None, "gs://b/iris", False),
    ],
)
def test_model_dir_from_storage_uri(
    tmp_path: Path, args: list[str], storage_uri: str | None, expected: str, local: bool
) -> None:
    env = {"STORAGE_URI": storage_uri} if storage_uri else {}
    policy = LaunchPolicy(models_roots=(tmp_path, *OTHER_ROOTS), **OPEN_STORAGE)
    [plan] = plan_service(service(args, env), tmp_path, ports(), policy=policy)
    want = expected.format(root=tmp_path.resolve(), cwd=Path.cwd().resolve())
    assert flags(plan.argv)["--model_dir"] == want
    assert "--storage_uri" not in flags(plan.argv)
    assert plan.model_dir == (Path(want) if local else None)


def test_no_model_dir_and_no_storage_uri_is_left_alone(tmp_path: Path) -> None:
    [plan] = plan_service(service(["--model_name=svc"]), tmp_path, ports())
    assert "--model_dir" not in flags(plan.argv) and plan.model_dir is None


def test_mount_path_without_storage_uri_fails(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="STORAGE_URI"):
        plan_service(service(["--model_dir=/mnt/models"]), tmp_path, ports())


def test_unsupported_storage_scheme_fails(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="ftp://"):
        plan_service(service([], {"STORAGE_URI": "ftp://x/y"}), tmp_path, ports())


@pytest.mark.parametrize(
    ("protocol_args", "port_of_predictor"),
    [([], "http"), (["--predictor_protocol=v2"], "http"),
     (["--predictor_protocol", "grpc-v2"], "grpc"),
     (["--predictor_protocol=grpc-v2", "--predictor_host=elsewhere:80"], "grpc")],
)
def test_transformer_gets_its_predictor_host(
    tmp_path: Path, protocol_args: list[str], port_of_predictor: str
) -> None:
    isvc = service(["--model_name=svc"], transformer_args=["--model_name=svc", *protocol_args])
    predictor, transformer = plan_service(isvc, tmp_path, ports())
    assert transformer.component == "transformer"
    assert transformer.revision == "svc-transformer-00001"
    port = predictor.http_port if port_of_predictor == "http" else predictor.grpc_port
    assert flags(transformer.argv)["--predictor_host"] == f"127.0.0.1:{port}"
    assert transformer.argv.count(f"--predictor_host=127.0.0.1:{port}") == 1
    assert len({predictor.http_port, predictor.grpc_port,
                transformer.http_port, transformer.grpc_port}) == 4


def test_demo_transformer_calls_its_replicas_predictor_over_rest(tmp_path: Path) -> None:
    [isvc] = [s for s in load_manifests([ROOT / "inferenceservices"])
              if s.name == "iris-classifier"]
    predictor, transformer = plan_service(isvc, tmp_path, ports())
    assert transformer.argv[:3] == (sys.executable, "-m", "servers.transformers.tabular")
    assert flags(transformer.argv)["--predictor_host"] == f"127.0.0.1:{predictor.http_port}"


def test_manifest_env_reaches_the_process(tmp_path: Path) -> None:
    [plan] = plan_service(service([], {"MY_SETTING": "on"}), tmp_path, ports())
    assert plan.env["MY_SETTING"] == "on"


def test_command_not_on_path_fails(tmp_path: Path) -> None:
    isvc = service([])
    data = isvc.model_dump()
    data["spec"]["predictor"]["containers"][0]["command"] = ["no-such-binary-xyz"]
    # Allowed by the operator (custom containers), but not there: named before anything starts.
    policy = LaunchPolicy(models_roots=(tmp_path,), allow_custom_containers=True)
    with pytest.raises(PlanError, match="not on PATH"):
        plan_service(InferenceService.model_validate(data), tmp_path, ports(), policy=policy)
