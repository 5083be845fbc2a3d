"""Benchmark (not a test): the iris model served by stock KServe and by modelserve, and the
transformer + predictor pair of each, at 1, 16 and 64 connections, in one run; then the same
modelserve services through the gateway (`modelserve up`), compared with calling them directly.

    make bench                      # or: .venv/bin/python loadtests/bench_sklearn.py
    .venv/bin/python loadtests/bench_sklearn.py --seconds 10 --connections 1 16 64
    .venv/bin/python loadtests/bench_sklearn.py --only "sklearn-iris, limits off"

Prints req/s, p50 and p99 latency per target and level, the ratios of modelserve to the
stock KServe peer measured in the same run, and the CPU each process spends per request
(`/proc/PID/stat`, loadtests/cpu.py: the gateway's own process, each component with its
children), which means something on a shared host where req/s moves. "limits off" is the
gateway without its front door and outlier ejection: its ratio to the gateway with them is
what they cost.
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

from demos import build_all  # noqa: E402
from demos.iris import IRIS_FEATURES  # noqa: E402
from loadtests.cpu import cpu_cells, metered  # noqa: E402
from loadtests.httpload import LoadResult, run_load  # noqa: E402
from loadtests.table import ONE_REPLICA, loadavg, print_table  # noqa: E402
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


# Microseconds of CPU a request per process ("gateway", "predictor", "transformer"), per level.
CpuTable = dict[int, dict[str, float]]
CPU_COLUMNS = ["gateway", "transformer", "predictor"]


async def measure(
    port: int, body: bytes, levels: list[int], seconds: float, path: str,
    own: dict[str, int], trees: dict[str, int], cpu: CpuTable,
) -> dict[int, LoadResult]:
    """Load each level; record each process's (tree's) CPU per request into `cpu`."""
    results = {}
    for connections in levels:
        results[connections], cpu[connections] = await metered(
            own, trees, run_load("127.0.0.1", port, path, body, connections, seconds)
        )
    return results


def _run_target(
    target: Target, model_dir: Path, logs: Path, levels: list[int], seconds: float,
    cpu: CpuTable,
) -> dict[int, LoadResult]:
    if target.via_gateway:
        with run_platform(model_dir.parent, logs, env={**ONE_REPLICA, **target.env}) as platform:
            path = f"/v1/models/{target.via_gateway}:predict"
            components = platform.component_pids(target.via_gateway)
            return asyncio.run(measure(platform.port, target.body, levels, seconds, path,
                                       {"gateway": platform.process.pid}, components, cpu))
    predictor_args = ["--model_name=iris", f"--model_dir={model_dir}"]
    with run_server(target.predictor, predictor_args, logs) as predictor:
        pids = {"predictor": predictor.process.pid}
        if target.transformer is None:
            return asyncio.run(measure(predictor.http_port, target.body, levels, seconds, PATH,
                                       {}, pids, cpu))
        stock = target.transformer.startswith("loadtests.")
        transformer_args = [
            "--model_name=iris",
            f"--model_dir={model_dir}",
            f"--predictor_host=127.0.0.1:{predictor.http_port}",
            f"--predictor_protocol={'v1' if stock else 'v2'}",  # as the manifests say
        ]
        with run_server(target.transformer, transformer_args, logs) as transformer:
            pids["transformer"] = transformer.process.pid
            return asyncio.run(measure(transformer.http_port, target.body, levels, seconds,
                                       PATH, {}, pids, cpu))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--only", default="", help="run the targets whose name holds this (and their peers)"
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    print(f"load average before: {loadavg()}")
    chosen = [t for t in TARGETS if args.only in t.name]
    wanted = {t.name for t in chosen} | {t.peer for t in chosen if t.peer}
    targets = [t for t in TARGETS if t.name in wanted]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_all(Path(tmp) / "models")[0]
        logs = Path(tmp)
        table: dict[str, dict[int, LoadResult]] = {}
        cpu: dict[str, CpuTable] = {}
        for target in targets:
            print(f"… {target.name}", file=sys.stderr, flush=True)
            cpu[target.name] = {}
            table[target.name] = _run_target(
                target, model_dir, logs, args.connections, args.seconds, cpu[target.name]
            )
    print(f"load average after: {loadavg()}")
    rows = []
    for target in targets:
        for connections, result in table[target.name].items():
            ratio = ""
            if target.peer in table:
                peer = table[target.peer][connections]
                ratio = f"{result.rps / peer.rps:.2f}x" if peer.rps else "n/a"
            used = cpu[target.name].get(connections, {})
            rows.append([
                target.name, str(connections), f"{result.rps:.0f}",
                f"{result.percentile(50):.2f}", f"{result.percentile(99):.2f}",
                str(result.errors), ratio,
                *cpu_cells(used, CPU_COLUMNS),
            ])
    print_table(["target", "conns", "req/s", "p50 ms", "p99 ms", "errors", "vs peer",
                 *(f"{name} us/req" for name in CPU_COLUMNS)], rows, args.markdown, left=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
