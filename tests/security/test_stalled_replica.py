"""A stalled replica (SIGSTOP: its sockets accept, nothing answers) leaves rotation.

Without outlier ejection every request the gateway sends to it waits the whole request
timeout, forever. With it: after `outlier_consecutive_failures` (3) timeouts it is ejected,
every request goes to the other replica (REST and gRPC, counted by the replicas' own
`request_predict_seconds_count`), the status document and /metrics show it, and after SIGCONT
the readiness probe puts it back. Two ways:
- the gateway in-process over two real `servers.sklearn` processes, reading the routing
  table's status and the gateway's /metrics (wired as `GatewayServer` should wire them);
- the real `modelserve up` with a two-replica manifest, through its public ports only.
Timeouts are shortened through the settings; no assertion reads a clock.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from demos.iris import build_iris
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.server import GatewayServer
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from tests.support import ROOT, ServerProcess, run_platform, run_server

pytestmark = pytest.mark.e2e

NAME = "stalled-iris"
REVISION = f"{NAME}-predictor-00001"
PREDICT = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
OUTLIER_ENV = {  # a 1 s request timeout, back-offs of 1 s growing to 4 s, short probes
    "MODELSERVE_GATEWAY_REQUEST_TIMEOUT_S": "1",
    "MODELSERVE_GATEWAY_OUTLIER_CONSECUTIVE_FAILURES": "3",
    "MODELSERVE_GATEWAY_OUTLIER_BASE_EJECTION_S": "1",
    "MODELSERVE_GATEWAY_OUTLIER_MAX_EJECTION_S": "4",
    "MODELSERVE_GATEWAY_OUTLIER_PROBE_TIMEOUT_S": "0.5",
}
SETTINGS = GatewaySettings(
    request_timeout_s=1, connect_timeout_s=1, outlier_consecutive_failures=3,
    outlier_base_ejection_s=1, outlier_max_ejection_s=4, outlier_probe_timeout_s=0.5,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_iris(root)
    return root


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def predictions(client: httpx.AsyncClient, replica_url: str) -> float:
    """The predictions a replica made (REST and gRPC), from its own /metrics."""
    text = (await client.get(f"{replica_url}/metrics")).text
    found = re.search(r'^request_predict_seconds_count\{model_name="[^"]+"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def until(condition: Callable[[], Awaitable[bool]], limit: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit):
            while not await condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not reached within {limit} s: {what}") from None


async def predict(client: httpx.AsyncClient, gateway: str) -> int:
    response = await client.post(f"{gateway}/v1/models/{NAME}:predict", json=PREDICT)
    return response.status_code


async def stall_until_ejected(client: httpx.AsyncClient, gateway: str) -> list[int]:
    """Predict until three requests timed out on the stalled replica (bounded)."""
    codes: list[int] = []
    while codes.count(504) < 3:
        assert len(codes) < 40, codes
        codes.append(await predict(client, gateway))
    return codes


async def both_serve(client: httpx.AsyncClient, gateway: str, urls: list[str]) -> None:
    """Both replicas take traffic (the balancer alternates between idle replicas)."""
    async def served() -> bool:
        assert await predict(client, gateway) == 200
        try:
            return all([await predictions(client, url) > 0 for url in urls])
        except httpx.TransportError:  # a replica still starting
            return False

    await until(served, 60, "both replicas served a prediction")


async def back_in_rotation(client: httpx.AsyncClient, gateway: str, healthy: str) -> None:
    """Some of a batch of predictions reach the revived replica, not the healthy one."""
    async def shared() -> bool:
        before = await predictions(client, healthy)
        assert [await predict(client, gateway) for _ in range(10)] == [200] * 10
        return await predictions(client, healthy) - before < 10

    await until(shared, 60, "the revived replica serves again")


def grpc_infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=NAME)
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(PREDICT["instances"][0])
    return request


def gauge(text: str, name: str) -> float:
    labels = f'{{revision="{REVISION}",service="{NAME}"}}'
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


# --- the gateway in-process over two real replicas ------------------------------------------


@pytest.fixture(scope="module")
def replicas(
    models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    args = [f"--model_name={NAME}", f"--model_dir={models / 'iris'}"]
    with ExitStack() as stack:
        yield [stack.enter_context(run_server("servers.sklearn", args, logs)) for _ in range(2)]


def test_a_stalled_replica_is_ejected_then_probed_back(replicas: list[ServerProcess]) -> None:
    victim, healthy = replicas
    route = ServiceRoute(NAME, backends=tuple(
        Backend(REVISION, r.http_url, r.grpc_target) for r in replicas))

    async def scenario() -> None:
        table = RoutingTable()
        table.update(route)
        metrics = GatewayMetrics(documents=lambda: [table.status(r) for r in table.routes()],
                                 outliers=table.outliers)
        server = GatewayServer(table, SETTINGS, http_port=0, grpc_port=0, metrics=metrics)
        await server.start()
        gateway = f"http://127.0.0.1:{server.http_port}"
        channel = aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await both_serve(client, gateway, [victim.http_url, healthy.http_url])
                with stopped(victim.process.pid):
                    codes = await stall_until_ejected(client, gateway)
                    assert set(codes) <= {200, 504}  # 200s: the other replica, by chance
                    [ejected] = table.outliers.ejected(NAME)
                    assert ejected.url == victim.http_url

                    [revision] = table.status(route)["status"]["modelserve"]["revisions"]
                    assert [e["url"] for e in revision["ejected"]] == [victim.http_url]
                    text = (await client.get(f"{gateway}/metrics")).text
                    assert gauge(text, "modelserve_gateway_outlier_ejections_total") == 1
                    assert gauge(text, "modelserve_gateway_outlier_ejected_replicas") == 1

                    # Every request, REST and gRPC, goes to the other replica now.
                    before = await predictions(client, healthy.http_url)
                    assert [await predict(client, gateway) for _ in range(10)] == [200] * 10
                    for _ in range(10):
                        await stub.ModelInfer(grpc_infer_request(), timeout=5)
                    assert await predictions(client, healthy.http_url) == before + 20

                async def probed_back() -> bool:
                    return not table.outliers.ejected(NAME)

                await until(probed_back, 30, "the probe returned the replica")
                text = (await client.get(f"{gateway}/metrics")).text
                assert gauge(text, "modelserve_gateway_outlier_ejected_replicas") == 0
                assert gauge(text, "modelserve_gateway_outlier_ejections_total") == 1
                await back_in_rotation(client, gateway, healthy.http_url)
        finally:
            await channel.close()
            await server.stop(grace=1)
            await table.outliers.aclose()

    asyncio.run(scenario())


# --- the real `modelserve up` ---------------------------------------------------------------


def pair_manifest() -> dict[str, Any]:
    """inferenceservices/sklearn-iris.yaml renamed, with exactly two replicas."""
    doc: dict[str, Any] = yaml.safe_load(
        (ROOT / "inferenceservices" / "sklearn-iris.yaml").read_text())
    doc["metadata"]["name"] = NAME
    predictor = doc["spec"]["predictor"]
    predictor["minReplicas"] = predictor["maxReplicas"] = 2
    container = predictor["containers"][0]
    container["args"] = [
        f"--model_name={NAME}" if a.startswith("--model_name") else a for a in container["args"]
    ]
    return doc


def replica_urls(platform_pid: int) -> dict[int, str]:
    """pid -> http URL of the sklearn replicas `modelserve up` runs (their --http_port)."""
    found = {}
    for child in psutil.Process(platform_pid).children(recursive=True):
        argv = child.cmdline()
        if "servers.sklearn" in argv:
            [port] = [a.split("=", 1)[1] for a in argv if a.startswith("--http_port=")]
            found[child.pid] = f"http://127.0.0.1:{port}"
    return found


def test_modelserve_up_ejects_a_stalled_replica(models: Path, tmp_path: Path) -> None:
    manifest = tmp_path / f"{NAME}.yaml"
    manifest.write_text(yaml.safe_dump(pair_manifest()))
    with run_platform(models, tmp_path, [manifest], env=OUTLIER_ENV) as platform:
        urls: dict[int, str] = {}

        async def two_replicas() -> bool:
            urls.update(replica_urls(platform.process.pid))
            return len(urls) == 2

        asyncio.run(until(two_replicas, 60, "two replica processes"))
        (victim, _), (_, healthy) = sorted(urls.items())

        async def scenario() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                await both_serve(client, platform.url, list(urls.values()))
                with stopped(victim):
                    codes = await stall_until_ejected(client, platform.url)
                    assert set(codes) <= {200, 504}  # 200s: the other replica, by chance
                    before = await predictions(client, healthy)
                    assert [await predict(client, platform.url) for _ in range(20)] == [200] * 20
                    assert await predictions(client, healthy) == before + 20
                    # Shown in the control plane's status and the data plane's metrics.
                    doc = (await client.get(f"{platform.admin_url}/v1/services/{NAME}",
                                            headers=platform.admin_headers)).json()
                    ejected = [e for r in doc["status"]["modelserve"]["revisions"]
                               for e in r.get("ejected", [])]
                    assert [e["url"] for e in ejected] == [urls[victim]]
                    text = (await client.get(f"{platform.url}/metrics")).text
                    labels = f'revision="{NAME}-predictor-00001",service="{NAME}"'
                    assert f"modelserve_gateway_outlier_ejected_replicas{{{labels}}} 1.0" in text
                await back_in_rotation(client, platform.url, healthy)

        asyncio.run(scenario())
