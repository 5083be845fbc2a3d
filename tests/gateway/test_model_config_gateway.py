"""The model configuration extension through the gateway, in front of a real sklearn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton_http

from demos.triton import DIGITS_MODEL
from gateway.dataplane.app import _match
from gateway.dataplane.server import GatewayServer
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.triton.install import TritonInstall
from servers.triton.tritonserver import TritonServer
from tests.gateway.conftest import SKLEARN_REVISION, LoopThread
from tests.servers.test_model_config import triton_grpc_config
from tests.support import ServerProcess

TRITON_REVISION = "triton-digits-predictor-00001"


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/v2/models/m/config", ("m", "v2", False)),
        ("GET", "/v2/models/m/versions/1/config", ("m", "v2", False)),
        ("POST", "/v2/models/m/config", None),
        ("GET", "/v2/models/m/config/x", None),
        ("GET", "/v2/models//config", None),
    ],
)
def test_fast_path_matches_config_routes(
    method: str, path: str, expected: tuple[str, str, bool] | None
) -> None:
    assert _match(method, path) == expected


def test_config_through_gateway_is_the_servers(
    sklearn_gateway: GatewayServer, sklearn_server: ServerProcess
) -> None:
    direct = triton_http.InferenceServerClient(sklearn_server.http_url.removeprefix("http://"))
    proxied = triton_http.InferenceServerClient(f"127.0.0.1:{sklearn_gateway.http_port}")
    config = proxied.get_model_config("sklearn-iris")
    assert config == direct.get_model_config("sklearn-iris")
    assert config["max_batch_size"] == 32 and config["dynamic_batching"] == {}
    assert proxied.get_model_config("sklearn-iris", model_version="1") == config


def test_config_answer_names_the_revision(sklearn_gateway: GatewayServer) -> None:
    base = f"http://127.0.0.1:{sklearn_gateway.http_port}"
    for method in ("GET", "HEAD"):  # HEAD takes FastAPI's route, not the fast path
        response = httpx.request(method, f"{base}/v2/models/sklearn-iris/config")
        assert response.status_code == 200, (method, response.text)
        assert response.headers["x-modelserve-revision"] == SKLEARN_REVISION


def test_unknown_model_config_is_404(sklearn_gateway: GatewayServer) -> None:
    proxied = triton_http.InferenceServerClient(f"127.0.0.1:{sklearn_gateway.http_port}")
    with pytest.raises(triton_http.InferenceServerException) as failed:
        proxied.get_model_config("nope")
    assert failed.value.status() == "404"
    base = f"http://127.0.0.1:{sklearn_gateway.http_port}"
    version = httpx.get(f"{base}/v2/models/sklearn-iris/versions/7/config")
    assert version.status_code == 404 and "7" in version.json()["error"]


def test_grpc_model_config_through_gateway(
    sklearn_gateway: GatewayServer, sklearn_server: ServerProcess
) -> None:
    proxied = triton_grpc_config(f"127.0.0.1:{sklearn_gateway.grpc_port}", "sklearn-iris")
    assert proxied == triton_grpc_config(sklearn_server.grpc_target, "sklearn-iris")
    assert proxied["config"]["name"] == "sklearn-iris"
    missing = triton_grpc_config(f"127.0.0.1:{sklearn_gateway.grpc_port}", "nope")
    assert missing["error"][0] == "StatusCode.NOT_FOUND"


# -- a Triton-backed service: the tritonserver's own configuration, passed through --------------
@pytest.fixture(scope="module")
def triton_gateway(
    loop_thread: LoopThread, triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> Iterator[tuple[GatewayServer, TritonServer]]:
    with (logs / "tritonserver-config.log").open("wb") as log:
        with TritonServer(triton_repository, install=triton_install, log=log) as triton:
            table = RoutingTable()
            backend = Backend(TRITON_REVISION, triton.http_url, triton.grpc_target)
            table.update(ServiceRoute(DIGITS_MODEL, backends=(backend,)))
            server = GatewayServer(table, GatewaySettings(), http_port=0, grpc_port=0)
            loop_thread.run(server.start())
            yield server, triton
            loop_thread.run(server.stop(grace=1))


def test_triton_config_is_tritons_own(triton_gateway: tuple[GatewayServer, TritonServer]) -> None:
    gateway, triton = triton_gateway
    direct = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    proxied = triton_http.InferenceServerClient(f"127.0.0.1:{gateway.http_port}")
    config = proxied.get_model_config(DIGITS_MODEL)
    assert config == direct.get_model_config(DIGITS_MODEL)
    assert config["name"] == DIGITS_MODEL and config["max_batch_size"] > 0
    assert "dynamic_batching" in config and "instance_group" in config  # Triton's, not ours
    grpc_config = triton_grpc_config(f"127.0.0.1:{gateway.grpc_port}", DIGITS_MODEL)
    assert grpc_config == triton_grpc_config(triton.grpc_target, DIGITS_MODEL)
    assert grpc_config["config"]["name"] == DIGITS_MODEL
