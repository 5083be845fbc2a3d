"""InferenceService manifests: the subset of `serving.kserve.io/v1beta1` that `modelserve up` runs.

Manifests parse into typed models at the edge (file and JSON path named on every problem);
the rest of the control plane never sees raw dicts. Fields we do not use are kept, not
rejected, as a real API server would accept them (it prunes only what its schema lacks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "API_VERSION",
    "ComponentSpec",
    "Container",
    "Document",
    "InferenceService",
    "ManifestError",
    "ModelSpec",
    "Problem",
    "iter_documents",
    "load_manifests",
    "parse_document",
    "parse_service",
    "runnable_problems",
]

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
YAML_SUFFIXES = (".yaml", ".yml", ".json")
log = logging.getLogger("modelserve.controlplane")

ComponentName = Literal["predictor", "transformer"]


class _Model(BaseModel):
    # strict: Kubernetes rejects "10" for an integer field, so do we.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class EnvVar(_Model):
    name: str
    value: str | None = None
    valueFrom: dict[str, Any] | None = None


class ContainerPort(_Model):
    containerPort: int
    name: str | None = None
    protocol: str | None = None


class Container(_Model):
    name: str = "kserve-container"
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)
    resources: dict[str, Any] = Field(default_factory=dict)


class ModelFormat(_Model):
    name: str
    version: str | None = None


class ModelSpec(_Model):
    """A predictor's `model:` block: the model and the ServingRuntime that serves it."""

    modelFormat: ModelFormat
    runtime: str | None = None
    storageUri: str | None = None
    protocolVersion: str | None = None
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    resources: dict[str, Any] = Field(default_factory=dict)


class LoggerSpec(_Model):
    """A component's `logger:` block (KServe's LoggerSpec): send its requests and/or responses
    as CloudEvents to `url` (see `servers.payload_logger`). `storage`, `marshallerUrl` and the
    batch fields are KServe's cluster-side options: `runnable_problems` reports them."""

    mode: Literal["all", "request", "response"] = "all"
    url: str | None = None
    metadataHeaders: list[str] = Field(default_factory=list)
    metadataAnnotations: list[str] = Field(default_factory=list)


class ComponentSpec(_Model):
    containers: list[Container] = Field(default_factory=list)
    model: ModelSpec | None = None
    # The bounds KServe's validating webhook checks.
    minReplicas: int | None = Field(None, ge=0)
    maxReplicas: int | None = Field(None, ge=0)
    containerConcurrency: int | None = Field(None, ge=0)
    timeout: int | None = Field(None, ge=0)
    canaryTrafficPercent: int | None = Field(None, ge=0, le=100)
    logger: LoggerSpec | None = None


class InferenceServiceSpec(_Model):
    predictor: ComponentSpec
    transformer: ComponentSpec | None = None


class Metadata(_Model):
    name: str = Field(min_length=1)
    namespace: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class InferenceService(_Model):
    apiVersion: Literal["serving.kserve.io/v1beta1"]
    kind: Literal["InferenceService"]
    metadata: Metadata
    spec: InferenceServiceSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    def components(self) -> list[tuple[ComponentName, ComponentSpec]]:
        """The components to run, predictor first (a transformer needs its address)."""
        found: list[tuple[ComponentName, ComponentSpec]] = [("predictor", self.spec.predictor)]
        if self.spec.transformer is not None:
            found.append(("transformer", self.spec.transformer))
        return found

    @property
    def entry(self) -> ComponentName:
        """The component that receives the service's traffic."""
        return "transformer" if self.spec.transformer is not None else "predictor"


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file."""

    path: Path
    index: int  # 0-based position in a multi-document file
    data: Any

    @property
    def where(self) -> str:
        return f"{self.path}" if self.index == 0 else f"{self.path} (document {self.index + 1})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where and what."""

    where: str
    path: str  # JSON path inside the document, "" for the document itself
    message: str

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.path}: {self.message}"
            if self.path
            else (f"{self.where}: {self.message}")
        )


