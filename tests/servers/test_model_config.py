"""The model configuration extension of our servers: Triton's schema, derived from metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import tritonclient.http as triton_http

from servers.batching import BatchSettings
from servers.model_config import derive_config, triton_data_type
from tests.support import ROOT, ServerProcess

IRIS_INPUT = {"name": "input-0", "data_type": "TYPE_FP64", "dims": [4]}
IRIS_PREDICT = {"name": "predict", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}
IRIS_PROBA = {"name": "predict_proba", "data_type": "TYPE_FP64", "dims": [3]}


def _metadata(*shapes: list[int]) -> dict[str, Any]:
    tensors = [{"name": f"t{i}", "datatype": "FP32", "shape": s} for i, s in enumerate(shapes)]
    return {"name": "m", "inputs": tensors[:1], "outputs": tensors[1:]}


@pytest.mark.parametrize(
    ("datatype", "expected"),
    [
        ("FP32", "TYPE_FP32"),
        ("INT64", "TYPE_INT64"),
        ("BYTES", "TYPE_STRING"),
        ("BOOL", "TYPE_BOOL"),
    ],
)
def test_triton_data_type_names(datatype: str, expected: str) -> None:
    assert triton_data_type(datatype) == expected


def test_batching_on_declares_batch_dimension_and_dynamic_batching() -> None:
    model = SimpleNamespace(batching=BatchSettings(max_batch_size=16))
    config = derive_config(model, _metadata([-1, 3], [-1]))
    assert config["max_batch_size"] == 16
    assert config["dynamic_batching"] == {}
    assert config["input"] == [{"name": "t0", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["output"][0]["dims"] == [1] and config["output"][0]["reshape"] == {"shape": []}


def test_batching_off_keeps_batch_size_one_without_dynamic_batching() -> None:
    model = SimpleNamespace(batching=BatchSettings(max_batch_size=1))
    config = derive_config(model, _metadata([-1, 3], [-1, 2]))
    assert config["max_batch_size"] == 1
    assert "dynamic_batching" not in config
    assert [t["dims"] for t in config["input"] + config["output"]] == [[3], [2]]


def test_no_batching_settings_keeps_full_shapes() -> None:
    config = derive_config(SimpleNamespace(), _metadata([-1, 3], [-1]))
    assert config["max_batch_size"] == 0
    assert [t["dims"] for t in config["input"] + config["output"]] == [[-1, 3], [-1]]


def test_an_input_of_rows_only_declares_no_batch_dimension() -> None:
    # The image transformer's [-1] of encoded images: batched, Triton's tools would read its
    # shape as [] and could not build a request; so no batch dimension, dims as in metadata.
    model = SimpleNamespace(limits=SimpleNamespace(max_batch_size=64))
    metadata = {"name": "m", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}]}
    config = derive_config(model, metadata)
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"] == [{"name": "image", "data_type": "TYPE_STRING", "dims": [-1]}]


def test_fixed_leading_dimension_declares_no_batch() -> None:
    model = SimpleNamespace(batching=BatchSettings(max_batch_size=8))
    config = derive_config(model, _metadata([1, 28, 28], [-1, 10]))
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [1, 28, 28]


def test_sklearn_config_with_tritonclient(sklearn_server: ServerProcess) -> None:
    client = triton_http.InferenceServerClient(sklearn_server.http_url.removeprefix("http://"))
    config = client.get_model_config("sklearn-iris")
    assert config == {
        "name": "sklearn-iris",
        "backend": "sklearn",
        "max_batch_size": 32,  # the server's default --max_batch_size
        "input": [IRIS_INPUT],
        "output": [IRIS_PREDICT, IRIS_PROBA],
        "dynamic_batching": {},
    }
    assert client.get_model_config("sklearn-iris", model_version="1") == config


def test_unknown_model_or_version_is_404(sklearn_server: ServerProcess) -> None:
    base = sklearn_server.http_url
    for path in ("/v2/models/nope/config", "/v2/models/sklearn-iris/versions/7/config"):
        response = httpx.get(base + path)
        assert response.status_code == 404, path
        assert "error" in response.json()
    client = triton_http.InferenceServerClient(base.removeprefix("http://"))
    with pytest.raises(triton_http.InferenceServerException) as failed:
        client.get_model_config("nope")
    assert failed.value.status() == "404"


def test_tabular_transformer_config(tabular_server: ServerProcess) -> None:
    response = httpx.get(f"{tabular_server.http_url}/v2/models/sklearn-iris/config")
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["backend"] == "tabular" and config["max_batch_size"] == 0
    assert config["output"] == [{"name": "label", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert len(config["input"]) == 4


# tritonclient.grpc cannot share a process with kserve (kserve/kserve#3099): its own process.
_GRPC_CONFIG = """
import json, sys
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
try:
    print(json.dumps(client.get_model_config(sys.argv[2], as_json=True)))
except g.InferenceServerException as exc:
    print(json.dumps({"error": [exc.status(), exc.message()]}))
"""


def triton_grpc_config(target: str, model: str) -> dict[str, Any]:
    """`tritonclient.grpc`'s `get_model_config` as JSON, or `{"error": [status, message]}`."""
    completed = subprocess.run(
        [sys.executable, "-c", _GRPC_CONFIG, target, model],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_sklearn_grpc_config_with_tritonclient(sklearn_server: ServerProcess) -> None:
    # protobuf's JSON: int64 dims as strings, zero fields left out.
    answer = triton_grpc_config(sklearn_server.grpc_target, "sklearn-iris")
    assert answer["config"] == {
        "name": "sklearn-iris",
        "backend": "sklearn",
        "max_batch_size": 32,
        "input": [{"name": "input-0", "data_type": "TYPE_FP64", "dims": ["4"]}],
        "output": [
            {"name": "predict", "data_type": "TYPE_INT64", "dims": ["1"], "reshape": {}},
            {"name": "predict_proba", "data_type": "TYPE_FP64", "dims": ["3"]},
        ],
        "dynamic_batching": {},
    }
    missing = triton_grpc_config(sklearn_server.grpc_target, "nope")
    assert missing["error"][0] == "StatusCode.NOT_FOUND"


def test_tensorflow_config_is_a_savedmodel_platform(tf_server: ServerProcess) -> None:
    metadata = httpx.get(f"{tf_server.http_url}/v2/models/tf-digits").json()
    response = httpx.get(f"{tf_server.http_url}/v2/models/tf-digits/config")
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["platform"] == "tensorflow_savedmodel" and "backend" not in config
    assert config["max_batch_size"] == 32 and config["dynamic_batching"] == {}
    # The metadata's shapes less their batch dimension, in the same order.
    assert [t["name"] for t in config["input"]] == [t["name"] for t in metadata["inputs"]]
    for tensor, spec in zip(config["input"], metadata["inputs"], strict=True):
        assert tensor["data_type"] == "TYPE_" + spec["datatype"]
        assert tensor["dims"] == spec["shape"][1:]
