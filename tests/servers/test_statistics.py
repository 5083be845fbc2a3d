"""The statistics extension of our servers: counted for real, read with Triton's clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as triton_http

from servers.protocol.statistics_wire import encode_statistics_response
from servers.statistics import ModelStatistics
from tests.support import ROOT, ServerProcess, run_server

ROW = [5.1, 3.5, 1.4, 0.2]


def _v2(rows: int) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64",
                        "data": ROW * rows}]}


def _stats(url: str, model: str = "sklearn-iris") -> dict[str, Any]:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        doc: dict[str, Any] = client.get_inference_statistics(model)
    finally:
        client.close()
    (entry,) = doc["model_stats"]
    return entry


@pytest.fixture(scope="module")
def batching_server(iris_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    # A batch waits up to 0.2 s to fill once the model is free: concurrent requests merge.
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}", "--max_batch_size=64",
            "--max_batch_latency_us=200000"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


def test_counts_rows_requests_and_phases(sklearn_server: ServerProcess) -> None:
    before = _stats(sklearn_server.http_url)
    for rows in (1, 3):
        response = httpx.post(f"{sklearn_server.http_url}/v2/models/sklearn-iris/infer",
                              json=_v2(rows))
        assert response.status_code == 200, response.text
    bad = httpx.post(f"{sklearn_server.http_url}/v2/models/sklearn-iris/infer",
                     json={"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64",
                                       "data": [1, 2, 3]}]})
    assert bad.status_code == 400
    after = _stats(sklearn_server.http_url)
    assert after["name"] == "sklearn-iris" and after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 4  # rows, not requests
    assert after["execution_count"] - before["execution_count"] == 2
    stats, old = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - old["success"]["count"] == 2
    assert stats["fail"]["count"] - old["fail"]["count"] == 1  # reached the model, refused
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[phase]["count"] - old[phase]["count"] == 2
        assert stats[phase]["ns"] >= old[phase]["ns"]
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert stats["success"]["ns"] - old["success"]["ns"] >= (
        stats["compute_infer"]["ns"] - old["compute_infer"]["ns"]
    )
    sizes = {b["batch_size"] for b in after["batch_stats"]}
    assert {1, 3} <= sizes
    assert after["last_inference"] > 0


def test_batched_requests_are_fewer_executions(batching_server: ServerProcess) -> None:
    async def burst() -> None:
        async with httpx.AsyncClient(base_url=batching_server.http_url, timeout=30) as client:
            answers = await asyncio.gather(*(
                client.post("/v2/models/sklearn-iris/infer", json=_v2(1)) for _ in range(32)
            ))
        assert {a.status_code for a in answers} == {200}

    asyncio.run(burst())
    stats = _stats(batching_server.http_url)
    assert stats["inference_count"] == 32
    assert stats["inference_stats"]["success"]["count"] == 32
    assert 1 <= stats["execution_count"] < 32
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == (
        stats["execution_count"]
    )
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1
    assert stats["inference_stats"]["queue"]["ns"] > 0  # they waited for their batch


def test_unknown_model_or_version_is_404(sklearn_server: ServerProcess) -> None:
    base = f"{sklearn_server.http_url}/v2/models"
    assert httpx.get(f"{base}/nope/stats").status_code == 404
    missing = httpx.get(f"{base}/sklearn-iris/versions/7/stats")
    assert missing.status_code == 404 and "'7'" in missing.json()["error"]
    versioned = httpx.get(f"{base}/sklearn-iris/versions/1/stats").json()
    assert versioned["model_stats"][0]["version"] == "1"
    every = httpx.get(f"{base}/stats").json()
    assert [s["name"] for s in every["model_stats"]] == ["sklearn-iris"]


def test_transformer_counts_its_own_requests(tabular_server: ServerProcess) -> None:
    before = _stats(tabular_server.http_url)
    response = httpx.post(f"{tabular_server.http_url}/v1/models/sklearn-iris:predict",
                          json={"instances": [dict(zip(
                              ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                              ROW, strict=True))] * 2})
    assert response.status_code == 200, response.text
    after = _stats(tabular_server.http_url)
    assert after["inference_count"] - before["inference_count"] == 2
    assert after["execution_count"] - before["execution_count"] == 1
    infer = after["inference_stats"]["compute_infer"]["ns"] - (
        before["inference_stats"]["compute_infer"]["ns"])
    assert infer > 0  # the predictor call


_GRPC_STATS = """
import json, sys
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
try:
    print(json.dumps(client.get_inference_statistics(sys.argv[2], as_json=True)))
except g.InferenceServerException as exc:
    print(json.dumps({"error": [exc.status(), exc.message()]}))
"""


def triton_grpc_stats(target: str, model: str) -> dict[str, Any]:
    """tritonclient.grpc's `get_inference_statistics`, in its own process (it cannot share
    one with kserve: kserve/kserve#3099)."""
    completed = subprocess.run([sys.executable, "-c", _GRPC_STATS, target, model],
                               capture_output=True, text=True, timeout=60, cwd=ROOT,
                               check=True)
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_grpc_statistics_with_tritonclient(sklearn_server: ServerProcess) -> None:
    rest = _stats(sklearn_server.http_url)
    doc = triton_grpc_stats(sklearn_server.grpc_target, "sklearn-iris")
    (entry,) = doc["model_stats"]
    # protobuf's JSON writes uint64 as strings.
    assert entry["name"] == "sklearn-iris" and entry["version"] == "1"
    assert int(entry["inference_count"]) >= rest["inference_count"]
    assert int(entry["inference_stats"]["success"]["count"]) >= (
        rest["inference_stats"]["success"]["count"])
    missing = triton_grpc_stats(sklearn_server.grpc_target, "nope")
    assert missing["error"][0] == "StatusCode.NOT_FOUND"


def test_wire_encoding_parses_as_tritons_message() -> None:
    stats = ModelStatistics()
    stats.executed(4, 1000, 10, 20)
    doc = {"model_stats": [stats.document("m", "1")]}
    code = (
        "import sys\nfrom tritonclient.grpc import service_pb2 as s\n"
        "from google.protobuf.json_format import MessageToDict\n"
        "m = s.ModelStatisticsResponse.FromString(sys.stdin.buffer.read())\n"
        "import json; print(json.dumps(MessageToDict(m)))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                               input=encode_statistics_response(doc), timeout=60)
    parsed = json.loads(completed.stdout)
    (entry,) = parsed["modelStats"]
    assert entry["name"] == "m" and entry["executionCount"] == "1"
    assert entry["batchStats"] == [{"batchSize": "4", "computeInput": {"count": "1", "ns": "10"},
                                    "computeInfer": {"count": "1", "ns": "1000"},
                                    "computeOutput": {"count": "1", "ns": "20"}}]
