"""Canary rollouts of an InferenceService through the Kubernetes API (`modelserve ... --kube`).

Each operation sends exactly what the documented kubectl command sends:

    canary N  kubectl patch isvc NAME --type merge \
                  -p '{"spec":{"predictor":{"canaryTrafficPercent":N}}}'
    promote   kubectl patch isvc NAME --type json \
                  -p '[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]'
    rollback  canary 0 (refused when no canary is in progress: after a promote KServe has
              nothing to roll back to)
    status    kubectl get isvc NAME -o json, summarised
    delete    kubectl delete isvc NAME

The content type is always given explicitly: the API server answers 415 to a strategic-merge
patch of a custom resource, and the client rewrites `application/json-patch+json` to strategic
merge when the body is not a list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.controlplane.kube.crd import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from gateway.isvc_status import ComponentStatus, Condition

__all__ = [
    "COMPONENTS",
    "InferenceServices",
    "KubeError",
    "canary_patch",
    "connect",
    "parse_percent",
    "promote_patch",
    "rollback_problem",
    "run_command",
    "summarize",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
COMPONENTS = ("predictor", "transformer")
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT_S = 30.0


class KubeError(Exception):
    """A failed Kubernetes operation, with a one-line message for the user."""


def parse_percent(text: str) -> int:
    """`--percent`: an integer from 0 to 100 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 100, got {text!r}")
    return value


def canary_patch(percent: int, component: str = "predictor") -> dict[str, Any]:
    """The merge patch that sends `percent`% of the component's traffic to the latest revision."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"canaryTrafficPercent must be an integer from 0 to 100, got {percent!r}")
    _check_component(component)
    return {"spec": {component: {"canaryTrafficPercent": percent}}}


def promote_patch(component: str = "predictor") -> list[dict[str, str]]:
    """The JSON patch that removes canaryTrafficPercent: the latest revision takes all traffic."""
    _check_component(component)
    return [{"op": "remove", "path": f"/spec/{component}/canaryTrafficPercent"}]


def rollback_problem(isvc: dict[str, Any], component: str = "predictor") -> str | None:
    """Why `rollback` cannot work on this InferenceService, or None.

    A rollback is `canaryTrafficPercent: 0` during a canary. After a promote (the field
    removed) KServe's controller records the promoted revision as the rolled-out one and has
    no previous one to send the traffic to: patching 0 then changes nothing, so say so.
    """
    name = (isvc.get("metadata") or {}).get("name", "?")
    spec = (isvc.get("spec") or {}).get(component) or {}
    if spec.get("canaryTrafficPercent") is None:
        return (
            f"nothing to roll back: {name} has no canary in progress "
            f"(spec.{component}.canaryTrafficPercent is not set: the latest revision was "
            "promoted or never split); to go back, apply the previous spec, which makes a "
            "new revision of it"
        )
    return None


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, got {component!r}")


# --- the API ---------------------------------------------------------------------------------


class InferenceServices:
    """InferenceServices in one namespace, through a `kubernetes.client.CustomObjectsApi`."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = self._call(name, self.api.get_namespaced_custom_object, name=name)
        return doc

    def list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call(
            None, self.api.list_namespaced_custom_object
        ).get("items", [])
        return items

    def set_canary(self, name: str, percent: int, component: str = "predictor") -> dict[str, Any]:
        return self.patch(name, canary_patch(percent, component), MERGE_PATCH)

    def promote(self, name: str, component: str = "predictor") -> dict[str, Any]:
        try:
            return self.patch(name, promote_patch(component), JSON_PATCH)
        except KubeError as exc:
            if "(422)" in str(exc):  # the path to remove is missing: nothing to promote
                raise KubeError(
                    f"{exc} (no spec.{component}.canaryTrafficPercent to remove: "
                    "is a canary in progress?)"
                ) from exc
            raise

    def rollback(self, name: str, component: str = "predictor") -> dict[str, Any]:
        problem = rollback_problem(self.get(name), component)
        if problem is not None:
            raise KubeError(problem)
        return self.set_canary(name, 0, component)

    def delete(self, name: str) -> None:
        self._call(name, self.api.delete_namespaced_custom_object, name=name)

    def patch(self, name: str, body: Any, content_type: str) -> dict[str, Any]:
        """PATCH with `content_type` exactly (the generated client's default is merge)."""
        result: dict[str, Any] = self._call(
            name, self.api.patch_namespaced_custom_object, name=name, body=body,
            _content_type=content_type,
        )
        return result

    def _call(self, isvc: str | None, method: Any, **kwargs: Any) -> Any:
        # kubernetes is imported lazily throughout: it costs ~0.6 s on every CLI start.
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=TIMEOUT_S, **kwargs
            )
        except ApiException as exc:
            raise KubeError(api_error_message(exc, isvc, self.namespace)) from exc
        except HTTPError as exc:
            host = self.api.api_client.configuration.host
            raise KubeError(f"cannot reach the Kubernetes API at {host}: {exc}") from exc


