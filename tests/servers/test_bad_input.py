"""Every client mistake gets a 4xx / INVALID_ARGUMENT / NOT_FOUND naming the problem, and the
server keeps answering correctly afterwards: the same table for each tabular predictor
(scikit-learn, XGBoost, LightGBM)."""

from __future__ import annotations

import struct

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support import ServerProcess

V1 = "/v1/models/{name}:predict"
V2 = "/v2/models/{name}/infer"


def _v2(
    datatype: str = "FP32", shape: object = (1, 4), data: object = (5.0, 3.4, 1.5, 0.2)
) -> dict:  # type: ignore[type-arg]
    return {
        "inputs": [
            {
                "name": "x",
                "datatype": datatype,
                "shape": list(shape)  # type: ignore[call-overload]
                if isinstance(shape, tuple)
                else shape,
                "data": data if not isinstance(data, tuple) else list(data),
            }
        ]
    }


def _binary(blob: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body whose header announces a 16-byte FP32 [1, 4] tensor."""
    header = (
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],'
        b'"parameters":{"binary_data_size":16}}]}'
    )
    return header + blob, {"inference-header-content-length": str(len(header))}


REST_CASES = [
    # (id, path, body bytes or JSON, extra headers, status, message fragment)
    ("v1-malformed-json", V1, b'{"instances": [', {}, 400, "not valid JSON"),
    ("v1-top-level-list", V1, [[5.0, 3.4, 1.5, 0.2]], {}, 400, "JSON object"),
    ("v1-missing-instances", V1, {"rows": []}, {}, 400, "instances"),
    ("v1-instances-not-list", V1, {"instances": 5}, {}, 400, "list"),
    ("v1-ragged", V1, {"instances": [[1, 2, 3, 4], [1, 2]]}, {}, 400, "features"),
    ("v1-wrong-feature-count", V1, {"instances": [[1, 2, 3]]}, {}, 400, "expects 4"),
    ("v1-strings", V1, {"instances": [["a", 1, 2, 3]]}, {}, 400, "non-numeric"),
    ("v1-nulls", V1, {"instances": [[None, 1, 2, 3]]}, {}, 400, "non-numeric"),
    ("v1-nan", V1, b'{"instances": [[NaN, 1, 2, 3]]}', {}, 400, "not valid JSON"),
    ("v1-infinity", V1, b'{"instances": [[Infinity, 1, 2, 3]]}', {}, 400, "not valid JSON"),
    ("v1-overflow", V1, b'{"instances": [[1e400, 1, 2, 3]]}', {}, 400, "not valid JSON"),
    ("v1-empty-batch", V1, {"instances": []}, {}, 400, "empty"),
    ("v1-wrong-rank", V1, {"instances": [[[1, 2, 3, 4]]]}, {}, 400, "features"),
    ("v1-unknown-model", "/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]}, {}, 404, "nope"),
    ("v2-malformed-json", V2, b'{"inputs": [', {}, 400, "not valid JSON"),
    ("v2-top-level-list", V2, [1, 2], {}, 400, "JSON object"),
    ("v2-missing-inputs", V2, {"id": "1"}, {}, 400, "inputs"),
    ("v2-inputs-not-list", V2, {"inputs": {"x": 1}}, {}, 400, "inputs"),
    ("v2-empty-inputs", V2, {"inputs": []}, {}, 400, "empty"),
    ("v2-shape-data-mismatch", V2, _v2(data=(1.0, 2.0, 3.0)), {}, 400, "needs 4 values"),
    ("v2-negative-shape", V2, _v2(shape=[-1, 4]), {}, 400, "negative"),
    ("v2-unknown-datatype", V2, _v2(datatype="FP128"), {}, 400, "unknown datatype"),
    ("v2-int8-overflow", V2, _v2(datatype="INT8", data=(300, 1, 1, 1)), {}, 400, "out of range"),
    ("v2-fp32-overflow", V2, _v2(data=(1e300, 1, 1, 1)), {}, 400, "overflows FP32"),
    ("v2-strings", V2, _v2(data=("a", "b", "c", "d")), {}, 400, "strings"),
    ("v2-nulls", V2, _v2(data=(None, 1, 2, 3)), {}, 400, "null"),
    ("v2-ragged", V2, _v2(shape=[2, 2], data=[[1, 2], [3]]), {}, 400, "ragged"),
    ("v2-wrong-rank", V2, _v2(shape=[4]), {}, 400, "rank"),
    ("v2-wrong-feature-count", V2, _v2(shape=[1, 3], data=(1, 2, 3)), {}, 400, "expects 4"),
    ("v2-empty-batch", V2, _v2(shape=[0, 4], data=()), {}, 400, "empty"),
    ("v2-shape-not-list", V2, _v2(shape="1,4"), {}, 400, "shape"),
    ("v2-unknown-output", V2, {**_v2(), "outputs": [{"name": "logits"}]}, {}, 400, "logits"),
    ("v2-unknown-model", "/v2/models/nope/infer", _v2(), {}, 404, "nope"),
    ("v2-binary-size-mismatch", V2, *_binary(b"\0" * 12), 400, "past the body"),
    ("v2-binary-nan", V2, *_binary(struct.pack("<4f", float("nan"), 1, 1, 1)), 400, "NaN"),
    (
        "v2-header-length-too-big",
        V2,
        _v2(),
        {"inference-header-content-length": "99999"},
        400,
        "header-content-length",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "fragment"),
    [case[1:] for case in REST_CASES],
    ids=[case[0] for case in REST_CASES],
)
def test_rest_client_errors_are_4xx_with_a_message(
    tabular_predictor: tuple[ServerProcess, str],
    path: str,
    body: object,
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    server, name = tabular_predictor
    url = server.http_url + path.format(name=name)
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers=headers)
    else:
        response = httpx.post(url, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    # The server still answers a good request correctly.
    good = httpx.post(server.http_url + V1.format(name=name),
                      json={"instances": [[5.0, 3.4, 1.5, 0.2]]})
    assert good.json() == {"predictions": [0]}


@pytest.mark.parametrize("path", [V1, V2])
@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=x",
                                          "application/xml"])
def test_unreadable_content_type_gets_415(
    tabular_predictor: tuple[ServerProcess, str], path: str, content_type: str
) -> None:
    server, name = tabular_predictor
    response = httpx.post(server.http_url + path.format(name=name), content=b"<x/>",
                          headers={"content-type": content_type})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_oversized_body_gets_413(tabular_predictor: tuple[ServerProcess, str]) -> None:
    # The test servers run with --max_body_bytes=1048576.
    server, name = tabular_predictor
    body = b'{"instances": [' + b"[1,2,3,4]," * 200_000 + b"[1,2,3,4]]}"
    response = httpx.post(server.http_url + V1.format(name=name), content=body)
    assert response.status_code == 413
    assert "exceeds" in response.json()["error"]

    def chunks():  # type: ignore[no-untyped-def]
        yield body[: len(body) // 2]
        yield body[len(body) // 2 :]

    streamed = httpx.post(server.http_url + V1.format(name=name), content=chunks())
    assert streamed.status_code == 413


def _grpc_request(name: str, **overrides: object) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="x",
        datatype="FP32",
        shape=[1, 4],
        contents=pb.InferTensorContents(fp32_contents=[5.0, 3.4, 1.5, 0.2]),
    )
    request = pb.ModelInferRequest(model_name=name, inputs=[tensor])
    for key, value in overrides.items():
        if key == "raw":
            request.inputs[0].ClearField("contents")
            request.raw_input_contents.append(value)  # type: ignore[arg-type]
        elif key in ("datatype", "shape"):
            if key == "shape":
                del request.inputs[0].shape[:]
                request.inputs[0].shape.extend(value)  # type: ignore[call-overload]
            else:
                request.inputs[0].datatype = value  # type: ignore[assignment]
        else:
            setattr(request, key, value)
    return request


GRPC_CASES = [
    ("unknown-model", {"model_name": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
    ("shape-mismatch", {"shape": [2, 4]}, grpc.StatusCode.INVALID_ARGUMENT, "needs 8 values"),
    ("negative-shape", {"shape": [-1, 4]}, grpc.StatusCode.INVALID_ARGUMENT, "negative"),
    ("unknown-datatype", {"datatype": "FP128"}, grpc.StatusCode.INVALID_ARGUMENT, ""),
    ("wrong-feature-count", {"shape": [2, 2]}, grpc.StatusCode.INVALID_ARGUMENT, "expects 4"),
    ("wrong-rank", {"shape": [4]}, grpc.StatusCode.INVALID_ARGUMENT, "rank"),
    ("raw-size-mismatch", {"raw": b"\0" * 12}, grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
    (
        "raw-nan",
        {"raw": struct.pack("<4f", float("inf"), 1, 1, 1)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "infinity",
    ),
    ("empty-batch", {"shape": [0, 4], "raw": b""}, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
]


@pytest.mark.parametrize(
    ("overrides", "code", "fragment"),
    [case[1:] for case in GRPC_CASES],
    ids=[case[0] for case in GRPC_CASES],
)
def test_grpc_client_errors_get_status_codes(
    tabular_predictor: tuple[ServerProcess, str],
    overrides: dict[str, object],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    server, name = tabular_predictor
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_grpc_request(name, **overrides), timeout=10)
        assert info.value.code() == code
        assert fragment in (info.value.details() or "")
        good = stub.ModelInfer(_grpc_request(name), timeout=10)
        assert list(good.outputs[0].contents.int64_contents) == [0]
