"""`modelserve up` started once for the e2e tests: every demo service behind the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, wait_ready


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


@pytest.fixture(scope="session")
def platform(models_root: Path, logs: Path) -> Iterator[Platform]:
    port, grpc_port = free_port(), free_port()
    log = logs / "modelserve_up.log"
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
