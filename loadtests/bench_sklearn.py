"""Benchmark (not a test): the iris model served by stock KServe and by modelserve, and the
transformer + predictor pair of each, at 1, 16 and 64 connections, in one run; then the same
modelserve services through the gateway (`modelserve up`), compared with calling them directly.

    make bench                      # or: .venv/bin/python loadtests/bench_sklearn.py
    .venv/bin/python loadtests/bench_sklearn.py --seconds 10 --connections 1 16 64
    .venv/bin/python loadtests/bench_sklearn.py --only "sklearn-iris, limits off"

Prints req/s, p50 and p99 latency per target and level, the ratios of modelserve to the
stock KServe peer measured in the same run, and for the gateway's targets its own CPU per
request (its process only, not the components'). "limits off" is the gateway without its
front door and outlier ejection: its ratio to the gateway with them is what they cost.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from loadtests.httpload import LoadResult, run_load  # noqa: E402
from loadtests.table import ONE_REPLICA  # noqa: E402
from servers.demo_models import IRIS_FEATURES, build_all  # noqa: E402
from tests.support import run_platform, run_server  # noqa: E402

ROWS = [[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3]]
V1_ROWS = json.dumps({"instances": ROWS}).encode()
V1_RECORDS = json.dumps(
    {"instances": [dict(zip(IRIS_FEATURES, r, strict=True)) for r in ROWS]}
).encode()
PATH = "/v1/models/iris:predict"


@dataclass
class Target:
    """One thing to load: how to start it and what to send."""

    name: str
    predictor: str
    transformer: str | None
    body: bytes
    peer: str | None = None  # the target this one is compared with
    via_gateway: str | None = None  # a service name: run `modelserve up`, load the gateway
    env: dict[str, str] = field(default_factory=dict)  # added to `modelserve up`'s


# The gateway's protections against hostile clients turned off: the front door's timeouts and
# connection caps (uvicorn's own protocol instead) and outlier ejection's bookkeeping.
NO_LIMITS = {
    "MODELSERVE_GATEWAY_FRONT_DOOR": "false",
    "MODELSERVE_GATEWAY_OUTLIER_CONSECUTIVE_FAILURES": "0",
}


TARGETS = [
    Target("stock-kserve predictor", "loadtests.peers.stock_kserve_sklearn", None, V1_ROWS),
    Target("modelserve predictor", "servers.sklearn", None, V1_ROWS, peer="stock-kserve predictor"),
    Target(
        "stock-kserve transformer+predictor",
        "loadtests.peers.stock_kserve_sklearn",
        "loadtests.peers.stock_kserve_sklearn",
        V1_ROWS,
    ),
    Target(
        "modelserve iris-classifier",
        "servers.sklearn",
        "servers.transformers.tabular",
        V1_RECORDS,
        peer="stock-kserve transformer+predictor",
    ),
    Target(
        "gateway -> sklearn-iris",
        "",
        None,
        V1_ROWS,
        peer="modelserve predictor",
        via_gateway="sklearn-iris",
    ),
    # Same run, limits off: this ratio (off / on) is what the limits cost.
    Target(
        "gateway -> sklearn-iris, limits off",
        "",
        None,
        V1_ROWS,
        peer="gateway -> sklearn-iris",
        via_gateway="sklearn-iris",
        env=NO_LIMITS,
    ),
    Target(
        "gateway -> iris-classifier",
        "",
        None,
        V1_RECORDS,
        peer="modelserve iris-classifier",
        via_gateway="iris-classifier",
    ),
]


# CPU seconds of the gateway's own process (not its components) per level, by target.
GatewayCpu = dict[int, float]


async def measure(
    port: int, body: bytes, levels: list[int], seconds: float, path: str = PATH,
    pid: int | None = None, cpu: GatewayCpu | None = None,
) -> dict[int, LoadResult]:
    results = {}
    process = psutil.Process(pid) if pid is not None else None
    for connections in levels:
        before = sum(process.cpu_times()[:2]) if process is not None else 0.0
        results[connections] = await run_load("127.0.0.1", port, path, body, connections, seconds)
        if process is not None and cpu is not None:
            cpu[connections] = sum(process.cpu_times()[:2]) - before
    return results


def _run_target(
    target: Target, model_dir: Path, logs: Path, levels: list[int], seconds: float,
    cpu: GatewayCpu,
) -> dict[int, LoadResult]:
    if target.via_gateway:
        with run_platform(model_dir.parent, logs, env={**ONE_REPLICA, **target.env}) as platform:
            path = f"/v1/models/{target.via_gateway}:predict"
            return asyncio.run(measure(platform.port, target.body, levels, seconds, path,
                                       platform.process.pid, cpu))
    predictor_args = ["--model_name=iris", f"--model_dir={model_dir}"]
    with run_server(target.predictor, predictor_args, logs) as predictor:
        if target.transformer is None:
            return asyncio.run(measure(predictor.http_port, target.body, levels, seconds))
        stock = target.transformer.startswith("loadtests.")
        transformer_args = [
            "--model_name=iris",
            f"--model_dir={model_dir}",
            f"--predictor_host=127.0.0.1:{predictor.http_port if stock else predictor.grpc_port}",
            f"--predictor_protocol={'v1' if stock else 'grpc-v2'}",
        ]
        with run_server(target.transformer, transformer_args, logs) as transformer:
            return asyncio.run(measure(transformer.http_port, target.body, levels, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--only", default="", help="run the targets whose name holds this (and their peers)"
    )
    args = parser.parse_args()
    chosen = [t for t in TARGETS if args.only in t.name]
    wanted = {t.name for t in chosen} | {t.peer for t in chosen if t.peer}
    targets = [t for t in TARGETS if t.name in wanted]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_all(Path(tmp) / "models")[0]
        logs = Path(tmp)
        table: dict[str, dict[int, LoadResult]] = {}
        cpu: dict[str, GatewayCpu] = {}
        for target in targets:
            print(f"… {target.name}", file=sys.stderr, flush=True)
            cpu[target.name] = {}
            table[target.name] = _run_target(
                target, model_dir, logs, args.connections, args.seconds, cpu[target.name]
            )
    print(
        f"\n{'target':38} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'vs peer':>8} {'gw us/req':>9}"
    )
    for target in targets:
        for connections, result in table[target.name].items():
            ratio = ""
            if target.peer in table:
                peer = table[target.peer][connections]
                ratio = f"{result.rps / peer.rps:.2f}x" if peer.rps else "n/a"
            used = cpu[target.name].get(connections)
            count = len(result.latencies)
            per_request = f"{used / count * 1e6:.0f}" if used and count else ""
            print(
                f"{target.name:38} {connections:>5} {result.rps:>8.0f} "
                f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f} "
                f"{result.errors:>6} {ratio:>8} {per_request:>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
