"""Triton model repositories: check one before Triton sees it, and write model configs.

A repository is a directory of model directories, each with a `config.pbtxt` and numeric
version directories (`digits/config.pbtxt`, `digits/1/model.py`). Triton itself starts on an
empty repository and reports a broken one only in its log, so `check_repository` refuses
those up front with a message naming the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONFIG_FILE",
    "RepositoryError",
    "TensorConfig",
    "check_repository",
    "model_config",
]

CONFIG_FILE = "config.pbtxt"


class RepositoryError(ValueError):
    """The model repository cannot be served as it is."""


def check_repository(repository: Path) -> list[str]:
    """The model names in `repository`, or a RepositoryError saying what is wrong."""
    if not repository.exists():
        raise RepositoryError(f"model repository {repository} does not exist")
    if not repository.is_dir():
        raise RepositoryError(f"model repository {repository} is not a directory")
    models: list[str] = []
    for entry in sorted(repository.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue  # Triton ignores files (metadata.json, README.md) at the top level
        versions = [v for v in entry.iterdir() if v.is_dir() and v.name.isdigit()]
        if not (entry / CONFIG_FILE).is_file():
            raise RepositoryError(f"model {entry.name!r} in {repository} has no {CONFIG_FILE}")
        if not versions:
            raise RepositoryError(
                f"model {entry.name!r} in {repository} has no numeric version directory "
                "(e.g. 1/)"
            )
        models.append(entry.name)
    if not models:
        raise RepositoryError(
            f"model repository {repository} holds no models (expected <name>/{CONFIG_FILE} and "
            "<name>/1/)"
        )
    return models


@dataclass(frozen=True)
class TensorConfig:
    """One input or output of a model config: its dims leave out the batch dimension.

    `reshape` is the model's own shape when it differs from `dims` (Triton wants at least one
    dim per batched tensor, so a model's [N] output is declared `dims: [1]`, reshape `[]`).
    """

    name: str
    data_type: str  # Triton's TYPE_FP32, TYPE_INT64, ...
    dims: Sequence[int]
    reshape: Sequence[int] | None = None

    def render(self) -> str:
        """The tensor as a config.pbtxt block."""
        reshape = ""
        if self.reshape is not None:
            reshape = f"\n    reshape: {{ shape: {_list(self.reshape)} }}"
        return (
            f'  {{\n    name: "{self.name}"\n    data_type: {self.data_type}\n'
            f"    dims: {_list(self.dims)}{reshape}\n  }}"
        )


def _list(values: Sequence[int]) -> str:
    return f"[ {', '.join(str(v) for v in values)} ]" if values else "[ ]"


def model_config(
    name: str,
    *,
    inputs: Sequence[TensorConfig],
    outputs: Sequence[TensorConfig],
    max_batch_size: int,
    backend: str | None = None,
    platform: str | None = None,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    max_queue_delay_us: int = 0,
    preferred_batch_sizes: Sequence[int] = (),
    extra: str = "",
) -> str:
    """A config.pbtxt with `dynamic_batching` and one `instance_group`."""
    if (backend is None) == (platform is None):
        raise ValueError("give exactly one of backend and platform")
    head = f'backend: "{backend}"' if backend else f'platform: "{platform}"'
    preferred = ""
    if preferred_batch_sizes:
        preferred = f"\n  preferred_batch_size: {_list(preferred_batch_sizes)}"
    parts = [
        f'name: "{name}"',
        head,
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(t.render() for t in inputs) + "\n]",
        "output [\n" + ",\n".join(t.render() for t in outputs) + "\n]",
        f"dynamic_batching {{{preferred}\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    kind: {instance_kind}\n    count: {instance_count}\n  }}\n]",
    ]
    if extra:
        parts.append(extra.strip())
    return "\n".join(parts) + "\n"
