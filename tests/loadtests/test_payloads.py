"""The demo load-test payloads and the requests built from them: the tf-digits payloads
(v1, v2 and TF Serving's PredictRequest), the PredictRequest encoder checked against
tensorflow-serving-api's own protobufs, and the Locust TF Serving user against a stand-in
gRPC server (what it sends, what it reports). No timing is asserted.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from gateway.loadgen import DEMO_PAYLOADS, LOCUSTFILE
from gateway.loadgen.bodies import (
    PREDICT_METHOD,
    binary_body,
    encode_predict_request,
    json_body,
    parse_predict_payload,
    raw_tensors,
    tfserving_body,
    tfserving_payload,
)
from gateway.loadgen.payloads import PROTOCOL_PAYLOADS, available_protocols, payload_path
from tests.support import ROOT, free_port

DIGITS = load_digits().images[:4].astype(np.float32)


def test_every_demo_payload_is_json_for_a_known_protocol() -> None:
    kinds = set(PROTOCOL_PAYLOADS.values())
    for path in sorted(DEMO_PAYLOADS.glob("*.json")):
        service, kind = path.name.removesuffix(".json").rsplit(".", 1)
        assert kind in kinds, path.name
        json.loads(path.read_text())
        assert available_protocols(service), path.name


def test_tf_digits_speaks_every_protocol_and_only_it_has_tfserving() -> None:
    assert available_protocols("tf-digits") == ["v1", "v2", "v2-binary", "grpc", "tfserving"]
    assert "tfserving" not in available_protocols("sklearn-iris")
    assert payload_path("tf-digits", "tfserving").name == "tf-digits.tfserving.json"


def test_tf_digits_payloads_carry_the_same_four_images() -> None:
    v1 = json.loads(json_body("tf-digits", "v1"))
    np.testing.assert_array_equal(np.asarray(v1["instances"], dtype=np.float32), DIGITS)
    (tensor,) = raw_tensors("tf-digits")
    assert (tensor.name, tensor.datatype, tensor.shape) == ("images", "FP32", [4, 8, 8])
    np.testing.assert_array_equal(np.frombuffer(tensor.raw, "<f4").reshape(4, 8, 8), DIGITS)
    body = binary_body("tf-digits")
    assert body.body[body.header_length:] == tensor.raw
    payload = tfserving_payload("tf-digits")
    assert (payload.model_name, payload.signature_name) == ("tf-digits", "serving_default")
    assert list(payload.inputs) == ["images"] and payload.inputs["images"].dtype == np.float32
    np.testing.assert_array_equal(payload.inputs["images"], DIGITS)


def _doc(**changes: Any) -> dict[str, Any]:
    tensor = {"dtype": "DT_INT64", "tensor_shape": {"dim": [{"size": "2"}]}, "int64_val": [1, 2]}
    doc: dict[str, Any] = {"model_spec": {"name": "m"}, "inputs": {"x": tensor}}
    for key, value in changes.items():
        if key in ("dtype", "tensor_shape", "int64_val", "float_val"):
            tensor[key] = value
        else:
            doc[key] = value
    return doc


def test_predict_payload_defaults_and_int64_sizes_as_strings() -> None:
    payload = parse_predict_payload("m", _doc(model_spec={}))
    assert (payload.model_name, payload.signature_name, payload.output_filter) == ("m", "", ())
    assert payload.inputs["x"].dtype == np.int64 and payload.inputs["x"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_spec": {"name": "other"}}, "model_spec.name is 'other', not 'm'"),
        ({"model_spec": {"version": {"value": 1}}}, "model_spec takes"),
        ({"inputs": {}}, "inputs must map"),
        ({"instances": [1]}, "a PredictRequest has only"),
        ({"output_filter": "digit"}, "output_filter must be a list"),
        ({"dtype": "DT_STRING"}, "unsupported dtype 'DT_STRING'"),
        ({"float_val": [1.0]}, "unsupported field(s) float_val"),
        ({"int64_val": [1, 2, 3]}, "int64_val must list 2 values for shape [2]"),
        ({"tensor_shape": {"dim": [{"size": "two"}]}}, "tensor_shape must be"),
    ],
)
def test_bad_predict_payload_is_refused_with_the_reason(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=rf"^m\.tfserving\.json: .*{re.escape(message)}"):
        parse_predict_payload("m", _doc(**changes))


def test_unencodable_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="no TF Serving tensor_content encoding"):
        encode_predict_request("m", {"x": np.array(["a"])})


# --- against tensorflow-serving-api's protobufs (imports TensorFlow: ~15 s, once) -------------


@pytest.fixture(scope="module")
def tfs() -> Any:
    """tensorflow_serving.apis: predict_pb2 and prediction_service_pb2."""
    apis = pytest.importorskip("tensorflow_serving.apis")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2  # noqa: F401

    return apis


def test_tfserving_body_is_the_payload_as_a_real_predict_request(tfs: Any) -> None:
    from google.protobuf import json_format

    body = tfserving_body("tf-digits")
    request = tfs.predict_pb2.PredictRequest.FromString(body)
    assert request.model_spec.name == "tf-digits"
    assert request.model_spec.signature_name == "serving_default"
    images = request.inputs["images"]
    assert images.dtype == 1  # DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [4, 8, 8]
    assert not images.float_val  # the values travel as tensor_content only
    np.testing.assert_array_equal(np.frombuffer(images.tensor_content, "<f4").reshape(4, 8, 8),
                                  DIGITS)
    assert request.SerializeToString(deterministic=True) == body
    # The payload file is a PredictRequest in protobuf's own JSON mapping.
    parsed = json_format.Parse(payload_path("tf-digits", "tfserving").read_text(),
                               tfs.predict_pb2.PredictRequest())
    assert parsed.model_spec == request.model_spec
    np.testing.assert_array_equal(np.asarray(parsed.inputs["images"].float_val,
                                             dtype=np.float32).reshape(4, 8, 8), DIGITS)


def test_encoder_matches_protobuf_for_every_dtype_and_field(tfs: Any) -> None:
    from tensorflow.core.framework import types_pb2

    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.array([0.5, -1e300]),
        "i8": np.array([-128, 127], np.int8), "u8": np.array([0, 255], np.uint8),
        "i16": np.array([-1], np.int16), "u16": np.array([65535], np.uint16),
        "i32": np.array([[-(2**31)]], np.int32), "u32": np.array([2**32 - 1], np.uint32),
        "i64": np.array([-(2**63), 2**63 - 1]), "u64": np.array([2**64 - 1], np.uint64),
        "b": np.array([True, False]), "big_endian": np.array([1.5, 2.5], dtype=">f4"),
        "empty": np.zeros((0, 3), np.float32), "scalar": np.array(7, np.int32),
    }
    body = encode_predict_request("m", arrays, "sig", ["out-a", "out-b"])
    request = tfs.predict_pb2.PredictRequest.FromString(body)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("m", "sig")
    assert list(request.output_filter) == ["out-a", "out-b"]
    names = {"f32": "DT_FLOAT", "f64": "DT_DOUBLE", "i8": "DT_INT8", "u8": "DT_UINT8",
             "i16": "DT_INT16", "u16": "DT_UINT16", "i32": "DT_INT32", "u32": "DT_UINT32",
             "i64": "DT_INT64", "u64": "DT_UINT64", "b": "DT_BOOL", "big_endian": "DT_FLOAT",
             "empty": "DT_FLOAT", "scalar": "DT_INT32"}
    for name, array in arrays.items():
        tensor = request.inputs[name]
        assert types_pb2.DataType.Name(tensor.dtype) == names[name], name
        assert [d.size for d in tensor.tensor_shape.dim] == list(array.shape), name
        decoded = np.frombuffer(tensor.tensor_content, array.dtype.newbyteorder("<"))
        np.testing.assert_array_equal(decoded.reshape(array.shape), array, err_msg=name)
    # The same message built with the protobuf API (map order aside, which parsing ignores).
    expected = tfs.predict_pb2.PredictRequest(output_filter=["out-a", "out-b"])
    expected.model_spec.name, expected.model_spec.signature_name = "m", "sig"
    for name, array in arrays.items():
        tensor = expected.inputs[name]
        tensor.dtype = types_pb2.DataType.Value(names[name])
        for size in array.shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert request == expected
    for name, array in arrays.items():  # one input: the very bytes protobuf writes
        alone = encode_predict_request("m", {name: array}, "sig")
        assert tfs.predict_pb2.PredictRequest.FromString(alone).SerializeToString() == alone


def test_predict_method_is_the_prediction_service_path(tfs: Any) -> None:
    method = tfs.prediction_service_pb2.DESCRIPTOR.services_by_name[
        "PredictionService"].methods_by_name["Predict"]
    assert PREDICT_METHOD == f"/{method.containing_service.full_name}/{method.name}"


# --- the Locust user ---------------------------------------------------------------------------


class _StandIn:
    """A gRPC server answering Predict with an empty PredictResponse; keeps what it got."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.lock = threading.Lock()

    def predict(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.requests.append(request)
        return b""


@pytest.fixture
def stand_in() -> Iterator[tuple[_StandIn, int]]:
    servicer = _StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService",
        {"Predict": grpc.unary_unary_rpc_method_handler(servicer.predict)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)


def test_locust_tfserving_user_sends_the_payload_and_reports_each_call(
    stand_in: tuple[_StandIn, int], tmp_path: Path
) -> None:
    servicer, port = stand_in
    prefix = tmp_path / "run"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
               "--headless", "--only-summary", "-u", "1", "-r", "1", "-t", "1s",
               "--host", "http://127.0.0.1:9", "--csv", str(prefix),
               "--exit-code-on-error", "0", "--service", "tf-digits",
               "--protocols", "tfserving", "--grpc-target", f"127.0.0.1:{port}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    with Path(f"{prefix}_stats.csv").open(newline="") as handle:
        rows = {f"{r['Type']} {r['Name']}": r for r in csv.DictReader(handle)}
    row = rows["grpc Predict tf-digits"]
    assert int(row["Request Count"]) > 0 and row["Failure Count"] == "0"
    assert set(rows) == {"grpc Predict tf-digits", " Aggregated"}
    with servicer.lock:
        assert servicer.requests and set(servicer.requests) == {tfserving_body("tf-digits")}


def test_bytes_payloads_have_a_raw_encoding_too() -> None:
    """digits-classifier's v2 payload (PNGs as base64 text) for the binary and gRPC users."""
    import struct

    doc = json.loads((DEMO_PAYLOADS / "digits-classifier.v2.json").read_text())
    [tensor] = raw_tensors("digits-classifier")
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", [2])
    first = doc["inputs"][0]["data"][0].encode()
    assert tensor.raw.startswith(struct.pack("<I", len(first)) + first)


def test_a_protocol_that_sent_nothing_is_named(tmp_path: Path) -> None:
    from gateway.cli.loadtest import _silent_protocols

    stats = tmp_path / "svc_stats.csv"
    stats.write_text("Type,Name,Request Count\nPOST,v1 svc,10\ngrpc,ModelInfer svc,4\n"
                     ",Aggregated,14\n")
    assert _silent_protocols(stats, ["v1", "v2-binary", "grpc", "tfserving"]) == [
        "v2-binary", "tfserving"
    ]
