"""Benchmark (not a test): the iris model served by stock KServe, by MLServer's scikit-learn
runtime, by the modelserve predictor and by the modelserve predictor behind its gateway, at 1, 16
and 64 keep-alive connections, in one run; and the XGBoost and LightGBM iris boosters served by
stock KServe (`kserve.Model` wrappers doing what KServe's xgbserver / lgbserver do,
loadtests/peers/stock_kserve_xgboost.py and stock_kserve_lightgbm.py, the same model files)
and by modelserve's `servers.xgboost` / `servers.lightgbm`.

    .venv/bin/python loadtests/bench_peers.py
    .venv/bin/python loadtests/bench_peers.py --seconds 10 --connections 1 16 64 --markdown
    .venv/bin/python loadtests/bench_peers.py --services xgboost lightgbm --connections 16 64

Every server gets the same 2-row request, as v1 JSON (stock KServe, modelserve, the gateway) and
as the equivalent v2 JSON (stock KServe, MLServer, modelserve; MLServer speaks v2 only). Each
answer is checked once (HTTP 200, predictions [0, 2]) before the load. Prints req/s, p50, p99,
errors, the server's CPU per request (its process and descendants, loadtests/cpu.py) and the
ratios of req/s and of p99 to stock KServe for the same model, request and connections.
Stock KServe's xgbserver / lgbserver answer the booster's raw output (class probabilities
for these softprob boosters); modelserve answers class ids by default: the probe accepts
either (ids, or the probabilities' argmax).

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

from demos import build_all, lightgbm_iris, xgboost_iris  # noqa: E402
from loadtests.bench_sklearn import ROWS, V1_ROWS  # noqa: E402
from loadtests.cpu import metered  # noqa: E402
from loadtests.httpload import LoadResult, run_load  # noqa: E402
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
SERVICES = ("iris", "xgboost", "lightgbm")
# The boosters: model name (and demo directory), stock KServe peer module, modelserve module.
BOOSTERS = {
    "xgboost": ("xgboost-iris", "loadtests.peers.stock_kserve_xgboost", "servers.xgboost"),
    "lightgbm": ("lightgbm-iris", "loadtests.peers.stock_kserve_lightgbm", "servers.lightgbm"),
}

# Starts a server, given (model directory, scratch directory); yields (HTTP port, the pid
# whose process tree serves it, for CPU per request).
Starter = Callable[[Path, Path], AbstractContextManager[tuple[int, int]]]


@dataclass
class Peer:
    """One server: how to start it and which path to load per row set ("v1" / "v2")."""

    name: str
    start: Starter
    paths: dict[str, str]
    service: str = "iris"  # the model; ratios are to this service's stock KServe peer
    reference: bool = False
    results: dict[str, dict[int, LoadResult]] = field(default_factory=dict)
    cpu: dict[str, dict[int, float]] = field(default_factory=dict)  # µs of CPU a request


@contextmanager
def _kserve_module(
    module: str, model_dir: Path, work: Path, name: str = "iris", extra: tuple[str, ...] = ()
) -> Iterator[tuple[int, int]]:
    args = [f"--model_name={name}", f"--model_dir={model_dir}", *extra]
    with run_server(module, args, work) as server:
        yield server.http_port, server.process.pid


@contextmanager
def _gateway(model_dir: Path, work: Path) -> Iterator[tuple[int, int]]:
    with run_platform(model_dir.parent, work) as platform:
        yield platform.port, platform.process.pid


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
    def start(model_dir: Path, work: Path) -> Iterator[tuple[int, int]]:
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
            yield port, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    return start


def _predictions(protocol: str, answer: dict[str, Any]) -> list[Any]:
    """Class ids: as answered, or the argmax of each row of answered probabilities."""
    if protocol == "v1":
        values = list(answer["predictions"])
        if values and isinstance(values[0], list):
            return [row.index(max(row)) for row in values]
        return values
    output = answer["outputs"][0]
    data = list(output["data"])
    shape = output.get("shape", [len(data)])
    if len(shape) == 2 and shape[1] > 1 and output.get("datatype", "").startswith("FP"):
        width = int(shape[1])
        rows = [data[i : i + width] for i in range(0, len(data), width)]
        return [row.index(max(row)) for row in rows]
    return data


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


def booster_peers(service: str) -> list[Peer]:
    """Stock KServe (the reference) and modelserve for one booster, both with `--nthread=1`
    (what KServe's ServingRuntime and modelserve's manifests pass)."""
    name, stock, ours = BOOSTERS[service]
    paths = {"v1": f"/v1/models/{name}:predict", "v2": f"/v2/models/{name}/infer"}

    def starter(module: str) -> Starter:
        return lambda m, w: _kserve_module(module, m, w, name, ("--nthread=1",))

    return [
        Peer(f"(a) stock KServe {service}", starter(stock), paths, service, reference=True),
        Peer(f"(c) modelserve {name}", starter(ours), paths, service),
    ]


def peers(mlserver_workers: list[int], services: list[str] | None = None) -> list[Peer]:
    chosen = list(services or SERVICES)
    boosters = [p for s in chosen if s in BOOSTERS for p in booster_peers(s)]
    if "iris" not in chosen:
        return boosters
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
            reference=True,
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
        *boosters,
    ]


def _table(all_peers: list[Peer], markdown: bool) -> str:
    references = {p.service: p for p in all_peers if p.reference}
    header = [
        "rows", "target", "conns", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/req",
        "req/s vs (a)", "p99 vs (a)",
    ]
    rows: list[list[str]] = []
    for service in dict.fromkeys(p.service for p in all_peers):
        for protocol in ("v1", "v2"):
            for peer in (p for p in all_peers if p.service == service):
                base_results = references[service].results if service in references else {}
                for connections, result in peer.results.get(protocol, {}).items():
                    base = base_results.get(protocol, {}).get(connections)
                    ratio = f"{result.rps / base.rps:.2f}x" if base and base.rps else "n/a"
                    base_p99 = base.percentile(99) if base else 0.0
                    p99_ratio = f"{result.percentile(99) / base_p99:.2f}x" if base_p99 else "n/a"
                    cpu = peer.cpu.get(protocol, {}).get(connections)
                    rows.append(
                        [
                            protocol,
                            peer.name,
                            str(connections),
                            f"{result.rps:.0f}",
                            f"{result.percentile(50):.2f}",
                            f"{result.percentile(99):.2f}",
                            str(result.errors),
                            f"{cpu:.0f}" if cpu is not None else "",
                            ratio,
                            p99_ratio,
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


async def measure(
    port: int, pid: int, body: bytes, levels: list[int], seconds: float, path: str
) -> tuple[dict[int, LoadResult], dict[int, float]]:
    """Load each level; its result, and the µs of CPU a request of `pid`'s process tree."""
    results: dict[int, LoadResult] = {}
    cpu: dict[int, float] = {}
    for connections in levels:
        results[connections], used = await metered(
            {}, {"server": pid}, run_load("127.0.0.1", port, path, body, connections, seconds)
        )
        cpu[connections] = used["server"]
    return results, cpu


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
    parser.add_argument(
        "--services",
        nargs="+",
        choices=SERVICES,
        default=list(SERVICES),
        help="models to measure: iris (sklearn: stock KServe, MLServer, modelserve, the "
        "gateway), xgboost, lightgbm (stock KServe and modelserve); default all",
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
    if args.mlserver_workers and "iris" in args.services:
        ensure_mlserver_venv()
    all_peers = peers(args.mlserver_workers, args.services)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        model_dirs: dict[str, Path] = {}
        if "iris" in args.services:  # the gateway serves every demo: build them all
            model_dirs["iris"] = build_all(models)[0]
        for service, demo in (("xgboost", xgboost_iris), ("lightgbm", lightgbm_iris)):
            if service in args.services:
                built = models / demo.DIRECTORY
                model_dirs[service] = built if built.is_dir() else demo.build(models)
        for peer in all_peers:
            print(f"… {peer.name}", file=sys.stderr, flush=True)
            with peer.start(model_dirs[peer.service], work) as (port, pid):
                probe(peer, port)
                for protocol, path in peer.paths.items():
                    peer.results[protocol], peer.cpu[protocol] = asyncio.run(
                        measure(port, pid, BODIES[protocol], args.connections, args.seconds, path)
                    )
    print()
    print(_table(all_peers, args.markdown))
    print(f"\n({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
