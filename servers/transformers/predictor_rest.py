"""A transformer's call to its predictor over v2 REST with binary tensors both ways.

KServe's transformer calls its predictor with httpx and JSON (every tensor a list of numbers,
encoded and parsed again at both ends) or with grpc.aio. Measured here (bench_sklearn.py,
iris-classifier at 16 connections), the sklearn predictor spends ~1,100 µs of CPU on a gRPC
`ModelInfer` against ~400 µs on a REST request: Python's gRPC server is the expensive part,
not the model. So `--predictor_protocol=v2` sends the binary extension of the v2 REST protocol
(`Inference-Header-Content-Length`: a small JSON head, then the tensor's raw little-endian
bytes; the outputs asked back as binary too) over `servers.http_client.HttpClient`'s kept-alive
connections (`TCP_NODELAY`), one pool per transformer: no JSON numbers, no protobuf, no
numpy <-> list round trips.

While traces are on, the call is a CLIENT span whose `traceparent` goes with the request
(`servers/tracing.py`); `x-request-id` goes as KServe's transformer forwards it.

Failures are the shared error types, as for every transformer (`upstream.py`): an error the
predictor answered keeps its status; down or refusing is 503, too slow 504.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from servers.errors import BackendUnavailable, InvalidInput
from servers.http_client import HttpClient
from servers.protocol.tensors import decode_tensor, tensor_to_raw
from servers.protocol.v2 import HEADER_LENGTH as HEADER_LENGTH_NAME
from servers.protocol.v2 import split_rest_body
from servers.telemetry import TRACING
from servers.tracing import traced_predictor_request
from servers.transformers.upstream import from_http

__all__ = ["FORWARDED_HEADERS", "PredictorRestClient"]

HEADER_LENGTH = HEADER_LENGTH_NAME.encode()
# What KServe's transformer forwards to its predictor (kserve.model's forwardable headers).
FORWARDED_HEADERS = ("x-request-id", "x-b3-traceid", "authorization")
_KEPT = (b"content-type", HEADER_LENGTH)


class PredictorRestClient:
    """v2 REST binary inference calls to one predictor (`http://host:port`).

    Make it inside the event loop that will use it (its connections belong to that loop).
    """

    def __init__(self, base_url: str, timeout_s: float, max_connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = HttpClient(
            timeout_s, min(timeout_s, 10.0), max_connections, _KEPT, peer="predictor"
        )

    @classmethod
    def for_predictor(cls, config: Any) -> PredictorRestClient:
        """The client of a transformer's predictor (a `kserve.PredictorConfig`: its base URL
        and request timeout)."""
        return cls(config.predictor_base_url, float(config.predictor_request_timeout_seconds))

    async def infer(
        self,
        model: str,
        inputs: Sequence[tuple[str, np.ndarray, str]],
        outputs: Sequence[str],
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` ((name, array, v2 datatype) each); the `outputs` named (all
        of the model's when none, in its order), as arrays. Raises the shared error types (the
        predictor's own status passes on)."""
        blobs = [tensor_to_raw(array, datatype) for _, array, datatype in inputs]
        head: dict[str, Any] = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(blob)},
                }
                for (name, array, datatype), blob in zip(inputs, blobs, strict=True)
            ],
        }
        if outputs:
            head["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
        else:
            head["parameters"] = {"binary_data_output": True}
        if request_id is not None:
            head["id"] = request_id
        json_head = orjson.dumps(head)
        sent = [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH, b"%d" % len(json_head)),
        ]
        for name in FORWARDED_HEADERS:
            if headers is not None and (value := headers.get(name)) is not None:
                sent.append((name.encode(), value.encode("latin-1", "replace")))
        target = f"/v2/models/{model}/infer".encode()
        body = b"".join([json_head, *blobs])
        if TRACING.tracer is None:
            answer = await self._client.request(self.base_url, "POST", target, sent, body)
        else:  # in a client span, sent as the predictor's traceparent
            answer = await traced_predictor_request(self._client, self.base_url, target, sent, body)
        if answer.status != 200:
            raise from_http(answer.status, answer.content.decode("utf-8", "replace"))
        return _outputs(answer.content, dict(answer.headers).get(HEADER_LENGTH))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()


def _outputs(body: bytes, header_length: bytes | None) -> dict[str, np.ndarray]:
    """The output tensors of a v2 REST answer (JSON, or JSON followed by binary outputs)."""
    try:
        head, binary = split_rest_body(body, header_length)
        doc = orjson.loads(head)
        offset, arrays = 0, {}
        for out in doc["outputs"]:
            raw_size = (out.get("parameters") or {}).get("binary_data_size")
            raw = None
            if raw_size is not None:
                raw = binary[offset : offset + int(raw_size)]
                offset += int(raw_size)
            arrays[str(out["name"])] = decode_tensor(
                out["name"], out["datatype"], out["shape"], out.get("data"), raw
            )
    except (InvalidInput, ValueError, KeyError, TypeError) as exc:
        raise BackendUnavailable(f"predictor sent an answer that is not v2: {exc}") from exc
    return arrays
