"""Test helpers: free ports and real server processes started the way `modelserve up` does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nothing listens on right now (127.0.0.1): all held bound
    while they are picked, since two `free_port()` calls may return the same port."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ServerProcess:
    """A running component: its process and where it listens."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"


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
def run_server(
    module: str,
    args: list[str],
    log_dir: Path,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Start `python -m module args` on free ports and stop it afterwards; `host` is where it
    is reached (a server told to bind another loopback address, e.g. 127.0.0.2); `env` adds
    to the environment."""
    http_port, grpc_port = free_ports(2)
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
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    try:
        wait_ready(f"http://{host}:{http_port}/v2/health/ready", process, log)
        yield ServerProcess(process, http_port, grpc_port, log, host)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Platform:
    """A running `modelserve up`: the data plane at `url` / `grpc_target`, the control plane
    at `admin_url` with the admin token `up` generated (read from its token file, under the
    platform's own `XDG_RUNTIME_DIR`: `env` gives CLI processes that directory too)."""

    process: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    log: Path
    admin_port: int = 0
    token: str = ""
    runtime_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """What an operator's client sends to the control plane."""
        return {"authorization": f"Bearer {self.token}"}

    @property
    def env(self) -> dict[str, str]:
        """The environment of a `modelserve` CLI process that finds this platform's token."""
        extra = {"XDG_RUNTIME_DIR": str(self.runtime_dir)} if self.runtime_dir else {}
        return {**os.environ, **extra, "MODELSERVE_ADMIN_URL": self.admin_url}

    def admin(self) -> httpx.Client:
        """An httpx client of the control plane, with the admin token."""
        return httpx.Client(base_url=self.admin_url, headers=self.admin_headers, timeout=60)

    def ready_replica(self, service: str) -> dict[str, Any]:
        """`service`'s first ready replica as the control plane's status details it (its
        `url`, `grpcTarget` and `processes`)."""
        with self.admin() as admin:
            doc = admin.get(f"/v1/services/{service}").json()
        for revision in doc["status"]["modelserve"]["revisions"]:
            for replica in revision["replicaDetails"]:
                if replica["ready"]:
                    return dict(replica)
        raise RuntimeError(f"{service} has no ready replica")

    def component_pids(self, service: str) -> dict[str, int]:
        """The pid of each component (`predictor`, `transformer`) of `service`'s first ready
        replica."""
        processes = self.ready_replica(service)["processes"]
        return {p["component"]: int(p["pid"]) for p in processes}


def read_admin_token(runtime_dir: Path, admin_port: int, timeout: float = 30) -> str:
    """The token `modelserve up` wrote for `admin_port` (it writes it once both doors are open)."""
    path = runtime_dir / "modelserve" / f"admin-{admin_port}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return str(json.loads(path.read_text())["token"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    raise RuntimeError(f"no admin token file at {path}")


@contextmanager
def run_platform(
    models_root: Path,
    log_dir: Path,
    files: list[Path] | None = None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Platform]:
    """`modelserve up` with the demo manifests (or `files`) on free ports (admin port too),
    with `env` added to its environment and `args` to its command line; SIGTERM afterwards.
    Unless `env` sets admin tokens, `up` generates one, read here from its token file."""
    port, grpc_port, admin_port = free_ports(3)
    # Unique, not named by the port alone: a port freed by an earlier platform in the same
    # `log_dir` comes back (it did: FileExistsError), and its token file must not be read.
    runtime_dir = Path(tempfile.mkdtemp(prefix=f"runtime-{port}-", dir=log_dir))  # mode 0700
    log = log_dir / f"modelserve_up_{runtime_dir.name.removeprefix('runtime-')}.log"
    command = [str(Path(sys.executable).parent / "modelserve"), "up", *map(str, files or []),
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", str(grpc_port),
               "--admin-port", str(admin_port), "--models-dir", str(models_root), *(args or [])]
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": str(runtime_dir),
               **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=environ, preexec_fn=preexec_fn)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log, timeout=120)
        tokens = environ.get("MODELSERVE_ADMIN_TOKENS", "")
        token = tokens.split(",")[0] if tokens else read_admin_token(runtime_dir, admin_port)
        yield Platform(process, port, grpc_port, log, admin_port, token, runtime_dir)
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


def iris_manifest(name: str, *, replicas: tuple[int, int], args: tuple[str, ...] = (),
                  annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """inferenceservices/sklearn-iris.yaml renamed, with other replica bounds and args."""
    doc = yaml.safe_load((ROOT / "inferenceservices" / "sklearn-iris.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["metadata"]["annotations"].update(annotations or {})
    predictor = doc["spec"]["predictor"]
    predictor["minReplicas"], predictor["maxReplicas"] = replicas
    container = predictor["containers"][0]
    container["args"] = [
        f"--model_name={name}" if a.startswith("--model_name") else a for a in container["args"]
    ] + list(args)
    return doc
