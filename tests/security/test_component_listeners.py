"""Components listen on loopback unless told otherwise: real servers, their sockets read with
psutil (the process and every child: REST workers, tritonserver), never 0.0.0.0 or [::].

`MODELSERVE_BIND_ADDRESS` (what the images set to 0.0.0.0) moves every listener of a component:
shown here with another loopback address, 127.0.0.2, so that no test listens beyond loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from servers.triton.install import TritonInstall
from tests.support import ServerProcess, free_port, run_server

LOOPBACK = {"127.0.0.1", "::1"}
MOVED = "127.0.0.2"  # another loopback address (Linux routes all of 127.0.0.0/8 to lo)


def _plain(address: str) -> str:
    # gRPC binds 127.0.0.1 on a dual-stack IPv6 socket: psutil shows ::ffff:127.0.0.1.
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of `pid` and its descendants (IPv4-mapped
    IPv6 addresses as the IPv4 address they map)."""
    root = psutil.Process(pid)
    found = set()
    for process in [root, *root.children(recursive=True)]:
        # psutil 6 renamed connections() to net_connections().
        connections: Any = getattr(process, "net_connections", process.connections)
        try:
            sockets = connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {
            (_plain(c.laddr.ip), c.laddr.port) for c in sockets if c.status == psutil.CONN_LISTEN
        }
    return found


def assert_loopback_only(server: ServerProcess, *ports: int) -> None:
    sockets = listening(server.process.pid)
    # Not vacuous: the ports the component was given are among them.
    assert {server.http_port, server.grpc_port, *ports} <= {port for _, port in sockets}, sockets
    assert {address for address, _ in sockets} <= LOOPBACK, sockets


@pytest.fixture(scope="module")
def predictor(iris_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    # Two REST workers: KServe's multi-process path binds its socket in the parent.
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}", "--workers=2"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


def test_sklearn_predictor_listens_on_loopback_only(predictor: ServerProcess) -> None:
    assert len(psutil.Process(predictor.process.pid).children()) >= 2  # the REST workers
    assert_loopback_only(predictor)


def test_transformer_listens_on_loopback_only(
    predictor: ServerProcess, iris_dir: Path, logs: Path
) -> None:
    args = [
        "--model_name=sklearn-iris",
        f"--model_dir={iris_dir}",
        f"--predictor_host={predictor.grpc_target}",
        "--predictor_protocol=grpc-v2",
    ]
    with run_server("servers.transformers.tabular", args, logs) as transformer:
        assert_loopback_only(transformer)


def test_tritonserver_listens_on_loopback_only(
    triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> None:
    # Metrics on too, so that Triton's third listener is checked as well.
    metrics_port = free_port()
    args = [f"--model_dir={triton_repository}", f"--metrics_port={metrics_port}"]
    with run_server("servers.triton.tritonserver", args, logs) as component:
        tritons = psutil.Process(component.process.pid).children(recursive=True)
        assert any(p.name() == "tritonserver" for p in tritons)
        assert_loopback_only(component, metrics_port)


def test_bind_address_from_the_environment_moves_rest_and_grpc(
    iris_dir: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the images set (to 0.0.0.0: in a pod the port must be reachable from outside).
    monkeypatch.setenv("MODELSERVE_BIND_ADDRESS", MOVED)
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}"]
    with run_server("servers.sklearn", args, logs, host=MOVED) as server:
        sockets = listening(server.process.pid)
    assert {server.http_port, server.grpc_port} <= {port for _, port in sockets}, sockets
    # Every listener moved: none left on 127.0.0.1.
    assert {address for address, _ in sockets} == {MOVED}, sockets


def test_bind_address_flag_overrides_the_environment(
    iris_dir: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSERVE_BIND_ADDRESS", MOVED)
    args = ["--model_name=sklearn-iris", f"--model_dir={iris_dir}", "--bind_address=127.0.0.1"]
    with run_server("servers.sklearn", args, logs) as server:
        assert_loopback_only(server)