class ManifestError(ValueError):
    """Manifests that cannot be loaded or run; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _manifest_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError([Problem(str(path), "", "no such file or directory")])
    return files


def iter_documents(paths: list[Path]) -> Iterator[Document | Problem]:
    """Every non-empty YAML document in the files and directories given, or a parse problem."""
    for file in _manifest_files(paths):
        try:
            with file.open() as stream:
                docs = list(yaml.safe_load_all(stream))
        except (OSError, yaml.YAMLError) as exc:
            yield Problem(str(file), "", f"cannot read YAML: {exc}")
            continue
        for index, data in enumerate(docs):
            if data is not None:
                yield Document(file, index, data)


def is_inference_service(doc: Document) -> bool:
    return isinstance(doc.data, dict) and doc.data.get("kind") == KIND


def _json_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_document(doc: Document) -> InferenceService | list[Problem]:
    """The typed InferenceService, or the problems that stop it parsing."""
    try:
        return InferenceService.model_validate(doc.data)
    except ValidationError as exc:
        return [
            Problem(doc.where, _json_path(tuple(err["loc"])), err["msg"])
            for err in exc.errors(include_url=False)
        ]


# KServe's logger fields that need a cluster (object storage, a marshaller, batching).
_CLUSTER_LOGGER_FIELDS = ("storage", "marshallerUrl", "batchSize", "batchInterval")


def _logger_problems(logger: LoggerSpec | None, path: str, where: str) -> list[Problem]:
    if logger is None:
        return []
    problems = [
        Problem(where, f"{path}.{name}", "locally the logger only sends CloudEvents to `url`")
        for name in _CLUSTER_LOGGER_FIELDS
        if (logger.model_extra or {}).get(name) is not None
    ]
    if not logger.url:
        problems.append(Problem(where, f"{path}.url", "a local logger needs its `url`"))
    return problems


def runnable_problems(isvc: InferenceService, where: str) -> list[Problem]:
    """What stops `modelserve up` from running a (valid) InferenceService as local processes."""
    from gateway.controlplane.runtimes import RuntimeNotAvailable, resolve_runtime  # uses our types

    problems: list[Problem] = []
    for component, spec in isvc.components():
        path = f"spec.{component}"
        problems += _logger_problems(spec.logger, f"{path}.logger", where)
        if spec.model is not None:
            if spec.containers:
                problems.append(
                    Problem(where, f"{path}.containers", "a `model:` spec with containers beside "
                            "it cannot run locally")
                )
            try:
                resolve_runtime(spec.model)
            except RuntimeNotAvailable as exc:
                problems.append(Problem(where, f"{path}.model.runtime", str(exc)))
            continue
        if len(spec.containers) != 1:
            problems.append(
                Problem(
                    where,
                    f"{path}.containers",
                    (
                        "exactly one container, or a `model:` spec, is needed to run locally "
                        f"(shorthand specs such as `{component}.sklearn` need a cluster); found "
                        f"{len(spec.containers)} containers"
                    ),
                )
            )
            continue
        container = spec.containers[0]
        if not container.command:
            problems.append(
                Problem(
                    where,
                    f"{path}.containers[0].command",
                    (
                        "no command: a local run needs the container's command "
                        "(e.g. [python, -m, servers.sklearn]); the image's entrypoint is unknown "
                        "here"
                    ),
                )
            )
        for i, env in enumerate(container.env):
            if env.value is None:
                problems.append(
                    Problem(
                        where,
                        f"{path}.containers[0].env[{i}]",
                        (f"{env.name}: only literal `value`s can be set locally (no valueFrom)"),
                    )
                )
    return problems


def parse_service(data: Any, where: str) -> InferenceService:
    """One InferenceService document (e.g. applied through the API) that can run locally;
    raises `ManifestError` naming every problem."""
    if not isinstance(data, dict):
        raise ManifestError([Problem(where, "", "a manifest must be a mapping")])
    doc = Document(Path(where), 0, data)
    if not is_inference_service(doc):
        kind = data.get("kind")
        raise ManifestError([Problem(where, "kind", f"not an InferenceService: {kind!r}")])
    parsed = parse_document(doc)
    if isinstance(parsed, list):
        raise ManifestError(parsed)
    problems = runnable_problems(parsed, where)
    if problems:
        raise ManifestError(problems)
    return parsed


def duplicate_name(name: str, where: str, seen: dict[str, str]) -> Problem | None:
    """A problem when `name` was seen before; otherwise records where it was seen."""
    if name in seen:
        return Problem(where, "metadata.name", f"duplicate name {name!r} (also in {seen[name]})")
    seen[name] = where
    return None


def load_manifests(paths: list[Path]) -> list[InferenceService]:
    """Parse every InferenceService in `paths` (files or directories, multi-document YAML).

    Other kinds are skipped with a warning. Raises `ManifestError` listing every problem:
    bad fields, duplicate names, or components that cannot run locally.
    """
    services: list[InferenceService] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for item in iter_documents(paths):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        if not isinstance(item.data, dict):
            problems.append(Problem(item.where, "", "a manifest must be a mapping"))
            continue
        if not is_inference_service(item):
            log.warning(
                "%s: skipping kind %r (not an InferenceService)", item.where, item.data.get("kind")
            )
            continue
        parsed = parse_document(item)
        if isinstance(parsed, list):
            problems.extend(parsed)
            continue
        duplicate = duplicate_name(parsed.name, item.where, seen)
        if duplicate is not None:
            problems.append(duplicate)
            continue
        problems.extend(runnable_problems(parsed, item.where))
        services.append(parsed)
    if problems:
        raise ManifestError(problems)
    if not services:
        raise ManifestError(
            [Problem(", ".join(str(p) for p in paths), "", "no InferenceService found")]
        )
    return services
