"""deploy/gateway/knative-service.yaml: the gateway's Knative Service.

Its autoscaling annotations go through our KPA settings parser, which follows Knative's rules,
and the names must be ones that parser (or, for the scale bounds, KServe's translation of
minReplicas/maxReplicas) reads: Knative ignores an annotation it does not know, so a typo
would silently leave the default in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import _parser
from gateway.controlplane.autoscaler import ANNOTATION_PREFIX, settings_from_component
from gateway.controlplane.manifests import load_manifests
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "deploy" / "gateway" / "knative-service.yaml"
IMAGE_APP = "/app/"  # the gateway image's WORKDIR, where the repository's files are copied

# The annotations `settings_from_component` reads (knative/serving pkg/apis/autoscaling).
PARSED = {
    "class",
    "metric",
    "target",
    "target-utilization-percentage",
    "panic-window-percentage",
    "panic-threshold-percentage",
    "window",
    "scale-down-delay",
}
# Knative's current names of the scale bounds (minScale/maxScale are the old spellings).
BOUNDS = {"min-scale", "max-scale"}


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SERVICE.read_text())
    return doc


def _container(service: dict[str, Any]) -> dict[str, Any]:
    containers = service["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _scale_bound(annotations: dict[str, str], name: str) -> int | None:
    value = annotations.get(ANNOTATION_PREFIX + name)
    if value is None:
        return None
    assert value.isdigit(), f"{ANNOTATION_PREFIX}{name}={value!r}: not a whole number"
    return int(value)


def test_is_a_knative_service(service: dict[str, Any]) -> None:
    assert service["apiVersion"] == "serving.knative.dev/v1"
    assert service["kind"] == "Service"
    assert service["metadata"]["name"] == "modelserve-gateway"
    container = _container(service)
    assert container["image"] == "ghcr.io/modelserve/gateway:0.1.0"
    # Knative routes one port, named for its protocol: REST over HTTP/1.1 here.
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]


def test_autoscaling_annotations_parse_as_knative_reads_them(service: dict[str, Any]) -> None:
    template = service["spec"]["template"]
    annotations: dict[str, str] = template["metadata"]["annotations"]
    names = {
        k.removeprefix(ANNOTATION_PREFIX) for k in annotations if k.startswith(ANNOTATION_PREFIX)
    }
    assert names <= PARSED | BOUNDS, f"unknown autoscaling annotations: {names - PARSED - BOUNDS}"
    assert {"class", "metric", "target", "window", *BOUNDS} <= names
    # Knative only reads annotations on the revision template, not on the Service itself.
    assert not any(
        k.startswith(ANNOTATION_PREFIX) for k in service["metadata"].get("annotations", {})
    )

    settings = settings_from_component(
        annotations,
        container_concurrency=template["spec"]["containerConcurrency"],
        min_replicas=_scale_bound(annotations, "min-scale"),
        max_replicas=_scale_bound(annotations, "max-scale"),
        scale_target=None,
    )
    assert settings.container_concurrency == 64
    assert settings.total_value == 32  # the target annotation, under containerConcurrency
    assert settings.target_value == pytest.approx(32 * 0.7)
    assert (settings.min_replicas, settings.max_replicas) == (1, 4)
    assert (settings.stable_window, settings.panic_window) == (60.0, 6.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("window", "60"), ("target", "0"), ("class", "kpa"), ("metric", "rps")],
)
def test_a_bad_annotation_value_fails(service: dict[str, Any], name: str, value: str) -> None:
    # "60" has no unit (Knative parses a Go duration); the class is the full name.
    annotations = dict(service["spec"]["template"]["metadata"]["annotations"])
    annotations[ANNOTATION_PREFIX + name] = value
    with pytest.raises(ValueError, match=name):
        settings_from_component(annotations, 64, 1, 4, None)


def test_container_runs_the_gateway_image_command(service: dict[str, Any]) -> None:
    container = _container(service)
    assert container["command"][0] == "modelserve"
    args = _parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.command == "up"
    assert (args.host, args.port) == ("0.0.0.0", container["ports"][0]["containerPort"])
    assert args.models_dir == [Path("/mnt/models")]  # the only models root
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/models"]["readOnly"] is True
    # The manifests it serves are the repository's, as the image holds them.
    files = [ROOT / str(f).removeprefix(IMAGE_APP) for f in args.files]
    assert all(str(f).startswith(IMAGE_APP) for f in args.files)
    assert [s.name for s in load_manifests(files)] == ["sklearn-iris", "iris-classifier"]


def test_gateway_settings_from_env_and_secret(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _container(service)["env"]
    fields = set(GatewaySettings.model_fields)
    for var in env:
        assert var["name"].startswith("MODELSERVE_GATEWAY_"), var["name"]
        # pydantic-settings ignores unknown variables: check the names ourselves.
        assert var["name"].removeprefix("MODELSERVE_GATEWAY_").lower() in fields, var["name"]
    keys = next(v for v in env if v["name"] == "MODELSERVE_GATEWAY_API_KEYS")
    assert "value" not in keys  # never a literal key in the manifest
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "modelserve-gateway", "key": "api-keys"}

    for var in env:
        monkeypatch.setenv(var["name"], var.get("value", "key-a,key-b"))
    settings = GatewaySettings()
    assert settings.api_key_values() == ("key-a", "key-b")
    assert settings.rate_limit_rps == 50
    # Knative's request timeout outlasts the gateway's, so clients see its 504.
    assert service["spec"]["template"]["spec"]["timeoutSeconds"] > settings.request_timeout_s


def test_probes_resources_and_security(service: dict[str, Any]) -> None:
    container = _container(service)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        # Knative fills in the serving port; another one is refused on older releases.
        assert container[probe]["httpGet"].get("port", 8080) == 8080
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 1000  # the image's USER (tests/deploy/test_dockerfile.py)
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    # The one writable path is an emptyDir at /tmp (Python's tempfile).
    volumes = {v["name"]: v for v in service["spec"]["template"]["spec"]["volumes"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
