"""Benchmark (not a test): the iris model served by stock KServe, by MLServer's scikit-learn
runtime, by the modelserve predictor and by the modelserve predictor behind its gateway, at 1, 16
and 64 keep-alive connections, in one run.

    .venv/bin/python loadtests/bench_peers.py
    .venv/bin/python loadtests/bench_peers.py --seconds 10 --connections 1 16 64 --markdown

Every server gets the same 2-row request, as v1 JSON (stock KServe, modelserve, the gateway) and
as the equivalent v2 JSON (stock KServe, MLServer, modelserve; MLServer speaks v2 only). Each
answer is checked once (HTTP 200, predictions [0, 2]) before the load. Prints req/s, p50, p99,
errors and the ratio of req/s to stock KServe with the same request at the same connections.

MLServer's dependencies conflict with kserve's, so it runs from its own virtual environment,
`.venv-mlserver/`, which this script creates when it is missing (MLServer and
mlserver-sklearn pinned to MLSERVER_VERSION, scikit-learn pinned to the version in this
interpreter's environment, so the same joblib file loads in both; uvloop pinned below 0.22,
see UVLOOP_VERSION). MLServer is measured with
`parallel_workers` 0 (inference in the server process, as stock KServe and modelserve do) and
with its default, 1 (inference in one worker process behind a queue). Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from demos import build_all  # noqa: E402
from loadtests.bench_sklearn import ROWS, V1_ROWS, measure  # noqa: E402
from loadtests.httpload import LoadResult  # noqa: E402
from tests.support import free_port, run_platform, run_server, wait_ready  # noqa: E402

MLSERVER_VERSION = "1.7.1"  # mlserver and mlserver-sklearn, pinned together
# MLServer 1.7.1's parallel workers die at start-up with uvloop >= 0.22 ("There is no current
# event loop", SeldonIO/MLServer#2286), so its default configuration needs the older uvloop.
UVLOOP_VERSION = "0.21.0"
MLSERVER_VENV = ROOT / ".venv-mlserver"
MLSERVER_TEMPLATE = Path(__file__).resolve().parent / "peers" / "mlserver_iris"
MLSERVER_DEFAULT_WORKERS = 1  # mlserver.settings.DEFAULT_PARALLEL_WORKERS in 1.7.1
READY_TIMEOUT = 120.0

EXPECTED = [0, 2]  # setosa, virginica
V2_BODY = json.dumps(
    {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [len(ROWS), len(ROWS[0])],
                "data": [value for row in ROWS for value in row],
            }
        ]
    }
).encode()
BODIES = {"v1": V1_ROWS, "v2": V2_BODY}
V1_PATH = "/v1/models/iris:predict"
V2_PATH = "/v2/models/iris/infer"
REFERENCE = "(a) stock KServe"

# Starts a server, given (model directory, scratch directory); yields its HTTP port.
Starter = Callable[[Path, Path], AbstractContextManager[int]]


@dataclass
class Peer:
    """One server: how to start it and which path to load per row set ("v1" / "v2")."""

    name: str
    start: Starter
    paths: dict[str, str]
    results: dict[str, dict[int, LoadResult]] = field(default_factory=dict)


@contextmanager
def _kserve_module(module: str, model_dir: Path, work: Path) -> Iterator[int]:
    args = ["--model_name=iris", f"--model_dir={model_dir}"]
    with run_server(module, args, work) as server:
        yield server.http_port


@contextmanager
def _gateway(model_dir: Path, work: Path) -> Iterator[int]:
    with run_platform(model_dir.parent, work) as platform:
        yield platform.port


def _mlserver_versions() -> dict[str, str] | None:
    """The versions installed in .venv-mlserver, or None when it is missing or broken."""
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        return None
    script = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
        "('mlserver', 'mlserver-sklearn', 'scikit-learn', 'uvloop')}))"
    )
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def ensure_mlserver_venv() -> dict[str, str]:
    """Create or update .venv-mlserver so it holds the pinned versions; returns them."""
    wanted = {
        "mlserver": MLSERVER_VERSION,
        "mlserver-sklearn": MLSERVER_VERSION,
        "scikit-learn": importlib.metadata.version("scikit-learn"),
        "uvloop": UVLOOP_VERSION,
    }
    if _mlserver_versions() == wanted:
        return wanted
    python = MLSERVER_VENV / "bin" / "python"
    print(f"… installing {wanted} into {MLSERVER_VENV}", file=sys.stderr, flush=True)
    if not python.exists():
        base = shutil.which("python3.11")
        if base is None:
            raise RuntimeError("python3.11 not found on PATH: needed to create .venv-mlserver")
        subprocess.run([base, "-m", "venv", str(MLSERVER_VENV)], check=True)
    uv = MLSERVER_VENV / "bin" / "uv"
    if not uv.exists():
        subprocess.run([str(python), "-m", "pip", "install", "-q", "uv"], check=True)
    pins = [f"{name}=={version}" for name, version in wanted.items()]
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(python), *pins], check=True)
    installed = _mlserver_versions()
    if installed != wanted:
        raise RuntimeError(f".venv-mlserver holds {installed}, wanted {wanted}")
    return wanted


def _mlserver(parallel_workers: int) -> Starter:
    @contextmanager
    def start(model_dir: Path, work: Path) -> Iterator[int]:
        """`mlserver start` on a copy of peers/mlserver_iris/ with the iris joblib file."""
        repo = work / f"mlserver_pw{parallel_workers}"
        shutil.copytree(MLSERVER_TEMPLATE, repo)
        shutil.copy(model_dir / "model.joblib", repo / "model.joblib")
        settings: dict[str, Any] = json.loads((repo / "settings.json").read_text())
        port = free_port()
        settings.update(
            http_port=port,
            grpc_port=free_port(),
            metrics_port=free_port(),
            parallel_workers=parallel_workers,
        )
        (repo / "settings.json").write_text(json.dumps(settings, indent=2))
        log = work / f"mlserver_pw{parallel_workers}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{MLSERVER_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=repo,  # MLServer keeps .envs/ and .metrics/ under its working directory
                env=env,
                start_new_session=True,  # so its parallel workers can be stopped with it
            )
        try:
            try:
                wait_ready(
                    f"http://127.0.0.1:{port}/v2/models/iris/ready", process, log, READY_TIMEOUT
                )
            except RuntimeError as exc:
                raise RuntimeError(
                    f"MLServer (parallel_workers={parallel_workers}): {exc}"
                ) from exc
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    return start


def _predictions(protocol: str, answer: dict[str, Any]) -> list[Any]:
    if protocol == "v1":
        return list(answer["predictions"])
    return list(answer["outputs"][0]["data"])


def probe(peer: Peer, port: int) -> None:
    """One request per row set: it must answer 200 with the predictions [0, 2]."""
    for protocol, path in peer.paths.items():
        response = httpx.post(
            f"http://127.0.0.1:{port}{path}",
            content=BODIES[protocol],
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"{peer.name} {protocol} {path}: HTTP {response.status_code}: {response.text}"
            )
        predictions = _predictions(protocol, response.json())
        if predictions != EXPECTED:
            raise RuntimeError(
                f"{peer.name} {protocol}: predictions {predictions} != {EXPECTED}: {response.text}"
            )


def peers(mlserver_workers: list[int]) -> list[Peer]:
    both = {"v1": V1_PATH, "v2": V2_PATH}
    mlserver = [
        Peer(
            f"(b) MLServer sklearn, parallel_workers={n}"
            + (" (default)" if n == MLSERVER_DEFAULT_WORKERS else ""),
            _mlserver(n),
            {"v2": V2_PATH},
        )
        for n in mlserver_workers
    ]
    return [
        Peer(
            REFERENCE,
            lambda m, w: _kserve_module("loadtests.peers.stock_kserve_sklearn", m, w),
            both,
        ),
        *mlserver,
        Peer(
            "(c) modelserve predictor",
            lambda m, w: _kserve_module("servers.sklearn", m, w),
            both,
        ),
        Peer(
            "(d) gateway -> sklearn-iris",
            _gateway,
            {"v1": "/v1/models/sklearn-iris:predict"},
        ),
    ]


def _table(all_peers: list[Peer], markdown: bool) -> str:
    reference = next(p for p in all_peers if p.name == REFERENCE)
    header = ["rows", "target", "conns", "req/s", "p50 ms", "p99 ms", "errors", "vs (a)"]
    rows: list[list[str]] = []
    for protocol in ("v1", "v2"):
        for peer in all_peers:
            for connections, result in peer.results.get(protocol, {}).items():
                base = reference.results.get(protocol, {}).get(connections)
                ratio = f"{result.rps / base.rps:.2f}x" if base and base.rps else "n/a"
                rows.append(
                    [
                        protocol,
                        peer.name,
                        str(connections),
                        f"{result.rps:.0f}",
                        f"{result.percentile(50):.2f}",
                        f"{result.percentile(99):.2f}",
                        str(result.errors),
                        ratio,
                    ]
                )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), *(line(row) for row in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, after 1 s warm-up")
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        nargs="*",
        default=[0, MLSERVER_DEFAULT_WORKERS],
        help="MLServer parallel_workers settings to measure (none: skip MLServer)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    started = time.monotonic()
    load = os.getloadavg()[0]
    if load > 1.0:
        print(
            f"warning: load average {load:.2f} before the run: the numbers may be off",
            file=sys.stderr,
        )
    if args.mlserver_workers:
        ensure_mlserver_venv()
    all_peers = peers(args.mlserver_workers)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_all(work / "models")[0]
        for peer in all_peers:
            print(f"… {peer.name}", file=sys.stderr, flush=True)
            with peer.start(model_dir, work) as port:
                probe(peer, port)
                for protocol, path in peer.paths.items():
                    peer.results[protocol] = asyncio.run(
                        measure(port, BODIES[protocol], args.connections, args.seconds, path)
                    )
    print()
    print(_table(all_peers, args.markdown))
    print(f"\n({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
