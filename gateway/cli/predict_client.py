"""`modelserve predict` over v2 gRPC: a v2 JSON request in, the v2 JSON response out.

The JSON is checked and decoded by the same codecs the servers use, sent as raw tensors (as
Triton's clients do) and the answer decoded back to v2 JSON. Import it with sys.argv hidden:
kserve parses the command line when first imported.
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from servers.errors import InvalidInput
from servers.protocol.tensors import tensor_to_raw
from servers.protocol.v2 import decode_inputs, encode_rest_response, parse_rest_request

__all__ = ["grpc_infer"]


def _request(name: str, body: Any) -> InferRequest:
    parsed = parse_rest_request(orjson.dumps(body), None, name)
    arrays = decode_inputs(parsed)
    inputs = []
    for given in parsed.inputs:
        array = arrays[given.name]
        tensor = InferInput(given.name, list(array.shape), given.datatype)
        tensor._raw_data = tensor_to_raw(array, given.datatype)
        inputs.append(tensor)
    return InferRequest(
        name,
        inputs,
        request_id=parsed.id,
        parameters=parsed.parameters,
        request_outputs=parsed.request_outputs,
    )


def grpc_infer(
    target: str, name: str, body: Any, timeout: float, api_key: str | None = None
) -> dict[str, Any]:
    """Send `body` (v2 JSON) to `target`'s ModelInfer; the response as v2 JSON.

    Raises servers.errors.InvalidInput for a bad body and grpc.RpcError for a gRPC failure.
    """
    request = _request(name, body).to_grpc()
    with grpc.insecure_channel(target) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("x-api-key", api_key),) if api_key else None
        response = stub.ModelInfer(request, timeout=timeout, metadata=metadata)
    if len(response.raw_output_contents) > len(response.outputs):
        raise InvalidInput(
            f"malformed response: {len(response.raw_output_contents)} raw contents for "
            f"{len(response.outputs)} outputs"
        )
    encoded, _ = encode_rest_response(InferResponse.from_grpc(response), None)
    doc: dict[str, Any] = orjson.loads(encoded)
    return doc
