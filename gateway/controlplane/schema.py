"""Check manifests as a Kubernetes API server would: the CRD's openAPIV3Schema, Draft 4.

A real server validates types and required fields, then silently prunes fields its schema does
not know; `strict` reports those instead, since a pruned field is usually a typo.
The `x-kubernetes-*` extensions and `default`s carry no validation meaning here and are ignored
(jsonschema skips keywords it does not know).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

from gateway.controlplane.manifests import (
    API_VERSION,
    Document,
    Problem,
    duplicate_name,
    is_inference_service,
    iter_documents,
    parse_document,
    runnable_problems,
)

__all__ = ["load_crd_schema", "schema_problems", "unknown_fields", "validate_paths"]


def load_crd_schema(path: Path, version: str = "v1beta1") -> dict[str, Any]:
    """The openAPIV3Schema of `version` in a CustomResourceDefinition file (first if absent)."""
    try:
        with path.open() as stream:
            docs = [d for d in yaml.load_all(stream, Loader=yaml.CSafeLoader) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the CRD: {exc}") from exc
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            versions = doc.get("spec", {}).get("versions") or []
            chosen = next(
                (v for v in versions if v.get("name") == version), versions[0] if versions else None
            )
            schema = (chosen or {}).get("schema", {}).get("openAPIV3Schema")
            if isinstance(schema, dict):
                return schema
    raise ValueError(f"{path}: no CustomResourceDefinition with an openAPIV3Schema")


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _leaf_errors(error: ValidationError) -> list[ValidationError]:
    # anyOf/oneOf failures hide the useful messages in their context.
    if error.context:
        return [leaf for sub in error.context for leaf in _leaf_errors(sub)]
    return [error]


def schema_problems(doc: Document, schema: dict[str, Any]) -> list[Problem]:
    """Type, enum and required-field errors of one document against the CRD schema."""
    validator = Draft4Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(e.absolute_path)):
        if error.context and error.validator in ("anyOf", "oneOf"):
            messages = sorted({e.message for e in _leaf_errors(error)})
            problems.append(
                Problem(
                    doc.where,
                    _path(error.absolute_path),
                    f"{error.message}: " + "; ".join(messages),
                )
            )
        else:
            problems.append(Problem(doc.where, _path(error.absolute_path), error.message))
    return problems


def unknown_fields(data: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> list[str]:
    """JSON paths of fields the schema does not declare (what a real server would prune)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(data, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, value in data.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], (*path, key))
            elif isinstance(additional, dict):
                found += unknown_fields(value, additional, (*path, key))
            elif properties is not None and additional is not True:
                found.append(_path((*path, key)))
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            found += unknown_fields(item, schema["items"], (*path, i))
    return found


def validate_paths(
    paths: list[Path], schema: dict[str, Any] | None = None, strict: bool = False
) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) for every InferenceService in `paths`.

    Problems: YAML errors, our typed model's errors, duplicate names, and with `schema` the
    CRD's; with `strict` also unknown fields. Warnings: what a cluster accepts but
    `modelserve up` cannot run, and documents of other kinds.
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    seen: dict[str, str] = {}
    for item in iter_documents(paths):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        if not is_inference_service(item):
            kind = item.data.get("kind") if isinstance(item.data, dict) else None
            warnings.append(
                Problem(
                    item.where,
                    "",
                    f"skipped: kind {kind!r} is not an InferenceService ({API_VERSION})",
                )
            )
            continue
        if schema is not None:
            problems += schema_problems(item, schema)
            if strict:
                problems += [
                    Problem(item.where, path, "unknown field (a server would prune it)")
                    for path in unknown_fields(item.data, schema)
                ]
        parsed = parse_document(item)
        if isinstance(parsed, list):
            known = {(p.path, p.where) for p in problems}
            problems += [p for p in parsed if (p.path, p.where) not in known]
            continue
        duplicate = duplicate_name(parsed.name, item.where, seen)
        if duplicate is not None:
            problems.append(duplicate)
        warnings += [
            Problem(
                p.where, p.path, f"{p.message} (fine in a cluster; `modelserve up` cannot run it)"
            )
            for p in runnable_problems(parsed, item.where)
        ]
    return problems, warnings
