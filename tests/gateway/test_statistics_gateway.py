"""Triton's statistics extension through the gateway: every replica's counters, summed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as triton_http

from gateway.dataplane.server import GatewayServer
from gateway.dataplane.statistics import merge_statistics
from gateway.routing import Backend, RoutingTable, ServiceRoute, Traffic
from gateway.settings import GatewaySettings
from tests.gateway.conftest import LoopThread
from tests.support import ROOT, ServerProcess, run_server

REVISION = "sklearn-iris-predictor-00001"
V2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                  "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}


@pytest.fixture(scope="module")
def second_replica(iris_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


@pytest.fixture(scope="module")
def two_replicas(
    loop_thread: LoopThread, sklearn_server: ServerProcess, second_replica: ServerProcess
) -> Iterator[GatewayServer]:
    table = RoutingTable()
    backends = tuple(Backend(REVISION, s.http_url, s.grpc_target)
                     for s in (sklearn_server, second_replica))
    asleep = Backend("sklearn-iris-predictor-00002", "http://127.0.0.1:9", None, ready=False)
    table.update(ServiceRoute("sklearn-iris", backends=(*backends, asleep),
                              traffic=(Traffic(REVISION, 100, latest=True),)))
    table.update(ServiceRoute("scaled-to-zero", backends=(), message="scaled to zero",
                              traffic=(Traffic("scaled-to-zero-predictor-00001", 100,
                                               activate=True),)))
    server = GatewayServer(table, GatewaySettings(), http_port=0, grpc_port=0)
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop(grace=1))


def _entry(url: str) -> dict[str, Any]:
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        doc: dict[str, Any] = client.get_inference_statistics("sklearn-iris")
    finally:
        client.close()
    (entry,) = doc["model_stats"]
    return entry


def test_rest_statistics_are_the_sum_of_the_replicas(
    two_replicas: GatewayServer, sklearn_server: ServerProcess, second_replica: ServerProcess
) -> None:
    gateway = f"http://127.0.0.1:{two_replicas.http_port}"
    # Idle replicas are picked at random: 6 requests all went to one, once in ~32 runs (a
    # flake). Send until both have taken some (each more request halves the odds).
    for sent in range(1, 201):
        assert httpx.post(f"{gateway}/v2/models/sklearn-iris/infer", json=V2).status_code == 200
        if sent >= 6 and _entry(second_replica.http_url)["inference_count"] > 0:
            break
    first, second = _entry(sklearn_server.http_url), _entry(second_replica.http_url)
    summed = _entry(gateway)
    assert first["inference_count"] > 0 and second["inference_count"] > 0
    assert summed["inference_count"] == first["inference_count"] + second["inference_count"]
    assert summed["execution_count"] == first["execution_count"] + second["execution_count"]
    for name in ("success", "fail", "queue", "compute_input", "compute_infer"):
        for unit in ("count", "ns"):
            assert summed["inference_stats"][name][unit] == (
                first["inference_stats"][name][unit] + second["inference_stats"][name][unit])
    assert summed["last_inference"] == max(first["last_inference"], second["last_inference"])
    by_size = {b["batch_size"]: b["compute_infer"]["count"] for b in summed["batch_stats"]}
    assert by_size[2] == sum(
        b["compute_infer"]["count"] for s in (first, second) for b in s["batch_stats"]
        if b["batch_size"] == 2
    )


def test_unknown_model_version_and_services_at_zero(two_replicas: GatewayServer) -> None:
    gateway = f"http://127.0.0.1:{two_replicas.http_port}/v2/models"
    assert httpx.get(f"{gateway}/nope/stats").status_code == 404
    version = httpx.get(f"{gateway}/sklearn-iris/versions/9/stats")
    assert version.status_code == 404 and "'9'" in version.json()["error"]
    asleep = httpx.get(f"{gateway}/scaled-to-zero/stats")
    assert asleep.status_code == 503 and "no ready replica" in asleep.json()["error"]
    every = httpx.get(f"{gateway}/stats")
    assert every.status_code == 200
    assert [s["name"] for s in every.json()["model_stats"]] == ["sklearn-iris"]


_GRPC_STATS = """
import json, sys
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
out = {}
for name in sys.argv[2:]:
    try:
        out[name] = client.get_inference_statistics(name, as_json=True)
    except g.InferenceServerException as exc:
        out[name] = {"error": [exc.status(), exc.message()]}
print(json.dumps(out))
"""


def test_grpc_statistics_say_what_rest_says(two_replicas: GatewayServer) -> None:
    target = f"127.0.0.1:{two_replicas.grpc_port}"
    rest = _entry(f"http://127.0.0.1:{two_replicas.http_port}")
    completed = subprocess.run(
        [sys.executable, "-c", _GRPC_STATS, target, "sklearn-iris", "nope", "scaled-to-zero"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )
    answers = json.loads(completed.stdout)
    (entry,) = answers["sklearn-iris"]["model_stats"]
    assert int(entry["inference_count"]) == rest["inference_count"]
    assert int(entry["inference_stats"]["success"]["count"]) == (
        rest["inference_stats"]["success"]["count"])
    assert answers["nope"]["error"][0] == "StatusCode.NOT_FOUND"
    assert answers["scaled-to-zero"]["error"][0] == "StatusCode.UNAVAILABLE"


def test_merge_adds_counters_per_model_version_and_batch_size() -> None:
    def replica(count: int, last: int, batch: int) -> dict[str, Any]:
        duration = {"count": count, "ns": count * 10}
        return {"model_stats": [{
            "name": "m", "version": "1", "last_inference": last, "inference_count": count,
            "execution_count": count,
            "inference_stats": {"success": duration, "fail": {"count": 0, "ns": 0}},
            "batch_stats": [{"batch_size": batch, "compute_infer": duration}],
            "memory_usage": [],
        }]}

    (merged,) = merge_statistics([replica(2, 100, 1), replica(3, 50, 1),
                                  replica(1, 70, 4)])["model_stats"]
    assert merged["inference_count"] == 6 and merged["last_inference"] == 100
    assert merged["inference_stats"]["success"] == {"count": 6, "ns": 60}
    assert merged["batch_stats"] == [
        {"batch_size": 1, "compute_infer": {"count": 5, "ns": 50}},
        {"batch_size": 4, "compute_infer": {"count": 1, "ns": 10}},
    ]
