"""The InferenceService CustomResourceDefinition `up --kube-local` installs, and installing one.

By default a small structural CRD of our own: KServe's group, `v1beta1`, the status
subresource and KServe's printer columns (URL, READY, PREV, LATEST, AGE), a schema that types
what the local platform reads (`canaryTrafficPercent` an integer from 0 to 100, replica
counts) and keeps every other field. `--crd FILE` installs another, e.g. KServe's full one
(`kubectl get crd inferenceservices.serving.kserve.io -o yaml` on a cluster).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CRD_NAME", "GROUP", "PLURAL", "VERSION", "inference_service_crd", "install_crd",
           "read_crd"]

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CRD_NAME = f"{PLURAL}.{GROUP}"
ESTABLISHED_TIMEOUT_S = 60.0

_TRAFFIC = ".status.components.predictor.traffic"
PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"jsonPath": ".status.url", "name": "URL", "type": "string"},
    {"jsonPath": ".status.conditions[?(@.type=='Ready')].status", "name": "Ready",
     "type": "string"},
    {"jsonPath": f"{_TRAFFIC}[?(@.tag=='prev')].percent", "name": "Prev", "type": "integer"},
    {"jsonPath": f"{_TRAFFIC}[?(@.latestRevision==true)].percent", "name": "Latest",
     "type": "integer"},
    {"jsonPath": f"{_TRAFFIC}[?(@.tag=='prev')].revisionName",
     "name": "PrevRolledoutRevision", "type": "string", "priority": 1},
    {"jsonPath": f"{_TRAFFIC}[?(@.latestRevision==true)].revisionName",
     "name": "LatestReadyRevision", "type": "string", "priority": 1},
    {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
]


def _component() -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 0},
            "containerConcurrency": {"type": "integer", "minimum": 0},
            "timeout": {"type": "integer", "minimum": 0},
        },
    }


def inference_service_crd() -> dict[str, Any]:
    """Our structural InferenceService CRD (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "serving.kserve.io",
            "names": {"kind": "InferenceService", "listKind": "InferenceServiceList",
                      "plural": "inferenceservices", "singular": "inferenceservice",
                      "shortNames": ["isvc"], "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "required": ["predictor"],
                            "properties": {"predictor": _component(),
                                           "transformer": _component(),
                                           "explainer": _component()},
                        },
                        "status": {"type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True},
                    },
                }},
            }],
        },
    }


def read_crd(path: Path) -> dict[str, Any]:
    """A CRD from a YAML file; raises ValueError when it is not the InferenceService CRD."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition" or (
        (doc.get("metadata") or {}).get("name") != CRD_NAME
    ):
        raise ValueError(f"{path}: not the {CRD_NAME} CustomResourceDefinition")
    return doc


def install_crd(api_client: Any, crd: dict[str, Any]) -> None:
    """Create or replace `crd` and wait until the API server says it is Established."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api: Any = client.ApiextensionsV1Api(api_client)
    body = {k: v for k, v in crd.items() if k != "status"}
    body["metadata"] = {"name": CRD_NAME}
    try:
        api.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = api.read_custom_resource_definition(CRD_NAME)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        api.replace_custom_resource_definition(CRD_NAME, body)
    deadline = time.monotonic() + ESTABLISHED_TIMEOUT_S
    while True:
        # Right after a create the read can race the API server's own status update: loop.
        conditions = api.read_custom_resource_definition(CRD_NAME).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {CRD_NAME} CRD was not Established in "
                               f"{ESTABLISHED_TIMEOUT_S:g} s")
        time.sleep(0.2)
