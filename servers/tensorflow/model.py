"""`TensorFlowPredictor`: a TensorFlow model's signatures behind KServe v1 and v2.

The model runs wherever its `SignatureBackend` runs it: in process (a SavedModel) or in a TF
Serving backend over gRPC. Requests are read TF Serving's way for v1 (`instances` rows, or the
columnar `inputs` form; `signature_name`; `{"b64": ...}` for bytes) and the Open Inference
Protocol's way for v2 (inputs by name, `parameters.signature_name`, requested outputs), and
both are checked against the signature's names, dtypes and shapes before the graph sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from servers.errors import InvalidInput, ModelLoadError, NotReady
from servers.model import TensorModel, TensorOutputs
from servers.tensorflow.signatures import (
    DEFAULT_SIGNATURE,
    Signature,
    SignatureBackend,
    check_inputs,
    from_json_value,
    to_json_value,
)

__all__ = ["TensorFlowPredictor"]


class TensorFlowPredictor(TensorModel):
    """Serves every signature of one TensorFlow model (`signature_name` picks one)."""

    def __init__(
        self,
        name: str,
        backend: Callable[[], SignatureBackend],
        signature_name: str = DEFAULT_SIGNATURE,
        allow_nan: bool = False,
    ) -> None:
        super().__init__(name)
        self._make_backend = backend
        self.backend: SignatureBackend | None = None
        self.signature_name = signature_name
        self.allow_nan = allow_nan

    def load(self) -> bool:
        backend = self._make_backend()
        if self.signature_name not in backend.signatures:
            raise ModelLoadError(
                f"the model has no signature '{self.signature_name}'; it has "
                f"{sorted(backend.signatures)}"
            )
        self.backend = backend
        self.ready = True
        return self.ready

    @property
    def _backend(self) -> SignatureBackend:
        if self.backend is None:
            raise NotReady(f"model '{self.name}' is not loaded")
        return self.backend

    @property
    def versions(self) -> tuple[str, ...]:
        """The SavedModel's version directory served (the highest), or the TF Serving
        backend's version: TF Serving's default policy serves the latest only."""
        return (str(self._backend.version),)

    def signature(self, name: Any) -> Signature:
        """The signature called `name` (the server's default when None), or a 400."""
        if name is None:
            name = self.signature_name
        if not isinstance(name, str):
            raise InvalidInput("signature_name must be a string")
        signatures = self._backend.signatures
        if name not in signatures:
            raise InvalidInput(
                f'Serving signature key "{name}" not found; the model has {sorted(signatures)}'
            )
        return signatures[name]

    async def run_signature(
        self, signature: Signature, arrays: dict[str, np.ndarray], requested: list[str]
    ) -> dict[str, np.ndarray]:
        """Check `arrays` against `signature` and compute the `requested` outputs (all if none)."""
        checked = check_inputs(signature, arrays, self.allow_nan)
        outputs = signature.check_outputs(requested)
        return await self._backend.run(signature.name, checked, outputs)

    # -- v1 (TF Serving's REST predict API) ------------------------------------------------
    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        params = doc.get("parameters")
        name = doc.get("signature_name")
        if name is None and isinstance(params, dict):
            name = params.get("signature_name")
        signature = self.signature(name)
        if ("instances" in doc) == ("inputs" in doc):
            raise InvalidInput("send either 'instances' (rows) or 'inputs' (columns)")
        if "instances" in doc:
            arrays = self._rows(signature, doc["instances"])
            result = await self.run_signature(signature, arrays, [])
            return {"predictions": _row_format(result)}
        arrays = self._columns(signature, doc["inputs"])
        result = await self.run_signature(signature, arrays, [])
        if len(result) == 1:
            return {"outputs": to_json_value(next(iter(result.values())))}
        return {"outputs": {k: to_json_value(v) for k, v in result.items()}}

    def _rows(self, signature: Signature, instances: Any) -> dict[str, np.ndarray]:
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        names = list(signature.inputs)
        if len(names) == 1:
            (only,) = names
            values = [_named_or_bare(i, only) for i in instances]
            return {only: from_json_value(signature.inputs[only], values)}
        columns: dict[str, list[Any]] = {n: [] for n in names}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or set(instance) != set(names):
                raise InvalidInput(
                    f"instance {index} must be an object with the inputs {sorted(names)}"
                )
            for n in names:
                columns[n].append(instance[n])
        return {n: from_json_value(signature.inputs[n], v) for n, v in columns.items()}

    def _columns(self, signature: Signature, inputs: Any) -> dict[str, np.ndarray]:
        names = list(signature.inputs)
        if isinstance(inputs, dict) and not _is_b64(inputs):
            unknown = sorted(set(inputs) - set(names))
            if unknown:
                raise InvalidInput(
                    f"unknown inputs {unknown}: signature '{signature.name}' takes {sorted(names)}"
                )
            return {n: from_json_value(signature.inputs[n], v) for n, v in inputs.items()}
        if len(names) != 1:
            raise InvalidInput(
                f"signature '{signature.name}' takes several inputs: send 'inputs' as an "
                f"object with {sorted(names)}"
            )
        return {names[0]: from_json_value(signature.inputs[names[0]], inputs)}

    # -- v2 --------------------------------------------------------------------------------
    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        signature = self.signature(parameters.get("signature_name"))
        result = await self.run_signature(signature, inputs, requested)
        return {name: (array, signature.outputs[name].datatype) for name, array in result.items()}

    # -- metadata --------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        specs = self.signature(None).inputs.values()
        return [{"name": s.name, "datatype": s.datatype, "shape": s.v2_shape} for s in specs]

    def get_output_types(self) -> list[dict[str, Any]]:
        specs = self.signature(None).outputs.values()
        return [{"name": s.name, "datatype": s.datatype, "shape": s.v2_shape} for s in specs]


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _named_or_bare(instance: Any, name: str) -> Any:
    """An instance of a one-input signature: `{name: value}` or the bare value."""
    if isinstance(instance, dict) and not _is_b64(instance):
        if set(instance) != {name}:
            raise InvalidInput(f"instances must be values or objects with the input '{name}'")
        return instance[name]
    return instance


def _row_format(result: dict[str, np.ndarray]) -> Any:
    """TF Serving's row format: one output gives its rows; several give one object a row."""
    if len(result) == 1:
        return to_json_value(next(iter(result.values())))
    counts = {len(a) if a.ndim else 0 for a in result.values()}
    if len(counts) != 1 or 0 in counts:
        raise InvalidInput(
            "the outputs do not share a batch size, so they cannot be returned as rows: "
            "send 'inputs' (columnar) instead of 'instances'"
        )
    names = list(result)
    columns = [to_json_value(result[n]) for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
