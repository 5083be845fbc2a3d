"""Turn an InferenceService component into a local launch plan: argv, env and ports.

What KServe's controller and kubelet do for a pod, done for a process: the model storage is
"mounted" by pointing `--model_dir` at a local directory (STORAGE_URI `pvc://<claim>/<path>`
becomes `<models_root>/<path>`), the container ports become free local ports, and a
transformer gets `--predictor_host` of its predictor (the controller injects it in a cluster).

Every plan passes the launch and storage policy (`policy.LaunchPolicy`) first: what runs and
what it reads are checked here, before any process starts. The platform's own environment
(`platform_env`: loopback binding, the gRPC message limit, the pickle policy) is applied last,
so a manifest cannot override it.
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
from gateway.controlplane.policy import REMOTE_SCHEMES, LaunchPolicy, PolicyRefused
from gateway.controlplane.runtimes import RuntimeNotAvailable, container_for
from gateway.controlplane.tracing_env import check_otel_env, component_tracing_env
from servers.payload_logger import PayloadLoggerSettings

__all__ = [
    "LaunchPlan",
    "PlanError",
    "PolicyRefused",
    "PortAllocator",
    "free_port",
    "parse_args",
    "plan_component",
    "plan_service",
    "resolve_storage_uri",
    "revision_name",
]

MOUNT_PATH = "/mnt/models"  # where KServe's storage initializer puts the model
# Flags a local run decides, in both `--flag=value` and `--flag value` forms.
PORT_FLAGS = ("--http_port", "--grpc_port")
# Flags the platform decides and a manifest may not set (where a component listens).
PLATFORM_FLAGS = frozenset({"--bind_address", "--bind-address", "--host"})
# Every spelling of the model directory flag (`--model_repository`: the Triton launcher's).
MODEL_DIR_FLAGS = ("--model_dir", "--storage_uri", "--model_repository")
# Flags whose value the platform decides or checks: argparse would also take an abbreviation
# of them (`--model_d=/etc`), which would slip past the storage policy, so those are refused.
_OWNED_FLAGS = (*MODEL_DIR_FLAGS, *PORT_FLAGS, *PLATFORM_FLAGS, "--predictor_host")


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


# The logger's queue, per service (KServe's LoggerSpec has no such fields): annotation -> setting.
LOGGER_ANNOTATIONS = {
    "serving.modelserve.io/logger-queue-size": "queue_size",
    "serving.modelserve.io/logger-queue-bytes": "queue_bytes",
    "serving.modelserve.io/logger-overflow": "overflow",
    "serving.modelserve.io/logger-workers": "workers",
    "serving.modelserve.io/logger-retries": "max_retries",
}


def logger_env(
    isvc: InferenceService,
    component: ComponentName,
    spec: ComponentSpec,
    policy: LaunchPolicy,
    source: str,
    revision: str,
    endpoint: str,
) -> dict[str, str]:
    """The environment that turns on a component's payload logger (none without `logger:`).

    What KServe's controller passes its agent (`--log-url`, `--log-mode`, `--source-uri`,
    `--inference-service`, `--namespace`, `--endpoint`, `--component`), as one setting; the URL
    passes the launch policy first. `endpoint` is decided at launch (`canary` for a revision
    started as a canary), as the agent's flag is."""
    spec_logger = spec.logger
    if spec_logger is None:
        return {}
    where = f"{isvc.name} {component}"
    if not spec_logger.url:
        raise PlanError(
            f"{where}: logger.url is needed locally (in a cluster it defaults to the "
            "namespace's Knative broker, which does not exist here)"
        )
    policy.check_logger_url(spec_logger.url, where)
    annotations = isvc.metadata.annotations
    tuning = {
        setting: annotations[key] for key, setting in LOGGER_ANNOTATIONS.items()
        if key in annotations
    }
    try:
        settings = PayloadLoggerSettings.model_validate(
            {
                "url": spec_logger.url,
                "mode": spec_logger.mode,
                "inference_service": isvc.name,
                "namespace": isvc.namespace,
                "component": component,
                "endpoint": endpoint,
                "revision": revision,
                "source": source,
                "metadata_headers": tuple(spec_logger.metadataHeaders),
                "annotations": {
                    k: annotations[k] for k in spec_logger.metadataAnnotations if k in annotations
                },
                **tuning,
            },
            strict=False,  # the annotations are strings: "500" is a queue size
        )
    except ValueError as exc:
        raise PlanError(f"{where}: logger: {exc}") from exc
    return settings.to_env()


def revision_name(service: str, component: str, number: int) -> str:
    """Knative's name for revision `number` of a component: `sklearn-iris-predictor-00002`."""
    return f"{service}-{component}-{number:05d}"


def free_port() -> int:
    """A TCP port nothing listens on right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortAllocator:
    """Free ports on 127.0.0.1, never the same one twice from one allocator (a port freed by
    a stopped process may otherwise be handed to two starting ones)."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def __call__(self) -> int:
        while (port := free_port()) in self._used:
            pass
        self._used.add(port)
        return port


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


