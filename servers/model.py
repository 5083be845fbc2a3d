"""The base of our predictors: strict decoding, model calls off the event loop, v2 responses.

KServe's `Model` runs a synchronous `predict` on the event loop, so one slow call stalls every
other request on the server (kserve#3950). Here `predict` is async; subclasses decode and check
the request on the loop (cheap) and hand the model call to `off_loop` (the loop's executor, a
thread pool sized by `--max_asyncio_workers`) or to an adaptive batcher that does.
"""

from __future__ import annotations

import asyncio
import functools
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kserve
import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse, to_http_parameters

from servers.protocol.v1 import parse_json_body
from servers.protocol.v2 import decode_inputs, make_response

__all__ = ["SINGLE_VERSION", "ServedModel", "TensorModel", "TensorOutputs", "off_loop"]

T = TypeVar("T")
# Output name -> (array, v2 datatype).
TensorOutputs = Mapping[str, tuple[np.ndarray, str]]


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in the running loop's executor."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


# What a model that has no versions of its own serves (sklearn, the transformers): version "1".
SINGLE_VERSION: tuple[str, ...] = ("1",)


class ServedModel(kserve.Model):
    """The base of every model our servers register: a kserve.Model that knows its versions."""

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions this model serves, as the v2 protocol names them (strings)."""
        return SINGLE_VERSION


class TensorModel(ServedModel):
    """A kserve.Model whose subclasses implement `infer_v1` and `infer_v2`."""

    async def predict(
        self,
        payload: dict[str, Any] | bytes | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Decode the request strictly, run the model, encode the result."""
        if isinstance(payload, InferRequest):
            arrays = decode_inputs(payload)
            requested = [o.name for o in payload.request_outputs or []]
            # gRPC requests carry a protobuf map of InferParameter: read it as REST's dict.
            params = to_http_parameters(payload.parameters) if payload.parameters else {}
            outputs = await self.infer_v2(arrays, params, requested)
            return make_response(payload, self.name, outputs)
        return await self.infer_v1(parse_json_body(payload))

    @abstractmethod
    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Answer a v1 body (`instances`/`inputs`) with `{"predictions": [...]}`."""

    @abstractmethod
    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        """Answer decoded v2 inputs with named outputs (only `requested` ones, when given)."""
