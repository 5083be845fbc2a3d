"""Which backend 500s are a client's mistake (Triton's REST parse failures), and which v2
REST bodies a backend mishandles (tritonserver aborts, wraps batch sizes, takes NaN)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from gateway.dataplane.backend_errors import (
    client_error_status,
    spell_non_finite,
    v2_request_problem,
)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":"failed to parse the request JSON buffer: Invalid value. at 12"}',
        b'{"error":"Unable to parse \'inputs\': attempt to access JSON non-array as array"}',
        b'{"error":"failed to get request params.: attempt to get members for non-object"}',
    ],
)
def test_tritons_parse_failures_become_400(body: bytes) -> None:
    assert client_error_status(500, body) == 400


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error":"model execution failed: CUDA out of memory"}'),  # the server's fault
        (500, b"Internal Server Error"),  # not JSON
        (500, b'["Unable to parse \'x\'"]'),  # not the error document
        (503, b'{"error":"Unable to parse \'inputs\'"}'),  # only 500s are looked at
        (200, b'{"outputs": []}'),
    ],
)
def test_everything_else_passes_unchanged(status: int, body: bytes) -> None:
    assert client_error_status(status, body) == status


def _tensor(shape: list[int], data: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "images", "datatype": "FP32", "shape": shape, **extra}
    if data is not None:
        doc["data"] = data
    return doc


def _body(*tensors: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(tensors)}).encode()


def _binary(shape: list[int], blob: bytes) -> tuple[bytes, str]:
    head = _body(_tensor(shape, parameters={"binary_data_size": len(blob)}))
    return head + blob, str(len(head))


PIXELS = [0.5] * 64


@pytest.mark.parametrize(
    ("body", "header_length"),
    [
        (_body(_tensor([1, 8, 8], PIXELS)), None),
        (_body(_tensor([2, 4], [5.0, 3.4, 1.5, 0.2] * 2)), None),
        (_body(_tensor([0, 1099511627776], [])), None),  # no elements at all
        # "NaN" inside a string (base64 text holds it often) is JSON.
        (_body({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["iVBORNaNInfinity"]}),
         None),
        ('{"inputs": [{"name": "café", "datatype": "FP32", "shape": [1], "data": [1]}]}'.encode(),
         None),  # UTF-8 that is not ASCII
        _binary([1, 8, 8], bytes(256)),
        # What follows the JSON is raw bytes, not JSON: not searched.
        _binary([1, 8, 8], b'"shape": [1099511627776] NaN'.ljust(256, b"\0")),
        # In shared memory, the elements are not in the body.
        (_body(_tensor([1099511627776, 8, 8],
                       parameters={"shared_memory_region": "r", "shared_memory_byte_size": 4})),
         None),
        # Not integers the backend could read: left to its own 400.
        (_body(_tensor([1, 8, 8], PIXELS)).replace(b"[1, 8, 8]", b"[" + b"9" * 25 + b", 8, 8]"),
         None),
        (_body(_tensor([-1, 8, 8], PIXELS)), None),
        (b'{"inputs": [', None),
        (b"", None),
        # A header length that is no length: the whole body is searched (and is fine).
        (_body(_tensor([1, 8, 8], PIXELS)), "abc"),
    ],
)
def test_bodies_a_backend_handles_pass(body: bytes, header_length: str | None) -> None:
    assert v2_request_problem(body, header_length) is None


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        # tritonserver aborts on these (std::bad_alloc sizing a buffer from the shape).
        (_body(_tensor([1099511627776, 8, 8], PIXELS)), None, "shape [1099511627776, 8, 8] holds"),
        (_body(_tensor([1, 8, 8], PIXELS), _tensor([300, 8, 8], PIXELS)), None, "shape [300"),
        # Triton keeps batch sizes modulo 2**32: batch 0 (a 500) and batch 1 (a 200).
        (*_binary([4294967296, 8, 8], bytes(256)), "shape [4294967296, 8, 8] holds"),
        (*_binary([4294967297, 8, 8], bytes(256)), "shape [4294967297, 8, 8] holds"),
        # Not JSON, though tritonserver parses them.
        (_body(_tensor([1, 8, 8], PIXELS)).replace(b"0.5", b"NaN", 1), None, "not valid JSON"),
        (_body(_tensor([1, 8, 8], PIXELS)).replace(b"0.5", b"Infinity", 1), None, "not valid JSON"),
        (_body(_tensor([1, 8, 8], PIXELS)).replace(b"0.5", b"-Infinity", 1), None,
         "not valid JSON"),
        (b"\xef\xbb\xbf" + _body(_tensor([1, 8, 8], PIXELS)), None, "byte order mark"),
        # tritonserver quotes these bytes back in its 400: an error document that is not JSON.
        (_body(_tensor([1, 8, 8], PIXELS)).replace(b'"images"', b'"images\xff\xfe"'), None,
         "not UTF-8 at byte"),
    ],
)
def test_bodies_a_backend_mishandles_are_named(
    body: bytes, header_length: str | None, message: str
) -> None:
    problem = v2_request_problem(body, header_length)
    assert problem is not None and message in problem, problem


def test_many_large_dimensions_stop_at_the_limit() -> None:
    # No product of 100,000 twenty-digit numbers: the count stops once past the body's size.
    dims = b", ".join([b"12345678901234567890"] * 100_000)
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [' + dims + b'], "data": [1]}]}'
    problem = v2_request_problem(body)
    assert problem is not None and "holds more elements" in problem


@pytest.mark.parametrize(
    ("answer", "json_length", "data"),
    [
        (b'{"outputs":[{"name":"p","datatype":"FP32","shape":[3],"data":[NaN,Infinity,-Infinity]}]}',
         None, ["NaN", "Infinity", "-Infinity"]),
        (b'{"outputs":[{"name":"p","datatype":"FP32","shape":[3],"data":[1.5,-Infinity]}]}',
         None, [1.5, "-Infinity"]),
    ],
)
def test_bare_non_finite_floats_are_spelt_as_strings(
    answer: bytes, json_length: int | None, data: list[object]
) -> None:
    spelt = spell_non_finite(answer, json_length)
    assert spelt is not None
    body, length = spelt
    assert length == len(body)
    assert orjson.loads(body)["outputs"][0]["data"] == data


def test_a_binary_answer_keeps_its_tensors_and_gets_its_new_json_length() -> None:
    head = b'{"outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[NaN]},' \
        b'{"name":"d","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}'
    blob = b"NaN\x00\x00\x00\x00\x00"  # binary bytes that happen to read "NaN"
    spelt = spell_non_finite(head + blob, len(head))
    assert spelt is not None
    body, length = spelt
    assert body[length:] == blob
    assert orjson.loads(body[:length])["outputs"][0]["data"] == ["NaN"]


@pytest.mark.parametrize(
    "answer",
    [
        b'{"outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[0.5]}]}',
        # "NaN" and "Infinity" inside strings are not numbers.
        b'{"outputs":[{"name":"NaN","datatype":"BYTES","shape":[1],"data":["Infinity"]}]}',
        b'{"error": "NaN',  # not JSON at all: passed as it is
    ],
)
def test_answers_without_bare_non_finite_floats_pass(answer: bytes) -> None:
    assert spell_non_finite(answer, None) is None