def resolve_storage_uri(uri: str, policy: LaunchPolicy, where: str = "storage") -> str:
    """Where a storage URI lives locally (a directory inside a models root), or the remote URI
    the server downloads; PolicyRefused when the storage policy says no."""
    if not uri.startswith(("pvc://", "file://", *REMOTE_SCHEMES)) and "://" in uri:
        raise PlanError(f"{where}: storage URI {uri[:200]!r}: scheme not supported locally")
    return policy.local_path(uri, where)


def _model_dir(
    pairs: list[tuple[str, str | None]], env: dict[str, str], policy: LaunchPolicy, where: str
) -> str | None:
    """The local value of `--model_dir`, from the flag and the container's STORAGE_URI."""
    flag_value = _get(pairs, *MODEL_DIR_FLAGS)
    storage_uri = env.get("STORAGE_URI")
    if flag_value is None or flag_value == MOUNT_PATH or flag_value.startswith(MOUNT_PATH + "/"):
        if storage_uri is None:
            if flag_value is None:
                return None
            raise PlanError(
                f"{where}: --model_dir={flag_value} is the storage mount, but the "
                "container sets no STORAGE_URI to say what is mounted there"
            )
        rest = (flag_value or MOUNT_PATH)[len(MOUNT_PATH) :].lstrip("/")
        if rest and not storage_uri.startswith(REMOTE_SCHEMES):
            # A path under the mount: checked as a whole, so `..` cannot leave the root.
            storage_uri = storage_uri.rstrip("/") + "/" + rest
        return resolve_storage_uri(storage_uri, policy, where)
    return resolve_storage_uri(flag_value, policy, where)


def _command(command: list[str], policy: LaunchPolicy, where: str) -> list[str]:
    policy.check_command(command, where)
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
    policy: LaunchPolicy | None = None,
    platform_env: dict[str, str] | None = None,
    endpoint: str = "default",
) -> LaunchPlan:
    """The launch plan of one component (of replica `replica` of revision `revision`, serving
    as the `endpoint` `default` or `canary`); a transformer needs its predictor's plan.
    `policy` defaults to the strict one over `models_root`; PolicyRefused when it refuses the
    spec."""
    policy = policy or LaunchPolicy(models_roots=(models_root,))
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
    policy.check_env([e.name for e in container.env], where)
    check_otel_env([e.name for e in container.env], policy, where)  # tracing_env.py
    pairs = parse_args(list(container.args))
    flags = [flag for flag, _ in pairs]
    policy.check_args(flags, where)
    if PLATFORM_FLAGS & set(flags):
        raise PolicyRefused(f"{where}: where a component listens is the platform's to decide")
    for flag in flags:
        if flag.startswith("--") and flag not in _OWNED_FLAGS and any(
            owned.startswith(flag) for owned in _OWNED_FLAGS
        ):
            raise PolicyRefused(
                f"{where}: {flag} abbreviates a flag the platform sets or checks; write it in "
                "full"
            )
    argv = _command(list(container.command), policy, where)
    http_port, grpc_port = port(), port()
    while grpc_port == http_port:
        grpc_port = port()
    pairs = _set(pairs, "--http_port", str(http_port))
    pairs = _set(pairs, "--grpc_port", str(grpc_port))
    model_dir = _model_dir(pairs, manifest_env, policy, where)
    if model_dir is not None:
        pairs = _set(pairs, "--model_dir", model_dir, aliases=MODEL_DIR_FLAGS[1:])
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
    logging_env = logger_env(
        isvc, component, spec, policy, f"http://127.0.0.1:{http_port}/",
        revision_name(isvc.name, component, revision), endpoint,
    )
    return LaunchPlan(
        service=isvc.name,
        namespace=isvc.namespace,
        component=component,
        argv=(*argv, *_render(pairs)),
        env={
            **os.environ,
            **manifest_env,
            **component_tracing_env(
                isvc.name, isvc.namespace, component,
                revision_name(isvc.name, component, revision), replica, manifest_env,
            ),
            "PYTHONUNBUFFERED": "1",
            **policy.component_env(),
            **logging_env,
            **(platform_env or {}),
        },
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
    policy: LaunchPolicy | None = None,
    platform_env: dict[str, str] | None = None,
) -> list[LaunchPlan]:
    """Launch plans for every component of one replica of a service, predictor first (its
    transformer calls this replica's predictor); see `plan_component`. A revision after the
    first, started while the spec asks for a canary split, is the `canary` endpoint."""
    plans: list[LaunchPlan] = []
    predictor: LaunchPlan | None = None
    entry = isvc.spec.transformer or isvc.spec.predictor
    percent = entry.canaryTrafficPercent
    if percent is None:
        percent = isvc.spec.predictor.canaryTrafficPercent
    endpoint = "canary" if revision > 1 and percent is not None and percent < 100 else "default"
    for component, spec in isvc.components():
        plan = plan_component(
            isvc, component, spec, models_root, predictor, port, revision, replica,
            policy, platform_env, endpoint,
        )
        if component == "predictor":
            predictor = plan
        plans.append(plan)
    return plans
