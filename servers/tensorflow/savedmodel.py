"""A SavedModel run in process: its SignatureDefs, version directory and (batched) calls.

The directory layout is TF Serving's: `<model_dir>/<version>/saved_model.pb`, the highest
numeric version served (a directory holding `saved_model.pb` itself is served as version 1, or
as its own name when that is a number). Signatures are read from the SavedModel's
MetaGraphDef, so TF Serving's method names (predict, classify, regress) are kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402

from servers.batching import AdaptiveBatcher, BatchSettings  # noqa: E402
from servers.errors import InvalidInput, ModelLoadError  # noqa: E402
from servers.model import off_loop  # noqa: E402
from servers.storage import resolve_model_dir  # noqa: E402
from servers.tensorflow.signatures import Signature, TensorSpec  # noqa: E402

__all__ = ["SavedModelBackend", "find_version", "read_signatures"]

log = logging.getLogger("modelserve.tensorflow")
SAVED_MODEL_FILE = "saved_model.pb"


def find_version(model_dir: Path) -> tuple[Path, int]:
    """The SavedModel directory to serve and its version number."""
    if (model_dir / SAVED_MODEL_FILE).is_file():
        return model_dir, int(model_dir.name) if model_dir.name.isdigit() else 1
    versions = sorted(
        (int(p.name), p)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / SAVED_MODEL_FILE).is_file()
    ) if model_dir.is_dir() else []
    if not versions:
        raise ModelLoadError(
            f"{model_dir}: no SavedModel (expected {SAVED_MODEL_FILE} in it or in a numeric "
            "version directory such as 1/)"
        )
    version, path = versions[-1]
    return path, version


def _spec(name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    dtype = np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorSpec(name, dtype, dims)


def read_signatures(path: Path) -> dict[str, Signature]:
    """Every SignatureDef of the SavedModel at `path` (a version directory)."""
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / SAVED_MODEL_FILE).read_bytes())
    except Exception as exc:  # DecodeError, OSError
        raise ModelLoadError(f"{path / SAVED_MODEL_FILE} is not a SavedModel: {exc}") from exc
    if not proto.meta_graphs:
        raise ModelLoadError(f"{path}: SavedModel without a MetaGraph")
    defs = proto.meta_graphs[0].signature_def
    return {
        key: Signature(
            name=key,
            inputs={n: _spec(n, info) for n, info in sorted(sig.inputs.items())},
            outputs={n: _spec(n, info) for n, info in sorted(sig.outputs.items())},
            method_name=sig.method_name,
        )
        for key, sig in sorted(defs.items())
        if not key.startswith("__")  # TF's internal __saved_model_init_op
    }


def _one_row(spec: TensorSpec) -> tuple[int, ...] | None:
    """The shape of a one-row numeric batch for `spec`, None if it has no fixed one."""
    if spec.dtype.kind == "O" or spec.shape is None or not spec.batched:
        return None
    rest = spec.shape[1:]
    if any(d is None for d in rest):
        return None
    return (1, *(int(d) for d in rest if d is not None))


class SavedModelBackend:
    """One version of a SavedModel, its signatures callable from any thread or batched.

    Requests for the same signature and outputs are merged by an `AdaptiveBatcher` when every
    input and output of the signature has a free batch dimension.
    """

    def __init__(
        self,
        model_name: str,
        path: Path,
        version: int,
        batching: BatchSettings | None = None,
    ) -> None:
        self.model_name = model_name
        self.path = path
        self.version = version
        self.batching = batching or BatchSettings()
        self.signatures: Mapping[str, Signature] = read_signatures(path)
        try:
            self._loaded: Any = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many types for a broken model
            raise ModelLoadError(f"cannot load the SavedModel in {path}: {exc}") from exc
        self._functions = {key: self._loaded.signatures[key] for key in self.signatures}
        self._batchers: dict[tuple[str, tuple[str, ...]], AdaptiveBatcher] = {}
        self.calls = 0  # graph calls, for tests and metrics

    @classmethod
    def load(
        cls, model_name: str, model_dir: str, batching: BatchSettings | None = None
    ) -> SavedModelBackend:
        """The highest version found under `model_dir` (a path or a storage URI)."""
        path, version = find_version(resolve_model_dir(model_dir))
        backend = cls(model_name, path, version, batching)
        backend.warm_up()
        log.info("loaded %s version %d from %s", model_name, version, path)
        return backend

    def warm_up(self) -> None:
        """Run each fully-shaped numeric signature once, so no client pays for it."""
        for key, signature in self.signatures.items():
            shapes = [_one_row(spec) for spec in signature.inputs.values()]
            if signature.batchable and all(shape is not None for shape in shapes):
                zeros = {
                    spec.name: np.zeros(shape, dtype=spec.dtype)
                    for spec, shape in zip(signature.inputs.values(), shapes, strict=True)
                    if shape is not None
                }
                self.call(key, zeros, list(signature.outputs))

    def call(
        self, signature: str, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run the graph (blocking; thread-safe) and return the named outputs."""
        self.calls += 1
        function = self._functions[signature]
        try:
            result = function(**{name: tf.constant(array) for name, array in inputs.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            # What the graph itself refuses (a value out of an op's domain, say) is the
            # request's fault, as in TF Serving.
            raise InvalidInput(f"signature '{signature}' refused the input: {exc}") from exc
        return {name: result[name].numpy() for name in outputs}

    async def run(
        self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """The outputs for checked inputs, in a merged batch when the signature allows."""
        if self.batching.max_batch_size <= 1 or not self.signatures[signature].batchable:
            return await off_loop(self.call, signature, inputs, outputs)
        key = (signature, tuple(outputs))
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = AdaptiveBatcher(
                lambda rows: self.call(signature, rows, outputs),  # type: ignore[arg-type]
                self.batching,
            )
        result = await batcher.submit(inputs)
        assert not isinstance(result, np.ndarray)  # named arrays in, named arrays out
        return dict(result)
