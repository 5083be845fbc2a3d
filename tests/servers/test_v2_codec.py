"""v2 REST bodies (JSON and the binary tensor extension) in, v2 REST responses out.

Good bodies are built by `tritonclient.http` itself and our responses are read back by it, so
the wire format is checked against the client people actually use.
"""

from __future__ import annotations

import uuid
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import np_to_triton_dtype

from servers.errors import InvalidInput
from servers.protocol.v2 import (
    HEADER_LENGTH,
    decode_inputs,
    encode_rest_response,
    make_response,
    parse_rest_request,
)

TENSOR = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}


def _binary_input(size: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": size}}


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _binary(doc: dict[str, Any], blob: bytes) -> tuple[bytes, str]:
    header = orjson.dumps(doc)
    return header + blob, str(len(header))


def _triton_input(name: str, array: np.ndarray, binary: bool = True) -> triton.InferInput:
    datatype = "BF16" if array.dtype == ml_dtypes.bfloat16 else np_to_triton_dtype(array.dtype)
    infer_input = triton.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def _triton_body(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None
) -> tuple[bytes, str | None]:
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, (None if json_size is None else str(json_size))


# --- bad requests --------------------------------------------------------------------------

BAD_BODIES: list[Any] = [
    pytest.param(b"{not json", None, id="not-json"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(_json([TENSOR]), None, id="a-list"),
    pytest.param(_json("inputs"), None, id="a-string"),
    pytest.param(_json({}), None, id="no-inputs"),
    pytest.param(_json({"inputs": TENSOR}), None, id="inputs-an-object"),
    pytest.param(_json({"inputs": None}), None, id="inputs-null"),
    pytest.param(_json({"inputs": []}), None, id="inputs-empty"),
    pytest.param(_json({"inputs": ["x"]}), None, id="input-a-string"),
    pytest.param(_json({"inputs": [{**TENSOR, "name": None}]}), None, id="input-name-null"),
    pytest.param(_json({"inputs": [{**TENSOR, "name": ""}]}), None, id="input-name-empty"),
    pytest.param(_json({"inputs": [{**TENSOR, "name": 3}]}), None, id="input-name-a-number"),
    pytest.param(
        _json({"inputs": [{k: v for k, v in TENSOR.items() if k != "name"}]}),
        None,
        id="input-without-name",
    ),
    pytest.param(
        _json({"inputs": [{k: v for k, v in TENSOR.items() if k != "datatype"}]}),
        None,
        id="input-without-datatype",
    ),
    pytest.param(_json({"inputs": [{**TENSOR, "datatype": 4}]}), None, id="datatype-a-number"),
    pytest.param(
        _json({"inputs": [{k: v for k, v in TENSOR.items() if k != "shape"}]}),
        None,
        id="input-without-shape",
    ),
    pytest.param(
        _json({"inputs": [{k: v for k, v in TENSOR.items() if k != "data"}]}),
        None,
        id="input-without-data",
    ),
    pytest.param(_json({"inputs": [{**TENSOR, "data": None}]}), None, id="data-null"),
    pytest.param(
        _json({"inputs": [{**TENSOR, "parameters": [1]}]}), None, id="input-parameters-a-list"
    ),
    pytest.param(
        *_binary({"inputs": [{**TENSOR, "parameters": {"binary_data_size": 8}}]}, b"\x00" * 8),
        id="both-data-and-binary-data-size",
    ),
    *[
        pytest.param(
            *_binary({"inputs": [_binary_input(size)]}, b"\x00" * 8), id=f"binary-data-size-{label}"
        )
        for label, size in [
            ("negative", -1),
            ("a-string", "8"),
            ("a-float", 8.0),
            ("a-boolean", True),
            ("past-the-end", 9),
        ]
    ],
    pytest.param(
        _json({"inputs": [_binary_input(8)]}), None, id="binary-data-size-without-header-length"
    ),
    pytest.param(*_binary({"inputs": [_binary_input(8)]}, b"\x00" * 9), id="leftover-bytes"),
    pytest.param(*_binary({"inputs": [TENSOR]}, b"\x00"), id="bytes-after-json-only-inputs"),
    pytest.param(_json({"inputs": [TENSOR]}), "10000", id="header-length-past-the-body"),
    pytest.param(_json({"inputs": [TENSOR]}), "-1", id="header-length-negative"),
    pytest.param(_json({"inputs": [TENSOR]}), "ten", id="header-length-not-an-integer"),
    pytest.param(_json({"inputs": [TENSOR]}), "", id="header-length-empty"),
    pytest.param(_json({"inputs": [TENSOR]}), "1.5", id="header-length-a-float"),
    pytest.param(_json({"inputs": [TENSOR]}), "5", id="header-length-cuts-the-json"),
    pytest.param(_json({"inputs": [TENSOR], "id": 7}), None, id="id-a-number"),
    pytest.param(_json({"inputs": [TENSOR], "id": ["a"]}), None, id="id-a-list"),
    pytest.param(_json({"inputs": [TENSOR], "parameters": "x"}), None, id="parameters-a-string"),
    pytest.param(_json({"inputs": [TENSOR], "parameters": [1]}), None, id="parameters-a-list"),
    pytest.param(_json({"inputs": [TENSOR], "outputs": {"name": "y"}}), None, id="outputs-object"),
    pytest.param(_json({"inputs": [TENSOR], "outputs": ["y"]}), None, id="output-a-string"),
    pytest.param(_json({"inputs": [TENSOR], "outputs": [{}]}), None, id="output-without-name"),
    pytest.param(_json({"inputs": [TENSOR], "outputs": [{"name": 1}]}), None, id="output-name-int"),
    pytest.param(
        _json({"inputs": [TENSOR], "outputs": [{"name": "y", "parameters": 1}]}),
        None,
        id="output-parameters-a-number",
    ),
]


@pytest.mark.parametrize(("body", "header_length"), BAD_BODIES)
def test_malformed_rest_requests_are_invalid_input(body: bytes, header_length: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rest_request(body, header_length, "m")
    assert caught.value.http_status == 400
    assert str(caught.value)


BAD_TENSORS: list[Any] = [
    pytest.param({**TENSOR, "datatype": "FP8"}, id="unknown-datatype"),
    pytest.param({**TENSOR, "shape": [-2]}, id="negative-dim"),
    pytest.param({**TENSOR, "shape": "2"}, id="shape-a-string"),
    pytest.param({**TENSOR, "shape": [3]}, id="count-mismatch"),
    pytest.param({**TENSOR, "data": ["a", "b"]}, id="strings-in-fp32"),
    pytest.param({**TENSOR, "data": 1.0}, id="data-a-scalar"),
]


@pytest.mark.parametrize("tensor", BAD_TENSORS)
def test_structurally_fine_inputs_with_bad_tensors_fail_when_decoded(
    tensor: dict[str, Any],
) -> None:
    request = parse_rest_request(_json({"inputs": [tensor]}), None, "m")
    with pytest.raises(InvalidInput, match="'x'"):
        decode_inputs(request)


def test_the_same_input_twice_is_refused() -> None:
    request = parse_rest_request(_json({"inputs": [TENSOR, TENSOR]}), None, "m")
    with pytest.raises(InvalidInput, match="twice"):
        decode_inputs(request)


# --- good requests -------------------------------------------------------------------------

ARRAYS: dict[str, np.ndarray] = {
    "fp32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "fp64": np.array([[np.pi, -0.0, np.inf]]),
    "fp16": np.array([1.5, -2.25, 65504], dtype=np.float16),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "int64": np.array([[-(2**63)], [2**63 - 1]], dtype=np.int64),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "bool": np.array([[True, False], [False, True]]),
    "bytes": np.array([b"ab", b"\x00\xff", b""], dtype=np.object_),
    "empty": np.zeros((0, 4), dtype=np.float32),
}


def test_tritonclient_binary_body_decodes_to_the_exact_arrays() -> None:
    inputs = [_triton_input(name, array) for name, array in ARRAYS.items()]
    body, header_length = _triton_body(inputs)
    assert header_length is not None and int(header_length) < len(body)

    request = parse_rest_request(body, header_length, "m")
    decoded = decode_inputs(request)

    assert list(decoded) == list(ARRAYS)
    for name, array in ARRAYS.items():
        assert decoded[name].shape == array.shape, name
        assert decoded[name].dtype == array.dtype, name
        assert decoded[name].tolist() == array.tolist(), name


def test_tritonclient_bf16_input_decodes_to_float32() -> None:
    values = np.array([1.5, -2.0, 3.14159], dtype=ml_dtypes.bfloat16)
    request = parse_rest_request(*_triton_body([_triton_input("b", values)]), "m")
    decoded = decode_inputs(request)["b"]
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values.astype(np.float32))


def test_tritonclient_mixed_json_and_binary_inputs_decode_in_order() -> None:
    inputs = [
        _triton_input("a", np.array([1, 2, 3], dtype=np.int32), binary=False),
        _triton_input("b", np.array([b"x", b"yz"], dtype=np.object_)),
        _triton_input("c", np.array([[0.5, 1.5]], dtype=np.float32), binary=False),
        _triton_input("d", np.array([7], dtype=np.uint16)),
    ]
    decoded = decode_inputs(parse_rest_request(*_triton_body(inputs), "m"))
    assert decoded["a"].tolist() == [1, 2, 3] and decoded["a"].dtype == np.int32
    assert decoded["b"].tolist() == [b"x", b"yz"]
    assert decoded["c"].tolist() == [[0.5, 1.5]] and decoded["c"].dtype == np.float32
    assert decoded["d"].tolist() == [7] and decoded["d"].dtype == np.uint16


def test_tritonclient_json_only_body_parses_without_a_header_length() -> None:
    body, header_length = _triton_body([_triton_input("a", np.ones(3, np.float64), False)])
    assert header_length is None
    assert decode_inputs(parse_rest_request(body, None, "m"))["a"].tolist() == [1.0] * 3


def test_request_id_and_parameters_are_kept() -> None:
    doc = {"id": "req-1", "inputs": [TENSOR], "parameters": {"binary_data_output": True}}
    request = parse_rest_request(_json(doc), None, "m")
    assert request.id == "req-1"
    assert request.model_name == "m"
    assert request.parameters == {"binary_data_output": True}


def test_a_header_length_equal_to_the_body_means_no_binary_part() -> None:
    body = _json({"inputs": [TENSOR]})
    request = parse_rest_request(body, str(len(body)), "m")
    assert decode_inputs(request)["x"].tolist() == [1.0, 2.0]


def test_zero_binary_data_size_is_an_empty_tensor() -> None:
    doc = {
        "inputs": [
            {
                "name": "e",
                "datatype": "INT32",
                "shape": [0, 2],
                "parameters": {"binary_data_size": 0},
            }
        ]
    }
    decoded = decode_inputs(parse_rest_request(*_binary(doc, b""), "m"))
    assert decoded["e"].shape == (0, 2)


# --- responses -----------------------------------------------------------------------------

OUTPUTS = {
    "probabilities": (np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32), "FP32"),
    "label": (np.array([b"setosa", b"virginica"], dtype=np.object_), "BYTES"),
    "index": (np.array([1, 0], dtype=np.int64), "INT64"),
}


def _respond(doc: dict[str, Any]) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    request = parse_rest_request(_json({"inputs": [TENSOR], **doc}), None, "m")
    body, headers = encode_rest_response(make_response(request, "m", OUTPUTS), request)
    if HEADER_LENGTH in headers:
        length = int(headers[HEADER_LENGTH])
        return orjson.loads(body[:length]), body[length:], headers
    return orjson.loads(body), b"", headers


def _layout(header: dict[str, Any]) -> dict[str, str]:
    return {
        out["name"]: "binary" if "binary_data_size" in out.get("parameters", {}) else "json"
        for out in header["outputs"]
    }


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param({}, {"probabilities": "json", "label": "json", "index": "json"}, id="plain"),
        pytest.param(
            {"parameters": {"binary_data_output": True}},
            {"probabilities": "binary", "label": "binary", "index": "binary"},
            id="binary-data-output",
        ),
        pytest.param(
            {"parameters": {"binary_data_output": False}},
            {"probabilities": "json", "label": "json", "index": "json"},
            id="binary-data-output-false",
        ),
        pytest.param(
            {
                "outputs": [
                    {"name": "label", "parameters": {"binary_data": True}},
                    {"name": "index"},
                ]
            },
            {"label": "binary", "index": "json"},
            id="per-output-binary-data",
        ),
        pytest.param(
            {
                "parameters": {"binary_data_output": True},
                "outputs": [
                    {"name": "index", "parameters": {"binary_data": False}},
                    {"name": "probabilities"},
                ],
            },
            {"probabilities": "binary", "index": "json"},
            id="per-output-overrides-request-default",
        ),
    ],
)
def test_outputs_are_binary_only_when_asked(doc: dict[str, Any], expected: dict[str, str]) -> None:
    header, blobs, headers = _respond(doc)
    assert _layout(header) == expected
    sizes = [
        o["parameters"]["binary_data_size"]
        for o in header["outputs"]
        if "binary_data_size" in o.get("parameters", {})
    ]
    assert sum(sizes) == len(blobs)
    assert (HEADER_LENGTH in headers) == bool(sizes)


