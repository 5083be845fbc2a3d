"""A component's OTEL_* in its launch plan: named by the platform, the operator's exporter
settings inherited, a manifest's identity kept and anything else it sets about tracing
refused."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from gateway.controlplane.components import plan_service
from gateway.controlplane.manifests import load_manifests
from gateway.controlplane.policy import LaunchPolicy, PolicyRefused
from tests.gateway.test_components import ports, service
from tests.support import ROOT


def attributes(env: dict[str, str]) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    return {k: unquote(v) for k, v in pairs}


def test_each_component_is_named_with_its_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "modelserve-gateway")  # the gateway's own
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev")
    [isvc] = [s for s in load_manifests([ROOT / "inferenceservices"])
              if s.name == "iris-classifier"]
    predictor, transformer = plan_service(isvc, tmp_path, ports(), revision=2, replica=3)
    for plan in (predictor, transformer):
        assert plan.env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
        assert plan.env["OTEL_SERVICE_NAME"] == f"iris-classifier-{plan.component}"
        assert attributes(plan.env) == {
            "deployment.environment": "dev",
            "service.namespace": "default",
            "service.instance.id": f"iris-classifier-{plan.component}-00002-3",
            "modelserve.inferenceservice": "iris-classifier",
            "modelserve.component": plan.component,
            "modelserve.revision": f"iris-classifier-{plan.component}-00002",
        }


def test_a_manifest_may_name_its_component_and_add_attributes(tmp_path: Path) -> None:
    env = {"OTEL_SERVICE_NAME": "iris-v2", "OTEL_RESOURCE_ATTRIBUTES": "team=ml%20ops"}
    [plan] = plan_service(service(["--model_name=svc"], env), tmp_path, ports())
    assert plan.env["OTEL_SERVICE_NAME"] == "iris-v2"
    found = attributes(plan.env)
    assert found["team"] == "ml ops"
    assert found["modelserve.revision"] == "svc-predictor-00001"


@pytest.mark.parametrize(
    "name",
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_TRACES_SAMPLER",
     "OTEL_PYTHON_ID_GENERATOR", "otel_propagators", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"],
)
def test_a_manifest_may_not_say_where_traces_go(name: str, tmp_path: Path) -> None:
    isvc = service(["--model_name=svc"], {name: "x"})
    with pytest.raises(PolicyRefused, match=f"{name}.*platform's"):
        plan_service(isvc, tmp_path, ports())
    policy = LaunchPolicy(models_roots=(tmp_path,), allow_custom_containers=True)
    [plan] = plan_service(isvc, tmp_path, ports(), policy=policy)
    assert plan.env[name] == "x"
