"""What `up --kube-local` writes to its API server before it serves: the reconciler's RBAC and
the manifests it was given, applied as `kubectl apply` applies them.

`kubectl apply` on a custom resource is a client-side three-way merge: it records the applied
document in the `kubectl.kubernetes.io/last-applied-configuration` annotation and, on the next
apply, sends a JSON merge patch of what changed since then (a field dropped from the file is
sent as `null`, so it is removed). Doing the same here means the user's own `kubectl apply` of
the same files afterwards sees what `up` applied, and changes only what they changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.controlplane.kube.crd import GROUP, PLURAL, VERSION
from gateway.controlplane.manifests import (
    ManifestError,
    Problem,
    is_inference_service,
    iter_documents,
)

__all__ = [
    "LAST_APPLIED",
    "RECONCILER_ROLE",
    "apply_inference_service",
    "apply_manifests",
    "grant_reconciler",
    "merge_patch_between",
    "reconciler_binding",
    "reconciler_role",
    "read_inference_services",
]

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RECONCILER_ROLE = "modelserve-reconciler"


def reconciler_role(namespace: str) -> dict[str, Any]:
    """The least the reconciler needs: read InferenceServices, write only their status."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": RECONCILER_ROLE, "namespace": namespace},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
             "verbs": ["get", "update", "patch"]},
        ],
    }


def reconciler_binding(namespace: str, user: str) -> dict[str, Any]:
    """The RoleBinding that gives `user` the reconciler's Role."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": RECONCILER_ROLE, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": RECONCILER_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def grant_reconciler(api_client: Any, namespace: str, user: str) -> None:
    """Create (or replace) the reconciler's Role and its RoleBinding to `user`."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    rbac: Any = client.RbacAuthorizationV1Api(api_client)
    for body, create, replace in (
        (reconciler_role(namespace), rbac.create_namespaced_role,
         rbac.replace_namespaced_role),
        (reconciler_binding(namespace, user), rbac.create_namespaced_role_binding,
         rbac.replace_namespaced_role_binding),
    ):
        try:
            create(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            replace(RECONCILER_ROLE, namespace, body)


def merge_patch_between(before: Any, after: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `before` into `after`."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return after
    patch: dict[str, Any] = {key: None for key in before if key not in after}
    for key, value in after.items():
        if key not in before:
            patch[key] = value
        elif before[key] != value:
            patch[key] = merge_patch_between(before[key], value)
    return patch


def read_inference_services(paths: list[Path]) -> list[dict[str, Any]]:
    """The InferenceService documents in `paths` as they are written (other kinds skipped).
    Raises `ManifestError` for a file that cannot be read."""
    docs: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for item in iter_documents(paths):
        if isinstance(item, Problem):
            problems.append(item)
        elif is_inference_service(item):
            docs.append(item.data)
    if problems:
        raise ManifestError(problems)
    return docs


def apply_inference_service(api: Any, doc: dict[str, Any], namespace: str) -> str:
    """`kubectl apply` of one InferenceService through a `CustomObjectsApi`: "created",
    "configured" or "unchanged"."""
    from kubernetes.client.exceptions import ApiException

    meta = doc.setdefault("metadata", {})
    ns = meta.get("namespace") or namespace
    name = meta["name"]
    applied = json.loads(json.dumps(doc))
    applied["metadata"].setdefault("annotations", {}).pop(LAST_APPLIED, None)
    if not applied["metadata"]["annotations"]:
        del applied["metadata"]["annotations"]
    record = json.dumps(applied, sort_keys=True, separators=(",", ":"))
    body = json.loads(record)
    body["metadata"].setdefault("annotations", {})[LAST_APPLIED] = record
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise
    current = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    try:
        before = json.loads(annotations.get(LAST_APPLIED, "{}"))
    except ValueError:
        before = {}
    if before == applied:
        return "unchanged"
    patch = merge_patch_between(before, body)
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch,
                                       _content_type="application/merge-patch+json")
    return "configured"


def apply_manifests(api_client: Any, paths: list[Path], namespace: str) -> list[str]:
    """Apply every InferenceService in `paths`; one `kubectl apply`-style line each."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    lines = []
    for doc in read_inference_services(paths):
        name = (doc.get("metadata") or {}).get("name")
        result = apply_inference_service(api, doc, namespace)
        lines.append(f"inferenceservice.serving.kserve.io/{name} {result}")
    return lines
