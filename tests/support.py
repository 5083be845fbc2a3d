"""Test helpers: free ports and real server processes started the way `modelserve up` does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running component: its process and where it listens."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the process's output if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


@contextmanager
def run_server(module: str, args: list[str], log_dir: Path) -> Iterator[ServerProcess]:
    """Start `python -m module args` on free ports and stop it afterwards."""
    http_port, grpc_port = free_port(), free_port()
    log = log_dir / f"{module.replace('.', '_')}_{http_port}.log"
    command = [
        sys.executable,
        "-m",
        module,
        *args,
        f"--http_port={http_port}",
        f"--grpc_port={grpc_port}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_ready(f"http://127.0.0.1:{http_port}/v2/health/ready", process, log)
        yield ServerProcess(process, http_port, grpc_port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Platform:
    """A running `modelserve up`."""

    process: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@contextmanager
def run_platform(
    models_root: Path,
    log_dir: Path,
    files: list[Path] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Platform]:
    """`modelserve up` with the demo manifests (or `files`) on free ports, with `env` added to
    its environment; SIGTERM afterwards."""
    port, grpc_port = free_port(), free_port()
    log = log_dir / f"modelserve_up_{port}.log"
    command = [str(Path(sys.executable).parent / "modelserve"), "up", *map(str, files or []),
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
               "--models-dir", str(models_root)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log, timeout=120)
        yield Platform(process, port, grpc_port, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# tritonclient.grpc cannot be imported in a process that imported kserve (both register the
# inference.* protobufs, kserve/kserve#3099), so it runs in a process of its own.
_TRITON_GRPC_INFER = """
import json, sys
import numpy as np
import tritonclient.grpc as g
target, model, doc = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = g.InferenceServerClient(target)
tensors = []
for name, (datatype, dtype, values) in doc["inputs"].items():
    array = np.array(values, dtype=dtype)
    tensor = g.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    tensors.append(tensor)
outputs = [g.InferRequestedOutput(n) for n in doc["outputs"]] or None
try:
    result = client.infer(model, tensors, outputs=outputs)
except g.InferenceServerException as exc:
    print(json.dumps({"error": [exc.status(), exc.message()]}))
else:
    names = doc["outputs"] or [o["name"] for o in result.get_response(as_json=True)["outputs"]]
    print(json.dumps({"outputs": {n: result.as_numpy(n).tolist() for n in names}}))
"""


def triton_grpc_infer(
    target: str,
    model: str,
    inputs: dict[str, tuple[str, np.ndarray]],
    outputs: list[str] | None = None,
) -> dict[str, object]:
    """One `tritonclient.grpc` infer call, in its own process: `{"outputs": {name: list}}`, or
    `{"error": [status, message]}`. `inputs` maps names to (v2 datatype, array)."""
    doc = {
        "inputs": {n: (dt, str(a.dtype), a.tolist()) for n, (dt, a) in inputs.items()},
        "outputs": outputs or [],
    }
    completed = subprocess.run(
        [sys.executable, "-c", _TRITON_GRPC_INFER, target, model, json.dumps(doc)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"tritonclient.grpc failed:\n{completed.stderr}")
    result: dict[str, object] = json.loads(completed.stdout)
    return result