def test_json_outputs_carry_flat_row_major_data_and_shape() -> None:
    header, _, _ = _respond({})
    by_name = {o["name"]: o for o in header["outputs"]}
    assert by_name["probabilities"] == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [0.25, 0.75, 1.0, 0.0],
    }
    assert by_name["label"]["data"] == ["setosa", "virginica"]
    assert header["model_name"] == "m"


def test_response_id_echoes_the_request_id() -> None:
    header, _, _ = _respond({"id": "abc-123"})
    assert header["id"] == "abc-123"


def test_response_id_is_generated_when_the_request_has_none() -> None:
    first, _, _ = _respond({})
    second, _, _ = _respond({})
    assert uuid.UUID(first["id"]) and uuid.UUID(second["id"])
    assert first["id"] != second["id"]


def test_an_unknown_requested_output_is_a_400() -> None:
    with pytest.raises(InvalidInput, match="nope") as caught:
        _respond({"outputs": [{"name": "label"}, {"name": "nope"}]})
    assert caught.value.http_status == 400


def test_tritonclient_reads_our_binary_response_back_to_the_same_arrays() -> None:
    inputs = [_triton_input("x", np.ones((1, 4), np.float32))]
    body, header_length = _triton_body(inputs)  # no outputs: tritonclient asks for binary
    request = parse_rest_request(body, header_length, "iris")
    assert request.id is None

    outputs = dict(OUTPUTS)
    outputs["half"] = (np.array([[0.5, -1.0]], dtype=np.float16), "FP16")
    outputs["flags"] = (np.array([True, False]), "BOOL")
    outputs["bf16"] = (np.array([1.5, -3.0], dtype=np.float32), "BF16")
    response_body, headers = encode_rest_response(make_response(request, "iris", outputs), request)

    result = triton.InferenceServerClient.parse_response_body(
        response_body, header_length=int(headers[HEADER_LENGTH])
    )
    assert result.get_response()["model_name"] == "iris"
    assert result.get_response()["id"]
    for name, (array, _) in outputs.items():
        got = result.as_numpy(name)
        assert got is not None, name
        assert got.shape == array.shape, name
        assert got.astype(array.dtype).tolist() == array.tolist(), name


def test_tritonclient_reads_json_outputs_it_asked_for() -> None:
    inputs = [_triton_input("x", np.ones((1, 4), np.float32))]
    wanted = [
        triton.InferRequestedOutput("index", binary_data=False),
        triton.InferRequestedOutput("label", binary_data=True),
    ]
    request = parse_rest_request(*_triton_body(inputs, wanted), "m")
    body, headers = encode_rest_response(make_response(request, "m", OUTPUTS), request)
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=int(headers[HEADER_LENGTH])
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "index"]
    assert result.as_numpy("index").tolist() == [1, 0]
    assert result.as_numpy("label").tolist() == [b"setosa", b"virginica"]


def test_plain_dict_responses_are_json_encoded_as_they_are() -> None:
    body, headers = encode_rest_response({"name": "m", "ready": True}, None)
    assert orjson.loads(body) == {"name": "m", "ready": True}
    assert headers == {}
