"""The model configuration extension (`GET /v2/models/M/config`) for our own servers.

Triton answers it with the model's `config.pbtxt` as JSON; Triton's tools need it (perf_analyzer
stops at start-up without it). Our servers have no config file: theirs is derived, in Triton's
schema, from the v2 metadata they already answer (`GET /v2/models/M`) and their batching
settings. Triton's data types are "TYPE_" + the v2 datatype, BYTES being TYPE_STRING. With
`max_batch_size > 0` Triton's dims leave out the batch dimension; a tensor that is only the
batch dimension is `dims: [1]` reshaped to `[]`, as Triton itself writes it.

An input that is only the batch dimension (the image transformer's `[-1]` of encoded images)
cannot be written so: Triton's tools take an input's shape from the metadata without its batch
dimension, which leaves `[]`, and perf_analyzer then cannot build a request ("unable to set
shape for the input"). Such a model declares no batch dimension (`max_batch_size: 0`, dims as
the metadata has them), which is what its metadata says.
"""

from __future__ import annotations

from typing import Any

__all__ = ["derive_config", "max_batch_size_of", "triton_data_type"]

# Where the model's server package says what Triton would call its platform or backend.
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel"}


def triton_data_type(datatype: str) -> str:
    """Triton's model-config type for a v2 datatype (`FP32` -> `TYPE_FP32`)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def max_batch_size_of(model: Any) -> tuple[int, bool]:
    """(rows a request may carry as Triton counts them, whether batching merges requests).

    From the batching flags (`--max_batch_size`, `servers.batching`) of a predictor, or its
    backend's (TensorFlow's SavedModel backend); the image transformer's per-request limit;
    else 0 (no batch dimension declared).
    """
    for holder in (model, getattr(model, "backend", None)):
        batching = getattr(holder, "batching", None)
        size = getattr(batching, "max_batch_size", None)
        if isinstance(size, int):
            return size, size > 1
    size = getattr(getattr(model, "limits", None), "max_batch_size", None)
    return (size, False) if isinstance(size, int) else (0, False)


def _platform(model: Any) -> dict[str, str]:
    """`platform` (Triton's name for a known framework) or `backend` (the server's package)."""
    parts = type(model).__module__.split(".")
    package = parts[-2] if len(parts) >= 2 else parts[0]
    if package in _PLATFORMS:
        return {"platform": _PLATFORMS[package]}
    return {"backend": package}


def _tensor(spec: dict[str, Any], batched: bool) -> dict[str, Any]:
    shape = [int(d) for d in spec.get("shape") or []]
    tensor: dict[str, Any] = {
        "name": spec["name"],
        "data_type": triton_data_type(str(spec["datatype"])),
    }
    if not batched:
        tensor["dims"] = shape
    elif len(shape) > 1:
        tensor["dims"] = shape[1:]
    else:
        tensor["dims"] = [1]
        tensor["reshape"] = {"shape": []}
    return tensor


def derive_config(model: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """The model's configuration in Triton's schema, from its v2 `metadata`.

    A batch dimension is declared only when every tensor's shape starts with a variable one
    (-1), what the server accepts as rows, and every input has another dimension after it.
    """
    inputs: list[dict[str, Any]] = list(metadata.get("inputs") or [])
    outputs: list[dict[str, Any]] = list(metadata.get("outputs") or [])
    size, merging = max_batch_size_of(model)
    leading = all((t.get("shape") or [None])[0] == -1 for t in inputs + outputs)
    rows_only = any(len(t.get("shape") or []) < 2 for t in inputs)
    if size < 1 or not leading or rows_only:
        size, merging = 0, False
    config: dict[str, Any] = {
        "name": metadata.get("name", getattr(model, "name", "")),
        **_platform(model),
        "max_batch_size": size,
        "input": [_tensor(t, size > 0) for t in inputs],
        "output": [_tensor(t, size > 0) for t in outputs],
    }
    if merging:
        config["dynamic_batching"] = {}
    return config
