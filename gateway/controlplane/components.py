"""Turn an InferenceService component into a local launch plan: argv, env and ports.

What KServe's controller and kubelet do for a pod, done for a process: the model storage is
"mounted" by pointing `--model_dir` at a local directory (STORAGE_URI `pvc://<claim>/<path>`
becomes `<models_root>/<path>`), the container ports become free local ports, and a
transformer gets `--predictor_host` of its predictor (the controller injects it in a cluster).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.controlplane.manifests import ComponentName, ComponentSpec, InferenceService
from gateway.controlplane.runtimes import RuntimeNotAvailable, container_for

__all__ = [
    "LaunchPlan",
    "PlanError",
    "free_port",
    "parse_args",
    "plan_component",
    "plan_service",
    "resolve_storage_uri",
    "revision_name",
]

MOUNT_PATH = "/mnt/models"  # where KServe's storage initializer puts the model
REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://", "hf://", "azure://", "oci://")
# Flags a local run decides, in both `--flag=value` and `--flag value` forms.
PORT_FLAGS = ("--http_port", "--grpc_port")


class PlanError(ValueError):
    """A component that cannot be launched locally as written."""


@dataclass(frozen=True)
class LaunchPlan:
    """How to run one component of one service as a local process."""

    service: str
    namespace: str
    component: ComponentName
    argv: tuple[str, ...]
    env: dict[str, str] = field(hash=False)
    http_port: int
    grpc_port: int
    model_dir: Path | None  # the local model directory, None when the server downloads it
    revision_number: int = 1
    replica: int = 1

    @property
    def name(self) -> str:
        """The prefix of the component's log lines: `sklearn-iris-predictor` for the first
        replica of the first revision, else the revision and replica number
        (`sklearn-iris-predictor-00002-1`)."""
        if self.revision_number == 1 and self.replica == 1:
            return f"{self.service}-{self.component}"
        return f"{self.revision}-{self.replica}"

    @property
    def revision(self) -> str:
        """Knative's revision name: `{service}-{component}-{number:05d}`."""
        return revision_name(self.service, self.component, self.revision_number)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def ready_url(self) -> str:
        return f"{self.http_url}/v2/health/ready"


def revision_name(service: str, component: str, number: int) -> str:
    """Knative's name for revision `number` of a component: `sklearn-iris-predictor-00002`."""
    return f"{service}-{component}-{number:05d}"


def free_port() -> int:
    """A TCP port nothing listens on right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_args(args: list[str]) -> list[tuple[str, str | None]]:
    """Container args as (flag, value) pairs; `--flag=v` and `--flag v` read the same.

    A token that is not a flag and follows no flag is kept as (token, None).
    """
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") and "=" in token:
            flag, value = token.split("=", 1)
            pairs.append((flag, value))
        elif token.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            pairs.append((token, args[i + 1]))
            i += 1
        else:
            pairs.append((token, None))
        i += 1
    return pairs


def _get(pairs: list[tuple[str, str | None]], *flags: str) -> str | None:
    for flag, value in pairs:
        if flag in flags:
            return value
    return None


def _set(
    pairs: list[tuple[str, str | None]], flag: str, value: str, aliases: tuple[str, ...] = ()
) -> list[tuple[str, str | None]]:
    """Replace every occurrence of `flag` (or an alias) by one `flag=value`, in place."""
    out: list[tuple[str, str | None]] = []
    placed = False
    for pair in pairs:
        if pair[0] == flag or pair[0] in aliases:
            if not placed:
                out.append((flag, value))
                placed = True
        else:
            out.append(pair)
    if not placed:
        out.append((flag, value))
    return out


def _render(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [flag if value is None else f"{flag}={value}" for flag, value in pairs]


def resolve_storage_uri(uri: str, models_root: Path) -> str:
    """Where a storage URI lives locally: a directory path, or a URI the server downloads."""
    if uri.startswith("pvc://"):
        _claim, _, sub = uri[len("pvc://") :].partition("/")
        return str((models_root / sub).resolve() if sub else models_root.resolve())
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if uri.startswith(REMOTE_SCHEMES):
        return uri
    if "://" in uri:
        raise PlanError(f"storage URI {uri!r}: scheme not supported locally")
    return uri


def _model_dir(
    pairs: list[tuple[str, str | None]], env: dict[str, str], models_root: Path, where: str
) -> str | None:
    """The local value of `--model_dir`, from the flag and the container's STORAGE_URI."""
    flag_value = _get(pairs, "--model_dir", "--storage_uri")
    storage_uri = env.get("STORAGE_URI")
    if flag_value is None or flag_value == MOUNT_PATH or flag_value.startswith(MOUNT_PATH + "/"):
        if storage_uri is None:
            if flag_value is None:
                return None
            raise PlanError(
                f"{where}: --model_dir={flag_value} is the storage mount, but the "
                "container sets no STORAGE_URI to say what is mounted there"
            )
        mounted = resolve_storage_uri(storage_uri, models_root)
        rest = (flag_value or MOUNT_PATH)[len(MOUNT_PATH) :].lstrip("/")
        return str(Path(mounted) / rest) if rest and "://" not in mounted else mounted
    return resolve_storage_uri(flag_value, models_root)


