"""A component's `logger:` spec in its launch plan, through the launch policy."""

from __future__ import annotations

from itertools import count
from pathlib import Path
from typing import Any

import pytest

from gateway.controlplane.components import PlanError, plan_service
from gateway.controlplane.manifests import InferenceService, load_manifests
from gateway.controlplane.policy import LaunchPolicy, PolicyRefused
from servers.payload_logger import LOGGER_ENV, PayloadLoggerSettings
from tests.support import ROOT


def _ports() -> Any:
    numbers = count(42000)
    return lambda: next(numbers)


def _classifier(logger: dict[str, Any] | None, component: str = "transformer",
                annotations: dict[str, str] | None = None,
                canary: int | None = None) -> InferenceService:
    [isvc] = [s for s in load_manifests([ROOT / "inferenceservices"])
              if s.name == "iris-classifier"]
    doc = isvc.model_dump(exclude_none=True)
    if logger is not None:
        doc["spec"][component]["logger"] = logger
    if canary is not None:
        doc["spec"]["transformer"]["canaryTrafficPercent"] = canary
    doc["metadata"]["annotations"].update(annotations or {})
    return InferenceService.model_validate(doc)


def _settings(plan_env: dict[str, str]) -> PayloadLoggerSettings | None:
    return PayloadLoggerSettings.from_env(plan_env)


def test_the_logged_component_gets_kserve_agent_settings(tmp_path: Path) -> None:
    isvc = _classifier({"mode": "all", "url": "http://127.0.0.1:8090/",
                        "metadataHeaders": ["x-tenant"]})
    predictor, transformer = plan_service(isvc, tmp_path, _ports())
    assert _settings(predictor.env) is None
    settings = _settings(transformer.env)
    assert settings is not None
    assert settings.url == "http://127.0.0.1:8090/"
    assert settings.mode == "all"
    assert settings.inference_service == "iris-classifier"
    assert settings.namespace == "default"
    assert settings.component == "transformer"
    assert settings.endpoint == "default"
    assert settings.revision == "iris-classifier-transformer-00001"
    assert settings.source == f"http://127.0.0.1:{transformer.http_port}/"
    assert settings.metadata_headers == ("x-tenant",)


def test_a_canary_revision_logs_as_the_canary_endpoint(tmp_path: Path) -> None:
    isvc = _classifier({"url": "http://localhost:8090/"}, canary=20)
    first = plan_service(isvc, tmp_path, _ports(), revision=1)
    second = plan_service(isvc, tmp_path, _ports(), revision=2)
    assert _settings(first[1].env).endpoint == "default"  # type: ignore[union-attr]
    assert _settings(second[1].env).endpoint == "canary"  # type: ignore[union-attr]


def test_queue_annotations_tune_the_logger(tmp_path: Path) -> None:
    isvc = _classifier(
        {"url": "http://127.0.0.1:8090/"}, component="predictor",
        annotations={"serving.modelserve.io/logger-queue-size": "50",
                     "serving.modelserve.io/logger-overflow": "block"},
    )
    settings = _settings(plan_service(isvc, tmp_path, _ports())[0].env)
    assert settings is not None
    assert (settings.queue_size, settings.overflow) == (50, "block")


def test_a_bad_queue_annotation_is_a_plan_error(tmp_path: Path) -> None:
    isvc = _classifier({"url": "http://127.0.0.1:8090/"},
                       annotations={"serving.modelserve.io/logger-overflow": "explode"})
    with pytest.raises(PlanError, match="overflow"):
        plan_service(isvc, tmp_path, _ports())


def test_a_logger_without_url_cannot_run_locally(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="logger.url is needed locally"):
        plan_service(_classifier({"mode": "request"}), tmp_path, _ports())


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/sink",  # payloads leave the machine
        "http://10.0.0.8:8080/",
        "http://user:secret@127.0.0.1:8090/",  # credentials in the spec
        "file:///tmp/events",
        "ftp://127.0.0.1/",
        "gopher://127.0.0.1:70/",
        "not a url at all",
    ],
)
def test_the_policy_refuses_sinks_off_this_machine(url: str, tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused):
        plan_service(_classifier({"url": url}), tmp_path, _ports())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8090/", "https://127.0.0.5/x", "http://[::1]:9/", "http://localhost/"]
)
def test_loopback_sinks_pass(url: str) -> None:
    LaunchPolicy().check_logger_url(url, "svc transformer")


def test_the_operator_may_allow_a_sink_host(tmp_path: Path) -> None:
    isvc = _classifier({"url": "http://logs.internal:8080/"})
    policy = LaunchPolicy(models_roots=(tmp_path,), allowed_logger_hosts=("logs.internal",))
    assert _settings(plan_service(isvc, tmp_path, _ports(), policy=policy)[1].env) is not None


def test_a_manifest_cannot_set_the_logger_itself(tmp_path: Path) -> None:
    isvc = _classifier(None)
    doc = isvc.model_dump(exclude_none=True)
    doc["spec"]["predictor"]["containers"][0]["env"].append(
        {"name": LOGGER_ENV, "value": '{"url": "http://evil.example/", "inference_service": "x"}'}
    )
    with pytest.raises(PolicyRefused, match="platform's to set"):
        plan_service(InferenceService.model_validate(doc), tmp_path, _ports())


def test_cluster_only_logger_fields_are_reported_as_not_runnable_here() -> None:
    from gateway.controlplane.manifests import runnable_problems

    isvc = _classifier({"url": "http://127.0.0.1:8090/", "storage": {"path": "/logs"}})
    [problem] = runnable_problems(isvc, "iris-classifier.yaml")
    assert problem.path == "spec.transformer.logger.storage"
    assert not runnable_problems(_classifier({"url": "http://127.0.0.1:8090/"}), "x")
