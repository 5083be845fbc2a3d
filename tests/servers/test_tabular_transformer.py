"""The tabular transformer in front of a real predictor: named features in, labels out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from demos.iris import IRIS_FEATURES
from tests.support import ServerProcess, free_port, run_server

ROWS = [[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]]
LABELS = ["setosa", "virginica", "versicolor"]


def _transformer_args(name: str, iris_dir: Path, predictor_port: int, protocol: str) -> list[str]:
    """A tabular transformer named `name` in front of the predictor on `predictor_port`."""
    return [
        f"--model_name={name}",
        f"--model_dir={iris_dir}",
        f"--predictor_host=127.0.0.1:{predictor_port}",
        f"--predictor_protocol={protocol}",
    ]


def _records() -> list[dict[str, float]]:
    return [dict(zip(IRIS_FEATURES, row, strict=True)) for row in ROWS]


def test_model_agrees_with_the_expected_labels(iris_dir: Path) -> None:
    estimator = joblib.load(iris_dir / "model.joblib")
    names = ["setosa", "versicolor", "virginica"]
    assert [names[i] for i in estimator.predict(np.array(ROWS))] == LABELS


def test_v1_records_in_label_names_out(tabular_server: ServerProcess) -> None:
    url = f"{tabular_server.http_url}/v1/models/sklearn-iris:predict"
    # Record keys in any order: the transformer orders them by the stored feature list.
    records = [dict(reversed(list(r.items()))) for r in _records()]
    response = httpx.post(url, json={"instances": records})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": LABELS}


def test_v2_feature_columns_over_rest_and_grpc(tabular_server: ServerProcess) -> None:
    columns = np.array(ROWS).T
    body = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": [len(ROWS)], "data": columns[i].tolist()}
            for i, name in enumerate(IRIS_FEATURES)
        ]
    }
    url = f"{tabular_server.http_url}/v2/models/sklearn-iris/infer"
    doc = httpx.post(url, json=body).json()
    assert doc["outputs"][0]["name"] == "label"
    assert doc["outputs"][0]["data"] == LABELS

    async def by_grpc() -> list[str]:
        inputs = []
        for i, name in enumerate(IRIS_FEATURES):
            tensor = InferInput(name, [len(ROWS)], "FP32")
            tensor.set_data_from_numpy(columns[i].astype(np.float32))
            inputs.append(tensor)
        client = InferenceGRPCClient(tabular_server.grpc_target)
        try:
            result = await client.infer(InferRequest("sklearn-iris", inputs))
        finally:
            await client.close()
        return [v.decode() for v in result.outputs[0].as_numpy().tolist()]

    assert asyncio.run(by_grpc()) == LABELS


@pytest.mark.parametrize(
    ("instances", "fragment"),
    [
        ([{"sepal_length": 5.0}], "missing features"),
        ([{**dict(zip(IRIS_FEATURES, ROWS[0], strict=True)), "colour": 1.0}], "unknown features"),
        (
            [{**dict(zip(IRIS_FEATURES, ROWS[0], strict=True)), "sepal_width": "wide"}],
            "non-numeric",
        ),
        ([], "empty"),
        (["setosa"], "must be a list"),
    ],
    ids=["missing", "unknown", "string", "empty", "not-a-record"],
)
def test_bad_records_get_400(tabular_server: ServerProcess, instances: list, fragment: str) -> None:  # type: ignore[type-arg]
    url = f"{tabular_server.http_url}/v1/models/sklearn-iris:predict"
    response = httpx.post(url, json={"instances": instances})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


@pytest.mark.parametrize("protocol", ["grpc-v2", "v2"])
def test_predictor_down_is_503_not_500(iris_dir: Path, logs: Path, protocol: str) -> None:
    args = _transformer_args("sklearn-iris", iris_dir, free_port(), protocol)
    with run_server("servers.transformers.tabular", args, logs) as server:
        url = f"{server.http_url}/v1/models/sklearn-iris:predict"
        response = httpx.post(url, json={"instances": _records()}, timeout=30)
        assert response.status_code == 503, response.text
        assert "predictor" in response.json()["error"]


def test_predictor_over_v2_rest_too(
    sklearn_server: ServerProcess, iris_dir: Path, logs: Path
) -> None:
    args = _transformer_args("sklearn-iris", iris_dir, sklearn_server.http_port, "v2")
    with run_server("servers.transformers.tabular", args, logs) as server:
        url = f"{server.http_url}/v1/models/sklearn-iris:predict"
        response = httpx.post(url, json={"instances": _records()})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": LABELS}
        bad = httpx.post(url, json={"instances": [{"sepal_length": 1.0}]})
        assert bad.status_code == 400
        v2 = httpx.post(f"{server.http_url}/v2/models/sklearn-iris/infer", json={"inputs": [
            {"name": "x", "datatype": "FP64", "shape": [len(ROWS), 4],
             "data": np.array(ROWS).ravel().tolist()}]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == LABELS[: len(ROWS)]
        # A NaN (binary v2: JSON has none) reaches the predictor, whose refusal passes through.
        raw = np.array([[float("nan"), 3.4, 1.5, 0.2]]).tobytes()
        head = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4],
                                       "parameters": {"binary_data_size": len(raw)}}]}).encode()
        nan = httpx.post(f"{server.http_url}/v2/models/sklearn-iris/infer", content=head + raw,
                         headers={"inference-header-content-length": str(len(head)),
                                  "content-type": "application/octet-stream"})
        assert nan.status_code == 400 and "NaN" in nan.json()["error"], nan.text


def test_predictor_without_the_model_passes_its_404_on(
    sklearn_server: ServerProcess, iris_dir: Path, logs: Path
) -> None:
    args = _transformer_args("not-on-the-predictor", iris_dir, sklearn_server.http_port, "v2")
    with run_server("servers.transformers.tabular", args, logs) as server:
        url = f"{server.http_url}/v1/models/not-on-the-predictor:predict"
        response = httpx.post(url, json={"instances": _records()})
        assert response.status_code == 404, response.text
        assert "predictor" in response.json()["error"]


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "FP64"])
def test_v2_one_matrix_of_any_numeric_datatype(
    tabular_server: ServerProcess, datatype: str
) -> None:
    rows = np.array(ROWS).round().astype(int) if datatype == "INT32" else np.array(ROWS)
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(ROWS), 4],
                        "data": rows.ravel().tolist()}]}
    response = httpx.post(f"{tabular_server.http_url}/v2/models/sklearn-iris/infer", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"][0]["data"]) == len(ROWS)
    bad = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 4],
                       "data": ["a", "b", "c", "d"]}]}
    refused = httpx.post(f"{tabular_server.http_url}/v2/models/sklearn-iris/infer", json=bad)
    assert refused.status_code == 400 and "numeric" in refused.json()["error"]
