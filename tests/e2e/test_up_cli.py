"""`modelserve up` as a user runs it: real components behind the gateway, clean SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import ROOT, free_ports

pytestmark = pytest.mark.e2e
IRIS_ROW = {"sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8, "petal_width": 1.4}


def environment(runtime_dir: Path, admin_url: str) -> dict[str, str]:
    """The environment `up` runs in, and a CLI that finds its token file runs in."""
    env = {k: v for k, v in os.environ.items() if k != "MODELSERVE_ADMIN_TOKEN"}
    return {**env, "PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": str(runtime_dir),
            "MODELSERVE_ADMIN_URL": admin_url}


@dataclass
class Up:
    process: subprocess.Popen[str]
    port: int
    grpc_port: int
    admin_port: int
    runtime_dir: Path
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def env(self) -> dict[str, str]:
        return environment(self.runtime_dir, self.admin_url)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("modelserve ready"):
                self.ready.set()

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def up(models_root: Path, tmp_path: Path) -> Iterator[Up]:
    port, grpc_port, admin_port = free_ports(3)
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    command = [str(Path(sys.executable).parent / "modelserve"), "up", "--port", str(port),
               "--grpc-port", str(grpc_port), "--admin-port", str(admin_port),
               "--models-dir", str(models_root)]
    env = environment(runtime_dir, f"http://127.0.0.1:{admin_port}")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    running = Up(process, port, grpc_port, admin_port, runtime_dir)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        while not running.ready.wait(0.2):
            assert process.poll() is None, f"modelserve up exited:\n{running.output()}"
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(5)


def predict(up: Up, name: str, body: object) -> httpx.Response:
    return httpx.post(f"{up.url}/v1/models/{name}:predict", json=body, timeout=30)


def test_up_serves_the_demo_services_restarts_and_stops_cleanly(up: Up) -> None:
    out = up.output()
    assert re.search(rf"^sklearn-iris +{up.url}/v1/models/sklearn-iris:predict", out, re.M)
    assert "(Host: iris-classifier.default.example.com)" in out
    # The control plane's door: the dashboard's URL carries the token `up` generated, which
    # it also wrote, for this user only, where the CLI finds it.
    found = re.search(rf"^dashboard: {up.admin_url}/ui#token=(\S+)$", out, re.M)
    assert found, out
    token_file = up.runtime_dir / "modelserve" / f"admin-{up.admin_port}.json"
    assert json.loads(token_file.read_text())["token"] == found[1]
    assert token_file.stat().st_mode & 0o777 == 0o600
    services = httpx.get(f"{up.admin_url}/v1/services",
                         headers={"authorization": f"Bearer {found[1]}"}, timeout=10)
    assert services.status_code == 200
    assert httpx.get(f"{up.admin_url}/v1/services", timeout=10).status_code == 401
    status = subprocess.run([str(Path(sys.executable).parent / "modelserve"), "status",
                             "sklearn-iris"], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, env=up.env)
    assert status.returncode == 0, status.stderr
    assert "sklearn-iris  (namespace default)" in status.stdout

    response = predict(up, "sklearn-iris", {"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [1]}
    assert response.headers["x-modelserve-revision"] == "sklearn-iris-predictor-00001"
    response = predict(up, "iris-classifier", {"instances": [IRIS_ROW]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": ["versicolor"]}
    assert response.headers["x-modelserve-revision"] == "iris-classifier-transformer-00001"

    grpc = subprocess.run(
        [str(Path(sys.executable).parent / "modelserve"), "predict", "sklearn-iris",
         "--protocol", "grpc", "--grpc-url", f"127.0.0.1:{up.grpc_port}", "--data",
         json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                 "data": [6.8, 2.8, 4.8, 1.4]}]})],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert grpc.returncode == 0, grpc.stderr
    assert json.loads(grpc.stdout)["outputs"][0]["data"] == [1]

    children = psutil.Process(up.process.pid).children(recursive=True)
    assert len(children) >= 3  # two predictors and a transformer
    predictor = next(c for c in children if "--model_name=sklearn-iris" in c.cmdline())
    predictor.kill()
    deadline = time.monotonic() + 60
    while "sklearn-iris-predictor] predictor ready again" not in up.output():
        assert time.monotonic() < deadline, up.output()
        time.sleep(0.1)
    assert "predictor exited with code -9, restarting in" in up.output()
    assert predict(up, "sklearn-iris", {"instances": [[6.8, 2.8, 4.8, 1.4]]}).status_code == 200

    children = psutil.Process(up.process.pid).children(recursive=True)
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=60) == 0, up.output()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned: {alive}"
    assert not token_file.exists()  # removed when `up` stops