def api_error_message(exc: Any, name: str | None, namespace: str) -> str:
    """One line for an `ApiException`: what went wrong, with the server's own message."""
    status, message = exc.status, str(exc.reason or "")
    details: dict[str, Any] = {}
    try:
        doc = json.loads(exc.body or "")
        message, details = doc.get("message") or message, doc.get("details") or {}
    except (ValueError, AttributeError):
        pass
    if status == 404:
        if name is not None and details.get("name") == name:
            return f"InferenceService {name} not found in namespace {namespace}"
        return (
            f"{GROUP}/{VERSION} {PLURAL} is not served by this cluster: is KServe installed? "
            f"(404: {message})"
        )
    label = {
        401: "unauthorized (401): the cluster rejected the kubeconfig's credentials",
        403: "forbidden (403)",
        415: "unsupported media type (415)",
        422: "invalid (422)",
    }.get(status, f"{status} {exc.reason or ''}".strip())
    return f"{label}: {message}"


def connect(kubeconfig: str | None = None, namespace: str | None = None) -> InferenceServices:
    """Client from `kubeconfig`, else $KUBECONFIG or ~/.kube/config, else in-cluster config.

    The namespace defaults to the kubeconfig context's (in a pod: the service account's), then
    `default`.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if kubeconfig and not Path(kubeconfig).is_file():
        raise KubeError(f"--kubeconfig {kubeconfig}: no such file")
    try:
        if kubeconfig or any(Path(p).is_file() for p in path.split(os.pathsep) if p):
            config.load_kube_config(
                config_file=path, client_configuration=configuration, persist_config=False
            )
            _, current = config.list_kube_config_contexts(path)
            namespace = namespace or (current.get("context") or {}).get("namespace")
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
            if not namespace and SA_NAMESPACE.is_file():
                namespace = SA_NAMESPACE.read_text().strip()
        else:
            raise KubeError(
                "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG, "
                "or run inside a cluster"
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise KubeError(f"kubeconfig {path}: {exc}") from exc
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    return InferenceServices(api, namespace or "default")


# --- status ----------------------------------------------------------------------------------


def summarize(isvc: dict[str, Any], component: str | None = None) -> list[str]:
    """Human-readable lines: URL, per component the spec's canary and the traffic, conditions."""
    from pydantic import ValidationError

    from gateway.isvc_status import InferenceServiceStatus

    meta, spec, raw = isvc.get("metadata", {}), isvc.get("spec", {}), isvc.get("status") or {}
    lines = [f"{meta.get('name')}  (namespace {meta.get('namespace')})"]
    try:
        status = InferenceServiceStatus.model_validate(raw)
    except ValidationError as exc:
        return [*lines, f"  status: not in KServe's shape ({exc.error_count()} problem(s))"]
    lines.append(f"  url: {status.url or '-'}")
    components = status.components
    names = [component] if component else [c for c in COMPONENTS if c in spec or c in components]
    for comp in names:
        lines.extend(_component_lines(comp, spec.get(comp) or {}, components.get(comp)))
    if not raw:
        lines.append("  status: none reported yet (no controller has seen it)")
    elif status.conditions:
        lines.append("  conditions: " + ", ".join(_condition(c) for c in status.conditions))
    return lines


def _component_lines(name: str, spec: dict[str, Any], status: ComponentStatus | None) -> list[str]:
    canary = spec.get("canaryTrafficPercent")
    lines = [f"  {name}: canaryTrafficPercent {'-' if canary is None else canary} (spec)"]
    if status is None:
        return lines
    for route in status.traffic:
        tags = [f"tag {route.tag}"] if route.tag else []
        if route.latestRevision:
            tags.append("latestRevision")
        extra = f"  ({', '.join(tags)})" if tags else ""
        lines.append(f"    {route.percent:>3}%  {route.revisionName}{extra}")
    for key in ("latestReadyRevision", "latestCreatedRevision", "previousRolledoutRevision"):
        if value := getattr(status, key):
            lines.append(f"    {key}: {value}")
    return lines


def _condition(condition: Condition) -> str:
    text = f"{condition.type}={condition.status}"
    if condition.status != "True" and (condition.reason or condition.message):
        text += f" ({': '.join(w for w in (condition.reason, condition.message) if w)})"
    return text


# --- the CLI's commands ----------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """`canary`, `promote`, `rollback`, `status`, `delete` with --kube: 0 done, 1 the API or
    the rollout's state said no."""
    try:
        services = connect(args.kubeconfig, args.namespace)
        if args.command == "delete":
            services.delete(args.name)
            print(f'inferenceservice.serving.kserve.io "{args.name}" deleted')
            return 0
        if args.command == "status":
            docs = [services.get(args.name)] if args.name else services.list()
            if not docs:
                print(f"no InferenceServices in namespace {services.namespace}")
            for doc in docs:
                print("\n".join(summarize(doc, args.component)))
            return 0
        component = args.component or "predictor"
        if args.command == "canary":
            doc = services.set_canary(args.name, args.percent, component)
        elif args.command == "promote":
            doc = services.promote(args.name, component)
        else:
            doc = services.rollback(args.name, component)
    except KubeError as exc:
        print(f"modelserve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"{args.command}: {args.name} patched")
    print("\n".join(summarize(doc, component)))
    return 0
