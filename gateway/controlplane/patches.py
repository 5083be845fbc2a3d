"""The two patch formats the Kubernetes API takes for a custom resource, applied to a document.

`PATCH /v1/services/NAME` on the local platform takes exactly what `kubectl patch --type merge`
and `--type json` send to a cluster (and what `modelserve canary/promote/rollback` send either
way): RFC 7386 JSON merge patches (`application/merge-patch+json`) and RFC 6902 JSON patches
(`application/json-patch+json`). A patch that does not apply raises `PatchError`, which the API
answers with 422, as the API server does ("the server rejected our request ...").
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["JSON_PATCH", "MERGE_PATCH", "PatchError", "apply_patch", "json_patch", "merge_patch"]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class PatchError(ValueError):
    """A patch that is malformed or does not apply to the document."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"path {path!r}: not a JSON pointer (RFC 6901)")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return node


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 `add`, `remove`, `replace` and `test` (what rollouts use), all or nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {index}: needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise PatchError(f"operation {index}: cannot {kind} the whole document")
        parent, key = _parent(doc, parts, path), parts[-1]
        if kind == "test":
            current = _get(parent, key, path)
            if current != op.get("value"):
                raise PatchError(f"test operation failed at {path!r}")
        elif kind == "remove":
            _get(parent, key, path)
            if isinstance(parent, list):
                del parent[int(key)]
            else:
                del parent[key]
        elif kind in ("add", "replace"):
            if "value" not in op:
                raise PatchError(f"operation {index}: {kind} needs a 'value'")
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if key == "-" and kind == "add":
                    parent.append(value)
                elif key.isdigit() and int(key) <= len(parent) - (kind == "replace"):
                    if kind == "add":
                        parent.insert(int(key), value)
                    else:
                        parent[int(key)] = value
                else:
                    raise PatchError(f"doc is missing path: {path!r}")
            elif isinstance(parent, dict):
                if kind == "replace":
                    _get(parent, key, path)
                parent[key] = value
            else:
                raise PatchError(f"doc is missing path: {path!r}")
        else:
            raise PatchError(f"operation {index}: op {kind!r} is not supported here")
    return doc


def _get(parent: Any, key: str, path: str) -> Any:
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise PatchError(f"jsonpatch operation does not apply: doc is missing path: {path!r}")


def apply_patch(target: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    """`body` applied to `target` as its content type says; raises PatchError."""
    media = content_type.split(";")[0].strip().lower()
    if media == MERGE_PATCH:
        if not isinstance(body, dict):
            raise PatchError("a merge patch of a resource is a JSON object")
        result = merge_patch(target, body)
    elif media == JSON_PATCH:
        result = json_patch(target, body)
    else:
        raise PatchError(
            f"content type {content_type!r}: use {MERGE_PATCH} or {JSON_PATCH} "
            "(strategic merge patches do not apply to custom resources)"
        )
    if not isinstance(result, dict):
        raise PatchError("the patched resource is not an object")
    return result
