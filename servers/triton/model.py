"""`TritonPredictor`: KServe v1 and v2 in front of a model served by Triton.

What `python -m servers.triton --triton_host HOST:PORT` runs: the inputs, outputs and readiness
are Triton's (metadata fetched at load and refreshed when asked for), requests are decoded
strictly here and forwarded as raw tensors over gRPC (kserve's client) or HTTP
(`tritonclient.http`), and what Triton refuses comes back with Triton's status and message.

v1 reads TF Serving's row form: `{"instances": [row, ...]}` where a row is the model's one
input (or an object of all inputs by name); answers `{"predictions": [...]}`: the rows of the
only output, or one object of outputs per row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from servers.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelLoadError,
    ModelServeError,
    NotReady,
)
from servers.model import SINGLE_VERSION, TensorModel, TensorOutputs
from servers.protocol.tensors import datatype_of, decode_tensor, tensor_to_json_data
from servers.protocol.v1 import parse_json_body
from servers.protocol.v2 import decode_inputs, make_response
from servers.triton.client import (
    ModelMetadata,
    TensorMetadata,
    Tensors,
    TritonClient,
    make_client,
)

__all__ = ["TritonPredictor"]

_FRESH_S = 1.0  # how long readiness and metadata answers from Triton are reused


class TritonPredictor(TensorModel):
    """Serves Triton's model `triton_model_name` (default: `name`) under `name`."""

    def __init__(
        self,
        name: str,
        triton_host: str,
        triton_model_name: str | None = None,
        protocol: str = "grpc",
        timeout_s: float = 30.0,
        startup_timeout_s: float = 60.0,
        client: Callable[[], TritonClient] | None = None,
    ) -> None:
        super().__init__(name)
        self.triton_host = triton_host
        self.triton_model_name = triton_model_name or name
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._make_client = client or (lambda: make_client(protocol, triton_host, timeout_s))
        self.client = self._make_client()
        self.metadata: ModelMetadata | None = None
        self._metadata_at = 0.0
        self._ready_at = 0.0
        self._triton_ready = False

    # -- loading and readiness -------------------------------------------------------------
    def load(self) -> bool:
        """Wait (up to `startup_timeout_s`) for Triton to serve the model; read its metadata.

        Runs before the server's event loop, in a loop and client of its own (not
        `asyncio.run`: it would leave the main thread without the loop kserve then asks for).
        """
        loop = asyncio.new_event_loop()
        try:
            self.metadata = loop.run_until_complete(self._wait_for_model())
        finally:
            loop.close()
        self._metadata_at = time.monotonic()
        self.ready = True
        return self.ready

    async def _wait_for_model(self) -> ModelMetadata:
        client = self._make_client()
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        try:
            while True:
                try:
                    if await client.model_ready(self.triton_model_name):
                        return await client.metadata(self.triton_model_name)
                    last = f"model '{self.triton_model_name}' is not ready (or not served)"
                except ModelServeError as exc:
                    last = exc.message
                if time.monotonic() >= deadline:
                    raise ModelLoadError(
                        f"Triton at {self.triton_host} ({self.protocol}) did not serve model "
                        f"'{self.triton_model_name}' within {self.startup_timeout_s:g} s: {last}"
                    )
                await asyncio.sleep(0.25)
        finally:
            await client.close()

    async def healthy(self) -> bool:
        """Whether Triton serves the model now (asked at most once a second)."""
        if not self.ready:
            return False
        if time.monotonic() - self._ready_at > _FRESH_S:
            try:
                self._triton_ready = await self.client.model_ready(self.triton_model_name)
            except ModelServeError:
                self._triton_ready = False
            self._ready_at = time.monotonic()
        return self._triton_ready

    async def fresh_metadata(self) -> ModelMetadata:
        """Triton's metadata for the model, at most a second old."""
        if self.metadata is None or time.monotonic() - self._metadata_at > _FRESH_S:
            self.metadata = await self.client.metadata(self.triton_model_name)
            self._metadata_at = time.monotonic()
        return self.metadata

    def _loaded(self) -> ModelMetadata:
        if self.metadata is None:
            raise NotReady(f"model '{self.name}' is not loaded")
        return self.metadata

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions Triton serves the model in (its metadata), "1" if it names none."""
        return self._loaded().versions or SINGLE_VERSION

    # -- inference -------------------------------------------------------------------------
    async def _infer(self, tensors: Tensors, requested: list[str]) -> Tensors:
        try:
            return await self.client.infer(self.triton_model_name, tensors, requested)
        except (BackendUnavailable, BackendTimeout):
            # Readiness must say so at once, not when the cached answer expires.
            self._triton_ready, self._ready_at = False, time.monotonic()
            raise

    async def predict(
        self,
        payload: dict[str, Any] | bytes | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """v2 requests keep their datatypes on the way to Triton; v1 ones are decoded here."""
        if not isinstance(payload, InferRequest):
            return await self.infer_v1(parse_json_body(payload))
        arrays = decode_inputs(payload)
        datatypes = {i.name: str(i.datatype).upper() for i in payload.inputs}
        requested = [o.name for o in payload.request_outputs or []]
        tensors = {name: (array, datatypes[name]) for name, array in arrays.items()}
        return make_response(payload, self.name, await self._infer(tensors, requested))

    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        tensors = {name: (array, datatype_of(array)) for name, array in inputs.items()}
        return await self._infer(tensors, requested)

    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        instances = doc.get("instances")
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("send 'instances': a non-empty list of rows")
        specs = self._loaded().inputs
        tensors = _v1_tensors(instances, specs)
        return {"predictions": _rows(await self._infer(tensors, []))}

    # -- metadata --------------------------------------------------------------------------
    async def get_input_types(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in (await self.fresh_metadata()).inputs]

    async def get_output_types(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in (await self.fresh_metadata()).outputs]


def _column(name: str, datatype: str, values: list[Any]) -> tuple[np.ndarray, str]:
    try:
        shape = np.shape(np.asarray(values, dtype=object if datatype == "BYTES" else None))
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': instances are ragged or not rectangular") from exc
    return decode_tensor(name, datatype, list(shape), data=values), datatype


def _v1_tensors(instances: list[Any], specs: tuple[TensorMetadata, ...]) -> Tensors:
    """The batch of v1 rows as one tensor per model input, in the inputs' datatypes."""
    if len(specs) == 1 and not isinstance(instances[0], dict):
        (spec,) = specs
        return {spec.name: _column(spec.name, spec.datatype, instances)}
    names = [s.name for s in specs]
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for index, row in enumerate(instances):
        if not isinstance(row, dict) or set(row) != set(names):
            raise InvalidInput(f"instance {index} must be an object with the inputs {names}")
        for n in names:
            columns[n].append(row[n])
    return {s.name: _column(s.name, s.datatype, columns[s.name]) for s in specs}


def _json(array: np.ndarray, datatype: str) -> Any:
    if datatype in ("BYTES", "FP16", "BF16"):
        flat = tensor_to_json_data(array, datatype)
        return np.asarray(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _rows(outputs: Tensors) -> list[Any]:
    """TF Serving's row format: the only output's rows, or an object of outputs per row."""
    values = {name: _json(array, dt) for name, (array, dt) in outputs.items()}
    if len(values) == 1:
        (only,) = values.values()
        return only if isinstance(only, list) else [only]
    counts = {len(v) if isinstance(v, list) else -1 for v in values.values()}
    if len(counts) != 1 or -1 in counts:
        raise InvalidInput("the outputs do not share a batch size: send a v2 request instead")
    names = list(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]
