"""Local stand-ins for KServe's ServingRuntimes, so `model:` predictors run without a cluster.

In a cluster, a predictor written as `model: {modelFormat: ..., runtime: ..., storageUri: ...}`
runs the container of the named (Cluster)ServingRuntime, with the model mounted at
`/mnt/models` and the runtime's args plus the model's own. Here each runtime KServe ships is
played by a process that speaks the same protocols on the same paths:

- `kserve-tensorflow-serving` (`tensorflow_model_server`: TF Serving's REST predict API and
  gRPC PredictionService) is played by `python -m servers.tensorflow`, which serves both on
  the same paths (and v2 besides);
- `kserve-sklearnserver` (KServe's sklearn server) by `python -m servers.sklearn`;
- `kserve-tritonserver` (NVIDIA's `tritonserver` on the model repository) by
  `python -m servers.triton.tritonserver`: the real tritonserver of the `nvidia-pytriton`
  wheel, on CPU (GPU resources in the manifest are ignored here).

A runtime must be named when several could serve the format: which one a cluster picks
depends on the priorities of the runtimes installed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.controlplane.manifests import ComponentSpec, Container, EnvVar, ModelSpec

__all__ = [
    "LOCAL_RUNTIMES",
    "TRITONSERVER_MODULE",
    "LocalRuntime",
    "RuntimeNotAvailable",
    "container_for",
    "resolve_runtime",
    "runs_tritonserver",
]

MOUNT_PATH = "/mnt/models"
TRITONSERVER_MODULE = "servers.triton.tritonserver"


class RuntimeNotAvailable(ValueError):
    """A `model:` spec that names no runtime this machine can stand in for."""


@dataclass(frozen=True)
class LocalRuntime:
    """A KServe ServingRuntime and the local command that plays it."""

    name: str
    formats: tuple[str, ...]  # modelFormat names it serves
    command: tuple[str, ...]
    # The runtime's own args, as its ServingRuntime gives them (`{name}`: the service's name).
    args: tuple[str, ...] = ("--model_name={name}", f"--model_dir={MOUNT_PATH}")


LOCAL_RUNTIMES: dict[str, LocalRuntime] = {
    runtime.name: runtime
    for runtime in (
        LocalRuntime(
            "kserve-tensorflow-serving",
            ("tensorflow",),
            ("python", "-m", "servers.tensorflow"),
        ),
        LocalRuntime(
            "kserve-sklearnserver",
            ("sklearn",),
            ("python", "-m", "servers.sklearn"),
        ),
        LocalRuntime(
            "kserve-tritonserver",
            ("tensorrt", "onnx", "triton", "tensorflow", "pytorch"),
            ("python", "-m", TRITONSERVER_MODULE),
            # `tritonserver --model-store=/mnt/models`: no model name, the repository's stand.
            (f"--model_dir={MOUNT_PATH}",),
        ),
    )
}


def runs_tritonserver(spec: ComponentSpec) -> bool:
    """Whether a component runs the tritonserver launcher (a `model:` spec's runtime, or a
    container's `python -m`): its REST front end mishandles some malformed v2 bodies, so the
    gateway screens them (gateway/dataplane/backend_errors.py)."""
    if spec.model is not None:
        try:
            argv: Sequence[str] = resolve_runtime(spec.model).command
        except RuntimeNotAvailable:
            return False
    elif spec.containers:
        argv = [*spec.containers[0].command, *spec.containers[0].args]
    else:
        return False
    return any(
        arg == TRITONSERVER_MODULE and argv[i - 1] == "-m" for i, arg in enumerate(argv) if i
    )


def resolve_runtime(model: ModelSpec) -> LocalRuntime:
    """The local runtime for a model spec; RuntimeNotAvailable says what to write instead."""
    fmt = model.modelFormat.name
    if model.runtime is not None:
        runtime = LOCAL_RUNTIMES.get(model.runtime)
        if runtime is None:
            raise RuntimeNotAvailable(
                f"runtime {model.runtime!r} has no local stand-in; known: {sorted(LOCAL_RUNTIMES)}"
            )
        if fmt not in runtime.formats:
            raise RuntimeNotAvailable(
                f"runtime {runtime.name!r} does not serve modelFormat {fmt!r} "
                f"(it serves {list(runtime.formats)})"
            )
        return runtime
    candidates = [r for r in LOCAL_RUNTIMES.values() if fmt in r.formats]
    if not candidates:
        raise RuntimeNotAvailable(f"no local runtime serves modelFormat {fmt!r}")
    if len(candidates) > 1:
        raise RuntimeNotAvailable(
            f"modelFormat {fmt!r} is served by {sorted(r.name for r in candidates)}: name "
            "`runtime` explicitly (a cluster picks by the installed runtimes' priorities)"
        )
    return candidates[0]


def container_for(model_name: str, model: ModelSpec) -> Container:
    """The container a ServingRuntime would give this model: the runtime's command, the model
    mounted at /mnt/models (from `storageUri`), then the model's own args and env."""
    runtime = resolve_runtime(model)
    env = list(model.env)
    if model.storageUri is not None:
        env.append(EnvVar(name="STORAGE_URI", value=model.storageUri))
    return Container(
        name="kserve-container",
        command=list(runtime.command),
        args=[*(arg.format(name=model_name) for arg in runtime.args), *model.args],
        env=env,
        resources=model.resources,
    )
