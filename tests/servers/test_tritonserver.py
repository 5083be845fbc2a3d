"""The wheel's real tritonserver, started by our code: answers, failures, stopping.

Reference answers come from ONNX Runtime in this process on the same ONNX file Triton's
python-backend model runs. `tritonclient.grpc` runs in a subprocess (it cannot share a process
with kserve). A missing `.venv-triton` fails these tests, saying to run `make install`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.http as triton_http
from sklearn.datasets import load_digits

from demos.triton import DIGITS_MODEL
from servers.triton import install as install_module
from servers.triton import tritonserver as ts
from servers.triton.install import TritonInstall, TritonNotInstalled, locate
from servers.triton.repository import RepositoryError
from servers.triton.tritonserver import PortInUse, TritonServer, TritonStartError
from tests.support import ROOT, run_server, triton_grpc_infer, wait_ready


@pytest.fixture(scope="module")
def triton(
    triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> Iterator[TritonServer]:
    with (logs / "tritonserver.log").open("wb") as log:
        server = TritonServer(triton_repository, install=triton_install, log=log)
        with server:
            yield server


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_digits().images[:16].astype(np.float32)


@pytest.fixture(scope="module")
def reference(triton_repository: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """What ONNX Runtime answers for `images` with the ONNX file Triton serves."""
    import onnxruntime as ort

    onnx_file = triton_repository / DIGITS_MODEL / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    probabilities, digit = session.run(["probabilities", "digit"], {"images": images})
    return {"probabilities": probabilities, "digit": digit}


def test_onnx_model_knows_the_digits(reference: dict[str, np.ndarray]) -> None:
    assert reference["digit"].tolist() == load_digits().target[:16].tolist()


def test_triton_is_ready_fast_and_serves_the_digits_model(triton: TritonServer) -> None:
    assert triton.ready_after_s is not None and triton.ready_after_s < 30
    doc = httpx.get(f"{triton.http_url}/v2/models/{DIGITS_MODEL}", timeout=5).json()
    assert doc["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]),
        "digit": ("INT64", [-1, 1]),  # the model's [N], declared dims [1] + reshape []
    }
    assert httpx.get(f"{triton.http_url}/v2/health/ready", timeout=5).status_code == 200


def test_tritonclient_http_gets_what_onnxruntime_gets(
    triton: TritonServer, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    client = triton_http.InferenceServerClient(triton.http_target, network_timeout=30)
    tensor = triton_http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    result = client.infer(DIGITS_MODEL, [tensor])
    np.testing.assert_allclose(result.as_numpy("probabilities"), reference["probabilities"],
                               rtol=1e-5, atol=1e-6)
    assert result.as_numpy("digit").shape == (16, 1)
    assert result.as_numpy("digit").ravel().tolist() == reference["digit"].tolist()


def test_tritonclient_grpc_gets_what_onnxruntime_gets(
    triton: TritonServer, images: np.ndarray, reference: dict[str, np.ndarray]
) -> None:
    answer = triton_grpc_infer(triton.grpc_target, DIGITS_MODEL, {"images": ("FP32", images)})
    outputs = answer["outputs"]
    assert isinstance(outputs, dict), answer
    np.testing.assert_allclose(np.array(outputs["probabilities"]), reference["probabilities"],
                               rtol=1e-5, atol=1e-6)
    assert np.array(outputs["digit"]).ravel().tolist() == reference["digit"].tolist()


def test_triton_refuses_a_wrong_datatype_with_400(triton: TritonServer) -> None:
    body = {"inputs": [{"name": "images", "datatype": "FP64", "shape": [1, 8, 8],
                        "data": [0.0] * 64}]}
    response = httpx.post(f"{triton.http_url}/v2/models/{DIGITS_MODEL}/infer", json=body,
                          timeout=10)
    assert response.status_code == 400
    assert "expects 'FP32'" in response.json()["error"]


# -- finding Triton ---------------------------------------------------------------------------
def test_a_missing_triton_venv_says_to_run_make_install(tmp_path: Path) -> None:
    with pytest.raises(TritonNotInstalled, match="make install"):
        locate(tmp_path / "no-venv")
    with pytest.raises(TritonNotInstalled, match="holds no tritonserver"):
        locate(tmp_path)


def test_triton_home_may_name_the_venv_or_its_server_dir(
    triton_install: TritonInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(install_module.ENV_HOME, str(triton_install.server_dir))
    found = locate()
    assert found.server_dir == triton_install.server_dir
    assert found.venv == triton_install.venv
    env = found.environment({"PATH": "/usr/bin", "PYTHONHOME": "/elsewhere"})
    assert env["PATH"].split(":")[0] == str(found.venv / "bin")
    assert "PYTHONHOME" not in env
    libraries = env["LD_LIBRARY_PATH"].split(":")
    assert libraries[0] == str(found.python_libdir)  # the stub's libpython, before the system's
    assert str(found.libs_dir) in libraries


def test_a_read_only_install_gets_its_backends_copied(
    triton_install: TritonInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel_backends = triton_install.server_dir / "backends"
    install_stub = install_module._install_stub

    def read_only(source: Path, target: Path) -> None:
        if wheel_backends in target.parents:
            raise PermissionError(13, "Read-only file system", str(target))
        install_stub(source, target)

    monkeypatch.setattr(install_module, "_install_stub", read_only)
    copy = triton_install.backend_directory(cache_dir=tmp_path)
    assert copy.is_relative_to(tmp_path)
    assert (copy / "python" / "libtriton_python.so").is_file()
    assert (copy / "python" / "triton_python_backend_stub").stat().st_mode & 0o111


# -- bad repositories and ports: clear errors, fast ------------------------------------------
def _bad_model(root: Path) -> Path:
    model = root / "broken" / "1"
    model.mkdir(parents=True)
    (model / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('this model refuses to load')\n"
    )
    (root / "broken" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    return root


def _bad_repository(kind: str, root: Path) -> Path:
    if kind == "missing":
        return root / "missing"
    if kind == "no-config":
        (root / "digits" / "1").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("kind", "message"),
    [("missing", "does not exist"), ("empty", "holds no models"),
     ("no-config", "has no config.pbtxt")],
)
def test_a_bad_repository_is_refused_before_triton_starts(
    tmp_path: Path, triton_install: TritonInstall, kind: str, message: str
) -> None:
    repository = _bad_repository(kind, tmp_path)
    started = time.monotonic()
    with pytest.raises(RepositoryError, match=message):
        TritonServer(repository, install=triton_install).start()
    assert time.monotonic() - started < 2


def test_a_model_that_fails_to_load_reports_tritons_reason(
    tmp_path: Path, triton_install: TritonInstall
) -> None:
    server = TritonServer(_bad_model(tmp_path), install=triton_install, ready_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(TritonStartError, match="this model refuses to load") as failure:
        server.start()
    assert time.monotonic() - started < 30
    assert failure.value.returncode not in (None, 0)
    assert "broken" in str(failure.value)
    assert server.process is not None and server.process.poll() is not None


def test_a_taken_port_is_refused_before_triton_starts(
    triton_repository: Path, triton_install: TritonInstall
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(PortInUse, match=f"HTTP port {port} .* already in use"):
            TritonServer(triton_repository, http_port=port, install=triton_install).start()
        assert time.monotonic() - started < 2


def test_a_port_taken_under_tritons_feet_is_reported_from_its_log(
    triton_repository: Path, triton_install: TritonInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port is taken between our check and Triton's bind: Triton's own error tells.
    monkeypatch.setattr(ts, "port_in_use", lambda host, port: False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TritonServer(triton_repository, grpc_port=port, install=triton_install)
        with pytest.raises(PortInUse, match="already in use"):
            server.start()


# -- the component `modelserve up` runs -------------------------------------------------------
def test_component_serves_the_repository_models_and_stops_with_its_triton(
    triton_repository: Path, triton_install: TritonInstall, logs: Path
) -> None:
    # As KServe's Triton runtime: its args name no model, the repository's names are served.
    args = [f"--model_dir={triton_repository}", "--host=127.0.0.1"]
    with run_server("servers.triton.tritonserver", args, logs) as component:
        doc = httpx.get(f"{component.http_url}/v2/models/triton-digits", timeout=5).json()
        assert doc["name"] == "triton-digits"
        tritons = psutil.Process(component.process.pid).children(recursive=True)
        assert any(p.name() == "tritonserver" for p in tritons)
        component.process.terminate()
        assert component.process.wait(timeout=20) == 0
        gone, alive = psutil.wait_procs(tritons, timeout=10)
        assert not alive, alive


def test_component_with_a_bad_repository_exits_at_once_with_the_reason(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "servers.triton.tritonserver", f"--model_dir={tmp_path}",
         "--http_port=0", "--grpc_port=0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert completed.returncode == 1
    assert "holds no models" in completed.stderr


# -- Triton dies under a running predictor ----------------------------------------------------
def test_triton_killed_mid_run_gives_503_not_a_hang(
    triton_repository: Path, triton_install: TritonInstall, images: np.ndarray, logs: Path
) -> None:
    with (logs / "tritonserver-killed.log").open("wb") as log:
        server = TritonServer(triton_repository, install=triton_install, log=log).start()
    try:
        args = ["--model_name=triton-digits", f"--triton_host={server.grpc_target}",
                "--triton_timeout_s=10"]
        with run_server("servers.triton", args, logs) as predictor:
            url = f"{predictor.http_url}/v1/models/triton-digits:predict"
            body = {"instances": images[:2].tolist()}
            assert httpx.post(url, json=body, timeout=10).status_code == 200
            assert server.process is not None
            server.process.kill()
            server.process.wait(timeout=10)
            started = time.monotonic()
            response = httpx.post(url, json=body, timeout=10)
            assert response.status_code == 503, response.text
            assert "unavailable" in response.json()["error"]
            assert time.monotonic() - started < 5
            ready = httpx.get(f"{predictor.http_url}/v2/models/triton-digits/ready", timeout=10)
            assert ready.status_code == 503
            wait_ready(f"{predictor.http_url}/v2/health/live", predictor.process, predictor.log)
    finally:
        server.stop()
