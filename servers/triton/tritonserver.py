"""Start, watch and stop the wheel's `tritonserver`; `python -m servers.triton.tritonserver`.

`TritonServer` checks the model repository and the ports before Triton starts (Triton itself
starts on an empty repository, and gRPC's SO_REUSEPORT can let it share a port another
server holds), then waits for `/v2/health/ready` with a deadline. When Triton exits first,
the error says why in Triton's own words: the lines of its log that report a model that failed
to load or a port it could not bind. `stop` sends SIGTERM, then SIGKILL.

As a component (the `kserve-tritonserver` runtime of `modelserve up`) it takes KServe-style
flags, the ones the local planner rewrites:

    python -m servers.triton.tritonserver --model_dir=REPO --http_port=P --grpc_port=Q \\
        [--metrics_port=M] [--bind_address=ADDR] [--triton_home=VENV] \\
        [--log-verbose=1 ...]

and runs Triton in the foreground: its output is ours, SIGTERM/SIGINT are forwarded, and the
exit status is Triton's, so the supervisor restarts it like any component. Triton's HTTP, gRPC
and metrics listen on `--bind_address` (`--host`; default `$MODELSERVE_BIND_ADDRESS`, else
127.0.0.1), as every component's do. Models are served
under their repository names, as KServe's Triton runtime does (its args name no model); flags
with dashes are Triton's own and are passed to it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from servers.limits import BIND_ADDRESS_ENV
from servers.settings import bind_address, component_settings
from servers.triton.install import TritonInstall, TritonNotInstalled, locate
from servers.triton.repository import RepositoryError, check_repository

__all__ = [
    "PortInUse",
    "RepositoryError",
    "TritonNotInstalled",
    "TritonServer",
    "TritonStartError",
    "free_port",
    "main",
    "port_in_use",
]

PR_SET_PDEATHSIG = 1
# Lines of Triton's log that say why it stopped: glog errors, the model table's failed rows,
# and its final "error: creating server: ...".
_ERROR_LINE = re.compile(r"^(E\d{4} |error:|\|.*\b(UNAVAILABLE|UNKNOWN|INTERNAL)\b)")
# Printed on every machine without a GPU: not a reason.
_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")
_PORT_ERROR = re.compile(r"failed to start (HTTP|GRPC|metrics) service|already in use", re.I)


class TritonStartError(RuntimeError):
    """Triton exited, or did not become ready in time; the message holds its reasons."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class PortInUse(TritonStartError):
    """A port Triton was to listen on is taken."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (or holds) `host:port`.

    SO_REUSEADDR lets the probe bind over TIME_WAIT leftovers (a Triton restarted on its old
    ports), but not over a listening socket.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn: Triton gets SIGKILL when the process that started it dies (Linux).

    libc is loaded here, in the parent: the child between fork and exec must not dlopen
    (another thread may have held the loader's lock at the fork).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


class _OutputPump(threading.Thread):
    """Copies Triton's output to a sink and keeps its last lines for error messages."""

    def __init__(self, source: IO[bytes], sink: IO[bytes] | None, keep: int = 400) -> None:
        super().__init__(name="tritonserver-output", daemon=True)
        self.source = source
        self.sink = sink
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)

    def run(self) -> None:
        for raw in iter(self.source.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            if self.sink is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.sink.write(raw)
                    self.sink.flush()
        self.source.close()

    def reasons(self) -> str:
        """Triton's own error lines, or the end of its output when it printed none."""
        found = list(dict.fromkeys(
            line.strip() for line in self.lines
            if _ERROR_LINE.match(line) and not any(n in line for n in _NOISE)
        ))
        chosen = found[-12:] if found else list(self.lines)[-20:]
        return "\n".join(chosen) or "(no output)"


class TritonServer:
    """One `tritonserver` process serving `repository` on `host` (ports 0: free ones).

    `metrics_port` None turns Triton's metrics off (0: a free port). Triton's output goes to
    `log` (a file, our stdout) as it comes; `ready_timeout_s` bounds the wait for readiness
    and `exit_timeout_s` how long Triton drains in-flight requests when stopped.
    """

    def __init__(
        self,
        repository: Path,
        *,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        install: TritonInstall | None = None,
        log: IO[bytes] | None = None,
        ready_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        extra_args: Sequence[str] = (),
        new_session: bool = True,
    ) -> None:
        self.repository = repository
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.install = install
        self.log = log
        self.ready_timeout_s = ready_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = list(extra_args)
        self.new_session = new_session
        self.models: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None
        self._pump: _OutputPump | None = None

    # -- where it listens ------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def http_url(self) -> str:
        """Base URL of Triton's HTTP endpoint."""
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def http_target(self) -> str:
        """HOST:PORT of the HTTP endpoint (what `tritonclient.http` takes)."""
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """HOST:PORT of the gRPC endpoint."""
        return f"{self._client_host}:{self.grpc_port}"

    # -- lifecycle -------------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        if self.http_port == 0:
            self.http_port = free_port(self._client_host)
        if self.grpc_port == 0:
            self.grpc_port = free_port(self._client_host)
        if self.metrics_port == 0:
            self.metrics_port = free_port(self._client_host)
        ports = {"HTTP": self.http_port, "gRPC": self.grpc_port}
        if self.metrics_port is not None:
            ports["metrics"] = self.metrics_port
        if len(set(ports.values())) != len(ports):
            raise PortInUse(f"Triton's ports must differ: {ports}")
        for what, port in ports.items():
            if port_in_use(self.host, port):
                raise PortInUse(f"{what} port {port} on {self.host} is already in use")
        return ports

    def argv(self, backend_directory: Path) -> list[str]:
        """The `tritonserver` command line."""
        assert self.install is not None
        argv = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            # CPU only here: no pinned host memory to reserve for GPU copies.
            "--pinned-memory-pool-byte-size=0",
        ]
        if self.metrics_port is None:
            argv.append("--allow-metrics=false")
        else:
            argv += [f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                     "--allow-gpu-metrics=false"]
        return [*argv, *self.extra_args]

    def start(self, wait: bool = True) -> TritonServer:
        """Check, launch and (with `wait`) wait until Triton is ready; errors say why not."""
        if self.process is not None:
            raise RuntimeError("this TritonServer was already started")
        self.models = check_repository(self.repository)
        self.install = self.install or locate()
        backends = self.install.backend_directory()
        self._ports()
        started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv(backends),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.install.environment(),
            start_new_session=self.new_session,
            preexec_fn=_die_with_parent(),
        )
        assert self.process.stdout is not None
        self._pump = _OutputPump(self.process.stdout, self.log)
        self._pump.start()
        if wait:
            self.wait_ready()
            self.ready_after_s = time.monotonic() - started
        return self

    def reasons(self) -> str:
        """What Triton printed about its failures so far."""
        return self._pump.reasons() if self._pump else "(not started)"

    def _exited(self, code: int) -> TritonStartError:
        if self._pump is not None:
            self._pump.join(timeout=5)  # the last lines name the reason
        reasons = self.reasons()
        if _PORT_ERROR.search(reasons):
            return PortInUse(
                f"tritonserver could not listen on its ports (HTTP {self.http_port}, gRPC "
                f"{self.grpc_port}):\n{reasons}",
                code,
            )
        return TritonStartError(
            f"tritonserver exited with code {code} before it was ready "
            f"(repository {self.repository}):\n{reasons}",
            code,
        )

    def wait_ready(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Poll `/v2/health/ready` until 200; raise if Triton exits or the deadline passes."""
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise self._exited(code)
                if stopping():
                    return
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise TritonStartError(
                        f"tritonserver not ready at {url} after {self.ready_timeout_s:g} s:\n"
                        f"{self.reasons()}"
                    )
                time.sleep(0.1)

    def terminate(self) -> None:
        """Ask Triton to stop (SIGTERM) without waiting."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for Triton to exit; its exit status."""
        assert self.process is not None
        code = self.process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        return code

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL (of its process group too) after `grace_s`; the exit code."""
        process = self.process
        if process is None:
            return None
        grace = self.exit_timeout_s + 5.0 if grace_s is None else grace_s
        self.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self.new_session:  # its python-backend stubs, should any outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._pump is not None:
            self._pump.join(timeout=5)
        return process.returncode

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the component ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m servers.triton.tritonserver",
        description="Run the wheel's tritonserver in the foreground on a model repository, "
        "with KServe-style flags. Flags with dashes (--log-verbose=1) go to tritonserver.",
    )
    parser.add_argument("--model_dir", "--model_repository", dest="model_dir", required=True,
                        help="The Triton model repository (a path, file:// or storage URI).")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--grpc_port", type=int, default=8081)
    parser.add_argument("--metrics_port", type=int, default=None,
                        help="Triton's metrics port (default: metrics off; 0: a free port).")
    settings = component_settings(parser)
    parser.add_argument("--bind_address", "--host", dest="host", type=bind_address,
                        default=settings.bind_address,
                        help="IP address Triton's HTTP, gRPC and metrics listen on (default: "
                        f"${BIND_ADDRESS_ENV}, else 127.0.0.1).")
    parser.add_argument("--triton_home", default=None,
                        help="A venv (or its tritonserver dir) with nvidia-pytriton "
                        "(default: $MODELSERVE_TRITON_HOME, else .venv-triton).")
    parser.add_argument("--ready_timeout_s", type=float, default=120.0)
    parser.add_argument("--exit_timeout_s", type=int, default=5)
    return parser


def _triton_flags(parser: argparse.ArgumentParser, unknown: list[str]) -> list[str]:
    for flag in unknown:
        name = flag.split("=", 1)[0]
        if not (name.startswith("--") and "-" in name[2:] and "_" not in name):
            parser.error(f"unrecognized argument {flag!r} (Triton's own flags need --a-b=value)")
    return unknown


def _repository(model_dir: str) -> Path:
    from servers.storage import resolve_model_dir  # kserve-storage: only for remote URIs

    return resolve_model_dir(model_dir)


def _status(returncode: int) -> int:
    """An exit status for ours: a Triton killed by signal N exits 128 + N, as in a shell."""
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str] | None = None) -> int:
    """Run Triton as a component until it exits or we are told to stop; its exit status."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    extra = _triton_flags(parser, unknown)
    stopping = threading.Event()
    server: TritonServer | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if server is not None:
            server.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        repository = _repository(args.model_dir)
        server = TritonServer(
            repository,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            host=args.host,
            install=locate(args.triton_home),
            log=sys.stdout.buffer,
            ready_timeout_s=args.ready_timeout_s,
            exit_timeout_s=args.exit_timeout_s,
            extra_args=extra,
            new_session=False,  # stay in the supervisor's process group
        )
        server.start(wait=False)
        if stopping.is_set():  # told to stop before Triton was there to be told
            server.terminate()
        server.wait_ready(stopping.is_set)
        if not stopping.is_set():
            print(f"tritonserver ready: models {server.models}, HTTP {server.http_port}, "
                  f"gRPC {server.grpc_port}", file=sys.stderr, flush=True)
        return _status(server.wait())
    except TritonStartError as exc:
        if stopping.is_set():
            return _status(exc.returncode or 0)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return _status(exc.returncode or 1)
    except Exception as exc:  # TritonNotInstalled, RepositoryError, ModelLoadError, OSError
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if server is not None:
            server.stop()
        return 1


if __name__ == "__main__":
    sys.exit(main())
