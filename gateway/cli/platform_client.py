"""The CLI's client of a running local platform's rollout API (`modelserve apply/canary/...`).

It sends what `kubectl` sends to a cluster, to the control plane's admin port (`--admin-url`,
default http://127.0.0.1:8082) instead of the Kubernetes API: `apply` POSTs each
InferenceService document; `canary`, `promote` and `rollback` PATCH the same merge / JSON
patches `gateway/cli/kube.py` sends with `--kube`; `delete` DELETEs.

The admin token comes from `--token`, else `$MODELSERVE_ADMIN_TOKEN`, else the file `modelserve
up` wrote for that admin port (`gateway.controlplane.api.tokens`): on one machine, nothing to
pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.cli.kube import canary_patch, promote_patch, rollback_problem, summarize
from gateway.controlplane.api.tokens import find_token, token_file
from gateway.controlplane.manifests import Problem, is_inference_service, iter_documents
from gateway.controlplane.patches import JSON_PATCH, MERGE_PATCH

__all__ = [
    "DEFAULT_ADMIN_URL",
    "PlatformClient",
    "PlatformError",
    "admin_token",
    "run_apply",
    "run_delete",
    "run_rollout",
]

TIMEOUT_S = 30.0
DEFAULT_ADMIN_URL = "http://127.0.0.1:8082"


def admin_token(url: str, given: str | None) -> str | None:
    """The admin token to send: `given` (--token), `$MODELSERVE_ADMIN_TOKEN`, or the one
    `modelserve up` wrote for the platform at `url`."""
    return given or os.environ.get("MODELSERVE_ADMIN_TOKEN") or find_token(url)


class PlatformError(Exception):
    """The platform could not be reached or said no; the message is one line for the user."""


class PlatformClient:
    """`/v1/services` of the control plane at `url` (its admin port), with an admin token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"authorization": f"Bearer {token}"} if token else {}

    def get(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/services/{name}")[1]

    def list(self) -> dict[str, Any]:
        """`{"services": [...]}`: every service's document."""
        return self._request("GET", "/v1/services")[1]

    def apply(self, doc: Any) -> tuple[dict[str, Any], bool]:
        """(the service's document, whether it was created)."""
        status, body = self._request("POST", "/v1/services", doc, "application/json")
        return body, status == 201

    def patch(self, name: str, body: Any, content_type: str) -> dict[str, Any]:
        return self._request("PATCH", f"/v1/services/{name}", body, content_type)[1]

    def delete(self, name: str) -> None:
        self._request("DELETE", f"/v1/services/{name}")

    def _request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = dict(self.headers)
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["content-type"] = content_type or "application/json"
        try:
            response = httpx.request(
                method, self.url + path, content=content, headers=headers, timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"cannot reach the platform at {self.url}: {exc}") from exc
        try:
            doc = response.json()
        except ValueError:
            doc = {"error": response.text}
        if response.status_code >= 400:
            message = doc.get("error", response.text) if isinstance(doc, dict) else doc
            if response.status_code == 401:
                port = urlsplit(self.url).port or 8082
                message = (
                    f"{message}; this CLI looked in {token_file(port)} (run it with the same "
                    "XDG_RUNTIME_DIR as `up`), or pass --token / MODELSERVE_ADMIN_TOKEN"
                )
            raise PlatformError(f"{response.status_code}: {message}")
        return response.status_code, doc


def _documents(paths: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    docs, problems = [], []
    for item in iter_documents(paths):
        if isinstance(item, Problem):
            problems.append(str(item))
        elif is_inference_service(item):
            docs.append((item.where, item.data))
        else:
            kind = item.data.get("kind") if isinstance(item.data, dict) else None
            print(f"{item.where}: skipping kind {kind!r} (not an InferenceService)",
                  file=sys.stderr)
    if problems:
        raise PlatformError("; ".join(problems))
    if not docs:
        raise PlatformError(f"no InferenceService in {', '.join(map(str, paths))}")
    return docs


def run_apply(args: argparse.Namespace) -> int:
    """`modelserve apply FILE...`: 0 when every document was applied."""
    client = PlatformClient(args.admin_url, admin_token(args.admin_url, args.token))
    try:
        documents = _documents(args.files)
    except PlatformError as exc:
        return _error(str(exc))
    failed = 0
    for where, data in documents:
        try:
            doc, created = client.apply(data)
        except PlatformError as exc:
            failed += 1
            _error(f"{where}: {exc}")
            continue
        name = doc.get("metadata", {}).get("name")
        print(f"inferenceservice.serving.kserve.io/{name} {'created' if created else 'configured'}")
    return 1 if failed else 0


def run_rollout(args: argparse.Namespace) -> int:
    """`canary`, `promote`, `rollback` against the local platform."""
    client = PlatformClient(args.admin_url, admin_token(args.admin_url, args.token))
    try:
        current = client.get(args.name)
        component = args.component or _entry_component(current)
        if args.command == "canary":
            doc = client.patch(args.name, canary_patch(args.percent, component), MERGE_PATCH)
        elif args.command == "promote":
            try:
                doc = client.patch(args.name, promote_patch(component), JSON_PATCH)
            except PlatformError as exc:
                if str(exc).startswith("422"):
                    raise PlatformError(
                        f"{exc} (no spec.{component}.canaryTrafficPercent to remove: "
                        "is a canary in progress?)"
                    ) from exc
                raise
        else:
            problem = rollback_problem(current, component)
            if problem is not None:
                raise PlatformError(problem)
            doc = client.patch(args.name, canary_patch(0, component), MERGE_PATCH)
    except PlatformError as exc:
        return _error(str(exc))
    print(f"{args.command}: {args.name} patched")
    print("\n".join(summarize(doc, component)))
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """`modelserve delete NAME` against the local platform."""
    client = PlatformClient(args.admin_url, admin_token(args.admin_url, args.token))
    try:
        client.delete(args.name)
    except PlatformError as exc:
        return _error(str(exc))
    print(f'inferenceservice.serving.kserve.io "{args.name}" deleted')
    return 0


def _entry_component(doc: dict[str, Any]) -> str:
    """The component that takes the service's traffic: where the local split lives."""
    components = (doc.get("status") or {}).get("components") or {}
    return next(iter(components), "predictor")


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1
