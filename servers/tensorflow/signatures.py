"""Signatures of a TensorFlow model and the checks every request passes against them.

A `Signature` is what a SavedModel's SignatureDef says (input and output names, dtypes and
shapes), independent of where the model runs: in process (`savedmodel.SavedModelBackend`) or
in a TF Serving backend reached over gRPC (`tfserving_client.TFServingBackend`). Both are a
`SignatureBackend`, so the predictor, the TF Serving servicer and their checks are one code
path whichever runs the graph. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from servers.errors import InvalidInput, ModelNotFound
from servers.protocol.tensors import datatype_of

__all__ = [
    "DEFAULT_SIGNATURE",
    "Signature",
    "SignatureBackend",
    "TensorSpec",
    "check_inputs",
    "servable_not_found",
    "from_json_value",
    "to_json_value",
]

DEFAULT_SIGNATURE = "serving_default"
# TF Serving's method names: Classify/Regress need a signature of that kind.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

Shape = tuple[int | None, ...] | None  # None: unknown rank; a None dim: any size


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature (`shape` None when the rank is unknown)."""

    name: str
    dtype: np.dtype[Any]
    shape: Shape

    @property
    def datatype(self) -> str:
        """The v2 datatype (DT_STRING is BYTES)."""
        return datatype_of(np.empty(0, dtype=self.dtype))

    @property
    def v2_shape(self) -> list[int]:
        """The shape for v2 metadata: -1 for any size (and [-1] for unknown rank)."""
        if self.shape is None:
            return [-1]
        return [-1 if d is None else d for d in self.shape]

    @property
    def batched(self) -> bool:
        """Whether dimension 0 is a free batch dimension."""
        return bool(self.shape) and self.shape is not None and self.shape[0] is None


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: named inputs and outputs, and TF Serving's method name."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = PREDICT_METHOD

    @property
    def batchable(self) -> bool:
        """Requests can be stacked along dimension 0 and their outputs split back."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return bool(specs) and all(s.batched for s in specs)

    def check_outputs(self, requested: Sequence[str]) -> list[str]:
        """The outputs to compute: the requested ones (all when none) after a check."""
        unknown = [name for name in requested if name not in self.outputs]
        if unknown:
            raise InvalidInput(
                f"unknown output(s) {unknown}: signature '{self.name}' has {sorted(self.outputs)}"
            )
        return list(dict.fromkeys(requested)) or list(self.outputs)


def servable_not_found(name: str, version: int | None = None) -> ModelNotFound:
    """TF Serving's NOT_FOUND for a model (or a version of it) that is not served (the
    gateway answers it too, for names it has no route for)."""
    which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return ModelNotFound(f"Servable not found for request: {which}")


class SignatureBackend(Protocol):
    """Something that runs the signatures of one model version."""

    model_name: str
    version: int
    signatures: Mapping[str, Signature]

    async def run(
        self, signature: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """The named outputs of `signature` for checked `inputs`."""
        ...


def _check_shape(spec: TensorSpec, array: np.ndarray, signature: str) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        raise InvalidInput(
            f"input '{spec.name}' has rank {array.ndim} (shape {list(array.shape)}), signature "
            f"'{signature}' expects rank {len(spec.shape)} (shape {spec.v2_shape})"
        )
    for got, want in zip(array.shape, spec.shape, strict=True):
        if want is not None and got != want:
            raise InvalidInput(
                f"input '{spec.name}' has shape {list(array.shape)}, signature '{signature}' "
                f"expects {spec.v2_shape}"
            )


def _check_dtype(spec: TensorSpec, array: np.ndarray, signature: str) -> np.ndarray:
    if spec.dtype.kind == "O":
        if array.dtype.kind != "O":
            raise InvalidInput(
                f"input '{spec.name}' is {datatype_of(array)}, signature '{signature}' "
                "expects BYTES"
            )
        return array
    if array.dtype != spec.dtype:
        raise InvalidInput(
            f"input '{spec.name}' is {datatype_of(array)}, signature '{signature}' expects "
            f"{spec.datatype}"
        )
    return array


def check_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray], allow_nan: bool = False
) -> dict[str, np.ndarray]:
    """`inputs` if they are exactly the signature's, with its dtypes and shapes; else a 400.

    Batched inputs must agree on dimension 0. Non-finite floats are refused unless `allow_nan`
    (a NaN pixel or feature is a client bug far more often than a meaningful value).
    """
    missing = [name for name in signature.inputs if name not in inputs]
    unknown = [name for name in inputs if name not in signature.inputs]
    if missing or unknown:
        raise InvalidInput(
            f"signature '{signature.name}' takes inputs {sorted(signature.inputs)}; "
            f"missing {missing}, unknown {unknown}"
        )
    checked: dict[str, np.ndarray] = {}
    batch: int | None = None
    for name, spec in signature.inputs.items():
        array = _check_dtype(spec, inputs[name], signature.name)
        _check_shape(spec, array, signature.name)
        if array.dtype.kind == "f" and not allow_nan and not np.all(np.isfinite(array)):
            raise InvalidInput(f"input '{name}' contains NaN or infinity")
        if spec.batched:
            if array.shape[0] == 0:
                raise InvalidInput(f"input '{name}' has an empty batch")
            if batch is not None and array.shape[0] != batch:
                raise InvalidInput(
                    f"inputs disagree on the batch size: '{name}' has {array.shape[0]}, "
                    f"others {batch}"
                )
            batch = array.shape[0]
        checked[name] = array
    return checked


def _to_bytes(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_to_bytes(v, name) for v in value]
    if isinstance(value, dict):
        encoded = value.get("b64")
        if set(value) != {"b64"} or not isinstance(encoded, str):
            raise InvalidInput(f"input '{name}': a binary value is {{\"b64\": \"<base64>\"}}")
        try:
            return base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise InvalidInput(f"input '{name}': 'b64' is not valid base64") from exc
    if isinstance(value, str):
        return value.encode()
    raise InvalidInput(f"input '{name}' takes strings, got {type(value).__name__}")


def _contains(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, list):
        return any(_contains(v, kinds) for v in value)
    return isinstance(value, kinds)


def from_json_value(spec: TensorSpec, value: Any) -> np.ndarray:
    """A JSON value (TF Serving's REST API: nested lists, `{"b64": ...}` for bytes) as an array
    of the spec's dtype: JSON has one number type, so numbers take the signature's dtype, as
    TF Serving does; integers must be integral and in range."""
    name = spec.name
    if spec.dtype.kind == "O":
        converted = _to_bytes(value, name)
        try:
            array = np.array(converted, dtype=np.object_)
        except ValueError as exc:
            raise InvalidInput(f"input '{name}' is ragged: {exc}") from None
        return array
    if _contains(value, (str, dict, type(None))):
        raise InvalidInput(f"input '{name}' must be numeric ({spec.datatype})")
    if _contains(value, (bool,)) and spec.dtype.kind != "b":
        raise InvalidInput(f"input '{name}' must be numeric, not true/false")
    try:
        array = np.array(value)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}' is ragged: nested lists of unequal length") from exc
    if array.dtype.kind == "O":
        raise InvalidInput(f"input '{name}' is ragged: nested lists of unequal length")
    if spec.dtype.kind in "iu":
        if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
            raise InvalidInput(f"input '{name}' takes integers ({spec.datatype})")
        info = np.iinfo(spec.dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InvalidInput(f"input '{name}': value out of range for {spec.datatype}")
    elif spec.dtype.kind == "f" and array.size:
        limit = np.finfo(spec.dtype).max
        if np.any(np.abs(array.astype(np.float64)) > limit):
            raise InvalidInput(f"input '{name}': value overflows {spec.datatype}")
    return array.astype(spec.dtype)


def to_json_value(array: np.ndarray) -> Any:
    """An output as JSON: nested lists; bytes as text when UTF-8, else `{"b64": ...}`."""
    if array.dtype.kind in "OSU":
        return _bytes_to_json(array.tolist())
    return array.tolist()


def _bytes_to_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_bytes_to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
