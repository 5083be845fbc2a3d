"""Local stand-ins for KServe's ServingRuntimes, so `model:` predictors run without a cluster.

In a cluster, a predictor written as `model: {modelFormat: ..., runtime: ..., storageUri: ...}`
runs the container of the named (Cluster)ServingRuntime, with the model mounted at
`/mnt/models` and the runtime's args plus the model's own. Here each runtime is played by the
backend that declares it in the registry (`servers/<backend>/backend.py`, read by
`servers.backends`): a process that speaks the same protocols on the same paths.

Which runtime serves a model follows KServe: a named `runtime` must serve the model's format
(and version, when it names one); otherwise the runtimes whose `supportedModelFormats` entry
for the format has `autoSelect` (and, when the model names a `protocolVersion`, that speak it)
are ranked by the entry's priority, and the highest wins. A tie is an error naming the
candidates, where KServe would pick one depending on what happens to be installed.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.controlplane.manifests import ComponentSpec, Container, EnvVar, ModelSpec
from servers.backends import Backend, backends

__all__ = [
    "TRITONSERVER_MODULE",
    "RuntimeNotAvailable",
    "container_for",
    "resolve_runtime",
    "runs_tritonserver",
    "runtime_command",
]

TRITONSERVER_MODULE = "servers.triton.tritonserver"


class RuntimeNotAvailable(ValueError):
    """A `model:` spec that names no runtime this machine can stand in for."""


def runtime_command(backend: Backend) -> tuple[str, ...]:
    """The command that plays a backend's runtime (the planner puts its own python first)."""
    return ("python", "-m", backend.entry_point)


def runs_tritonserver(spec: ComponentSpec) -> bool:
    """Whether a component runs the tritonserver launcher (a `model:` spec's runtime, or a
    container's `python -m`): its REST front end mishandles some malformed v2 bodies, so the
    gateway screens them (gateway/dataplane/backend_errors.py)."""
    if spec.model is not None:
        try:
            argv: Sequence[str] = runtime_command(resolve_runtime(spec.model))
        except RuntimeNotAvailable:
            return False
    elif spec.containers:
        argv = [*spec.containers[0].command, *spec.containers[0].args]
    else:
        return False
    return any(
        arg == TRITONSERVER_MODULE and argv[i - 1] == "-m" for i, arg in enumerate(argv) if i
    )


def resolve_runtime(model: ModelSpec) -> Backend:
    """The backend playing the model's runtime; RuntimeNotAvailable says what to write instead."""
    fmt, version = model.modelFormat.name, model.modelFormat.version
    shown = f"{fmt!r}" + (f" version {version!r}" if version else "")
    if model.runtime is not None:
        named = [b for b in backends() if b.runtime == model.runtime]
        if not named:
            known = sorted(b.runtime for b in backends())
            raise RuntimeNotAvailable(
                f"runtime {model.runtime!r} has no local stand-in; known: {known}"
            )
        if named[0].supported(fmt, version) is None:
            served = [f.name for f in named[0].formats]
            raise RuntimeNotAvailable(
                f"runtime {model.runtime!r} does not serve modelFormat {shown} (it serves {served})"
            )
        return named[0]
    ranked: list[tuple[int, Backend]] = []
    for backend in backends():
        entry = backend.supported(fmt, version)
        if entry is None or not entry.auto_select:
            continue
        if model.protocolVersion and model.protocolVersion not in backend.protocol_versions:
            continue
        ranked.append((entry.priority, backend))
    if not ranked:
        protocol = f" over {model.protocolVersion}" if model.protocolVersion else ""
        raise RuntimeNotAvailable(f"no local runtime serves modelFormat {shown}{protocol}")
    best = max(priority for priority, _ in ranked)
    top = [backend for priority, backend in ranked if priority == best]
    if len(top) > 1:
        raise RuntimeNotAvailable(
            f"modelFormat {shown} is served by {sorted(b.runtime for b in top)} at the same "
            "priority: name `runtime` explicitly"
        )
    return top[0]


def container_for(model_name: str, model: ModelSpec) -> Container:
    """The container a ServingRuntime would give this model: the runtime's command, the model
    mounted at /mnt/models (from `storageUri`), then the model's own args and env."""
    runtime = resolve_runtime(model)
    env = list(model.env)
    if model.storageUri is not None:
        env.append(EnvVar(name="STORAGE_URI", value=model.storageUri))
    return Container(
        name="kserve-container",
        command=list(runtime_command(runtime)),
        args=[*(arg.format(name=model_name) for arg in runtime.args), *model.args],
        env=env,
        resources=model.resources,
    )
