"""The base of our predictors: strict decoding, model calls off the event loop, v2 responses.

KServe's `Model` runs a synchronous `predict` on the event loop, so one slow call stalls every
other request on the server (kserve#3950). Here `predict` is async; subclasses decode and check
the request on the loop (cheap) and hand the model call to `off_loop` (the loop's executor, a
thread pool sized by `--max_asyncio_workers`) or to an adaptive batcher that does.
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kserve
import numpy as np
from kserve.model import InferenceVerb, InferReturnType
from kserve.protocol.infer_type import InferRequest, InferResponse, to_http_parameters

from servers.protocol.v1 import parse_json_body
from servers.protocol.v2 import decode_inputs, make_response
from servers.statistics import ModelStatistics, current_timing, phase
from servers.telemetry import TRACING
from servers.tracing import instrument_model, instrumented_attributes

__all__ = ["SINGLE_VERSION", "ServedModel", "TensorModel", "TensorOutputs", "off_loop"]

T = TypeVar("T")
# Output name -> (array, v2 datatype).
TensorOutputs = Mapping[str, tuple[np.ndarray, str]]


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run the model call `fn(*args)` in the running loop's executor.

    Timed for the statistics extension when a request is in flight (`servers/statistics.py`):
    the wait for a thread is `queue`, the call `compute_infer`, and the call one execution.
    """
    loop = asyncio.get_running_loop()
    timing = current_timing()
    if timing is None:
        return await loop.run_in_executor(None, functools.partial(fn, *args))
    submitted = started = time.perf_counter_ns()

    def run() -> T:
        nonlocal started
        started = time.perf_counter_ns()
        return fn(*args)

    result = await loop.run_in_executor(None, run)
    infer_ns = time.perf_counter_ns() - started
    timing.add("queue", started - submitted)
    timing.add("compute_infer", infer_ns)
    timing.executions.append((timing.rows, infer_ns))
    return result


# What a model that has no versions of its own serves (sklearn, the transformers): version "1".
SINGLE_VERSION: tuple[str, ...] = ("1",)


class ServedModel(kserve.Model):
    """The base of every model our servers register: a kserve.Model that knows its versions
    and counts its requests for the statistics extension (`statistics`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statistics = ModelStatistics()

    async def __call__(
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> InferReturnType:
        """KServe's preprocess, predict, postprocess, counted as one inference request (and
        each in its span while traces are on: `servers/tracing.py`)."""
        if TRACING.tracer is not None:
            instrument_model(self)  # once, in the process that serves
        with self.statistics.request():
            return await super().__call__(body, headers, verb)

    def __getstate__(self) -> dict[str, Any]:
        # KServe's `--workers N` spawns its workers with a pickle of the models: the span
        # wrappers are this process's (closures, which do not pickle), never part of it.
        state = dict(self.__dict__)
        for name in instrumented_attributes():
            state.pop(name, None)
        return state

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions this model serves, as the v2 protocol names them (strings)."""
        return SINGLE_VERSION


def _rows(arrays: dict[str, np.ndarray]) -> int:
    """A request's batch size: dimension 0 of its first input (1 for a scalar, or none)."""
    for array in arrays.values():
        return int(array.shape[0]) if array.ndim and array.shape[0] else 1
    return 1


class TensorModel(ServedModel):
    """A kserve.Model whose subclasses implement `infer_v1` and `infer_v2`."""

    async def predict(
        self,
        payload: dict[str, Any] | bytes | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Decode the request strictly, run the model, encode the result."""
        timing = current_timing()
        if isinstance(payload, InferRequest):
            with phase("compute_input"):
                arrays = decode_inputs(payload)
                requested = [o.name for o in payload.request_outputs or []]
                # gRPC requests carry a protobuf map of InferParameter: read it as REST's dict.
                params = to_http_parameters(payload.parameters) if payload.parameters else {}
            if timing is not None:
                timing.rows = _rows(arrays)
            outputs = await self.infer_v2(arrays, params, requested)
            with phase("compute_output"):
                return make_response(payload, self.name, outputs)
        with phase("compute_input"):
            doc = parse_json_body(payload)
        if timing is not None:
            instances = doc.get("instances", doc.get("inputs")) if isinstance(doc, dict) else None
            timing.rows = len(instances) if isinstance(instances, list) and instances else 1
        return await self.infer_v1(doc)

    @abstractmethod
    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Answer a v1 body (`instances`/`inputs`) with `{"predictions": [...]}`."""

    @abstractmethod
    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        """Answer decoded v2 inputs with named outputs (only `requested` ones, when given)."""
