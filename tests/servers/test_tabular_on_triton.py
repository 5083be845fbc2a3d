"""The tabular transformer in front of the real tritonserver (`--predictor_protocol grpc-v2`).

Triton serves `iris-classifier` from the CPU repository `build-models` writes: the iris
LogisticRegression converted with skl2onnx, run by the python backend in ONNX Runtime. Every
answer is compared with what the scikit-learn model itself predicts. A missing `.venv-triton`
fails these tests, saying to run `make install`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton_http
from sklearn.datasets import load_iris

from demos.iris import IRIS_FEATURES
from demos.triton import (
    IRIS_INPUT,
    IRIS_MODEL,
    IRIS_OUTPUT,
    MAX_BATCH_SIZE,
)
from servers.triton.install import TritonInstall
from servers.triton.tritonserver import TritonServer
from tests.support import ServerProcess, run_server

ROWS = load_iris().data
TARGET_NAMES = [str(n) for n in load_iris().target_names]
SAMPLE = ROWS[::7]  # 22 rows of the three classes


@pytest.fixture(scope="module")
def estimator(iris_dir: Path) -> Any:
    """The scikit-learn model the ONNX file was converted from."""
    return joblib.load(iris_dir / "model.joblib")


@pytest.fixture(scope="module")
def triton(
    triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> Iterator[TritonServer]:
    with (logs / "tritonserver-iris.log").open("wb") as log:
        with TritonServer(triton_repository, install=triton_install, log=log) as server:
            yield server


@pytest.fixture(scope="module")
def transformer(triton: TritonServer, iris_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    # The transformer asks its predictor for its own (the service's) name: iris-classifier.
    args = [
        f"--model_name={IRIS_MODEL}",
        f"--model_dir={iris_dir}",
        f"--predictor_host={triton.grpc_target}",
        "--predictor_protocol=grpc-v2",
    ]
    with run_server("servers.transformers.tabular", args, logs) as server:
        yield server


def _expected_labels(estimator: Any, rows: np.ndarray) -> list[str]:
    return [TARGET_NAMES[int(i)] for i in estimator.predict(rows)]


def test_the_onnx_file_predicts_what_sklearn_predicts(
    triton_repository: Path, estimator: Any
) -> None:
    import onnxruntime as ort

    onnx_file = triton_repository / IRIS_MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (labels,) = session.run([IRIS_OUTPUT], {IRIS_INPUT: ROWS})
    assert labels.tolist() == estimator.predict(ROWS).tolist()


def test_triton_serves_the_tensors_the_transformer_uses(triton: TritonServer) -> None:
    doc = httpx.get(f"{triton.http_url}/v2/models/{IRIS_MODEL}", timeout=5).json()
    assert doc["inputs"] == [{"name": IRIS_INPUT, "datatype": "FP64", "shape": [-1, 4]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]} == {
        IRIS_OUTPUT: ("INT64", [-1, 1]),  # the model's [N], declared dims [1] + reshape []
        "predict_proba": ("FP64", [-1, 3]),
    }


def test_tritonclient_http_gets_what_sklearn_predicts(
    triton: TritonServer, estimator: Any
) -> None:
    client = triton_http.InferenceServerClient(triton.http_target, network_timeout=30)
    predicted: list[int] = []
    for start in range(0, len(ROWS), 50):  # all 150 rows, within max_batch_size
        rows = np.ascontiguousarray(ROWS[start : start + 50])
        tensor = triton_http.InferInput(IRIS_INPUT, list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)
        result = client.infer(IRIS_MODEL, [tensor])
        assert result.as_numpy(IRIS_OUTPUT).shape == (len(rows), 1)
        np.testing.assert_allclose(result.as_numpy("predict_proba"),
                                   estimator.predict_proba(rows), rtol=1e-9, atol=1e-12)
        predicted += result.as_numpy(IRIS_OUTPUT).ravel().tolist()
    assert predicted == estimator.predict(ROWS).tolist()


def test_v1_named_records_in_label_names_out(
    transformer: ServerProcess, estimator: Any
) -> None:
    # Keys in reverse order: the transformer orders them by metadata.json's feature list.
    records = [dict(reversed(list(zip(IRIS_FEATURES, row, strict=True)))) for row in SAMPLE]
    url = f"{transformer.http_url}/v1/models/{IRIS_MODEL}:predict"
    response = httpx.post(url, json={"instances": records}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": _expected_labels(estimator, SAMPLE)}
    assert set(response.json()["predictions"]) == set(TARGET_NAMES)


def test_v2_feature_columns_over_rest_in_labels_out(
    transformer: ServerProcess, estimator: Any
) -> None:
    body = {
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [len(SAMPLE)],
             "data": SAMPLE[:, i].tolist()}
            for i, name in enumerate(IRIS_FEATURES)
        ]
    }
    url = f"{transformer.http_url}/v2/models/{IRIS_MODEL}/infer"
    response = httpx.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"]) == ("label", "BYTES")
    assert output["data"] == _expected_labels(estimator, SAMPLE)


def test_a_full_batch_passes_and_a_bigger_one_gets_tritons_400(
    transformer: ServerProcess, estimator: Any
) -> None:
    url = f"{transformer.http_url}/v1/models/{IRIS_MODEL}:predict"
    rows = ROWS[:MAX_BATCH_SIZE]
    response = httpx.post(url, json={"instances": rows.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": _expected_labels(estimator, rows)}
    too_many = httpx.post(url, json={"instances": ROWS[: MAX_BATCH_SIZE + 1].tolist()},
                          timeout=30)
    assert too_many.status_code == 400, too_many.text
    assert str(MAX_BATCH_SIZE) in too_many.json()["error"]


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"sepal_length": 5.0}, "missing features"),
        ({**dict(zip(IRIS_FEATURES, ROWS[0], strict=True)), "colour": 1.0}, "unknown features"),
    ],
    ids=["missing", "unknown"],
)
def test_a_bad_record_gets_400_with_the_reason(
    transformer: ServerProcess, record: dict[str, float], fragment: str
) -> None:
    url = f"{transformer.http_url}/v1/models/{IRIS_MODEL}:predict"
    response = httpx.post(url, json={"instances": [record]}, timeout=30)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
