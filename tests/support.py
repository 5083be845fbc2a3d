"""Test helpers: free ports and real server processes started the way `modelserve up` does."""

from __future__ import annotations

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
def run_platform(models_root: Path, log_dir: Path) -> Iterator[Platform]:
    """`modelserve up` with the demo manifests on free ports; stopped with SIGTERM afterwards."""
    port, grpc_port = free_port(), free_port()
    log = log_dir / "modelserve_up.log"
    command = [str(Path(sys.executable).parent / "modelserve"), "up", "--host", "127.0.0.1",
               "--port", str(port), "--grpc-port", str(grpc_port),
               "--models-dir", str(models_root)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
