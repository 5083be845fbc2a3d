"""A fake Kubernetes API server for InferenceServices, strict where the real one is.

Serves GET (one and list) and PATCH of `serving.kserve.io/v1beta1` inferenceservices on
127.0.0.1, records every request, and answers as kube-apiserver does: 415 to strategic-merge
(and any other content type but merge and JSON patch), 400 to a JSON patch that is not a
list, 422 when a patch cannot apply or the result breaks the schema, 404 with a `Status` for
unknown names, 401 without the expected bearer token. No controller runs: `status` stays what
the test stored.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str | None
    body: bytes


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            doc["details"] = self.details
        return doc


@dataclass
class FakeKube:
    """The server's state: objects by (namespace, name), requests in arrival order."""

    token: str
    url: str = ""  # set by start()
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("generation", 1)
        self.objects[(meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    def patches(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PATCH"]

    def handle(self, method: str, path: str, content_type: str | None, body: bytes) -> Any:
        if not path.startswith(PREFIX):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        parts = path[len(PREFIX):].split("/")
        if len(parts) == 2 and parts[1] == "inferenceservices" and method == "GET":
            items = [o for (ns, _), o in sorted(self.objects.items()) if ns == parts[0]]
            return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceServiceList",
                    "metadata": {"resourceVersion": "1"}, "items": items}
        if len(parts) != 3 or parts[1] != "inferenceservices":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name = parts[0], parts[2]
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise ApiError(
                404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found',
                name=name, group="serving.kserve.io", kind="inferenceservices",
            )
        if method == "GET":
            return obj
        if method != "PATCH":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        patched = apply_patch(obj, content_type, body)
        check_schema(name, patched)
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
        patched["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        self.objects[(namespace, name)] = patched
        return patched


def apply_patch(obj: dict[str, Any], content_type: str | None, body: bytes) -> dict[str, Any]:
    media = (content_type or "").split(";")[0].strip()
    if media not in PATCH_TYPES:
        raise ApiError(
            415, "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}, application/apply-patch+yaml",
        )
    try:
        patch = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"error decoding patch: {exc}") from exc
    if media == "application/merge-patch+json":
        if not isinstance(patch, dict):  # the result would not be an object at all
            raise ApiError(422, "Invalid", "the server rejected our request due to an error "
                           "in our request: merge patch must be a JSON object")
        result = merge_patch(obj, patch)
        assert isinstance(result, dict)
        return result
    if not isinstance(patch, list):
        raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type "
                       "jsonpatch.Patch")
    doc = copy.deepcopy(obj)
    for op in patch:
        json_patch_op(doc, op)
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch_op(doc: dict[str, Any], op: dict[str, Any]) -> None:
    """RFC 6902 add / remove / replace on object members (all the paths the CLI uses)."""
    kind, path = op.get("op"), op.get("path", "")
    keys = [k.replace("~1", "/").replace("~0", "~") for k in path.split("/")[1:]]
    if kind not in ("add", "remove", "replace") or not keys:
        raise ApiError(422, "Invalid", f"unsupported json patch operation {op!r}")
    parent: Any = doc
    for key in keys[:-1]:
        if not isinstance(parent, dict) or key not in parent:
            raise ApiError(422, "Invalid", f"{kind} operation does not apply: doc is missing "
                           f"path: {path}: missing value")
        parent = parent[key]
    last = keys[-1]
    if kind != "add" and (not isinstance(parent, dict) or last not in parent):
        raise ApiError(422, "Invalid", f"{kind} operation does not apply: doc is missing path: "
                       f"{path}: missing value")
    if kind == "remove":
        del parent[last]
    else:
        parent[last] = op.get("value")


def check_schema(name: str, obj: dict[str, Any]) -> None:
    """The CRD's checks on the fields canaries touch."""
    for component in ("predictor", "transformer"):
        value = (obj.get("spec", {}).get(component) or {}).get("canaryTrafficPercent")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ApiError(
                422, "Invalid",
                f'InferenceService.serving.kserve.io "{name}" is invalid: '
                f"spec.{component}.canaryTrafficPercent: Invalid value: "
                f'"{type(value).__name__}": spec.{component}.canaryTrafficPercent in body must '
                "be of type integer",
            )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        content_type = self.headers.get("Content-Type")
        with fake.lock:
            fake.requests.append(Recorded(self.command, path, content_type, body))
            try:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                code, doc = 200, fake.handle(self.command, path, content_type, body)
            except ApiError as exc:
                code, doc = exc.code, exc.status()
        payload = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeKube) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


def start(fake: FakeKube) -> tuple[str, ThreadingHTTPServer]:
    """Serve `fake` on a free port in a daemon thread; returns its URL and the server."""
    server = _Server(fake)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return fake.url, server