def _command(command: list[str], where: str) -> list[str]:
    exe = Path(command[0]).name
    if exe.startswith("python"):
        return [sys.executable, *command[1:]]
    if shutil.which(command[0]) is None:
        raise PlanError(f"{where}: command {command[0]!r} is not on PATH")
    return list(command)


def plan_component(
    isvc: InferenceService,
    component: ComponentName,
    spec: ComponentSpec,
    models_root: Path,
    predictor: LaunchPlan | None = None,
    port: Callable[[], int] = free_port,
    revision: int = 1,
    replica: int = 1,
) -> LaunchPlan:
    """The launch plan of one component (of replica `replica` of revision `revision`); a
    transformer needs its predictor's plan."""
    where = f"{isvc.name} {component}"
    if spec.model is not None:
        try:
            container = container_for(isvc.name, spec.model)
        except RuntimeNotAvailable as exc:
            raise PlanError(f"{where}: {exc}") from exc
    elif len(spec.containers) != 1 or not spec.containers[0].command:
        raise PlanError(f"{where}: needs exactly one container with a command to run locally")
    else:
        container = spec.containers[0]
    manifest_env = {e.name: e.value for e in container.env if e.value is not None}
    pairs = parse_args(list(container.args))
    http_port, grpc_port = port(), port()
    while grpc_port == http_port:
        grpc_port = port()
    pairs = _set(pairs, "--http_port", str(http_port))
    pairs = _set(pairs, "--grpc_port", str(grpc_port))
    model_dir = _model_dir(pairs, manifest_env, models_root, where)
    if model_dir is not None:
        pairs = _set(pairs, "--model_dir", model_dir, aliases=("--storage_uri",))
        if "STORAGE_URI" in manifest_env:
            manifest_env["STORAGE_URI"] = model_dir
    if component == "transformer":
        if predictor is None:
            raise PlanError(f"{where}: a transformer needs its predictor's plan")
        grpc = _get(pairs, "--predictor_protocol") == "grpc-v2"
        target = predictor.grpc_target if grpc else f"127.0.0.1:{predictor.http_port}"
        pairs = _set(pairs, "--predictor_host", target)
    local_dir = None
    if model_dir is not None and "://" not in model_dir:
        local_dir = Path(model_dir)
    return LaunchPlan(
        service=isvc.name,
        namespace=isvc.namespace,
        component=component,
        argv=(*_command(container.command, where), *_render(pairs)),
        env={**os.environ, **manifest_env, "PYTHONUNBUFFERED": "1"},
        http_port=http_port,
        grpc_port=grpc_port,
        model_dir=local_dir,
        revision_number=revision,
        replica=replica,
    )


def plan_service(
    isvc: InferenceService,
    models_root: Path,
    port: Callable[[], int] = free_port,
    revision: int = 1,
    replica: int = 1,
) -> list[LaunchPlan]:
    """Launch plans for every component of one replica of a service, predictor first (its
    transformer calls this replica's predictor)."""
    plans: list[LaunchPlan] = []
    predictor: LaunchPlan | None = None
    for component, spec in isvc.components():
        plan = plan_component(
            isvc, component, spec, models_root, predictor, port, revision, replica
        )
        if component == "predictor":
            predictor = plan
        plans.append(plan)
    return plans
