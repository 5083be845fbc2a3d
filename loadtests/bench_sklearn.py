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
what they cost. "payload logger on" is the predictor logging every request and response to a
`modelserve logsink` (issue 18): its ratio to the predictor without is what logging costs
(off, the logger installs nothing). "traces on" is the gateway, transformer and predictor
exporting their spans (servers/telemetry.py) to an OTLP/HTTP receiver in a process of its own:
its ratio to the same service with traces off is what tracing costs.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demos import build_all  # noqa: E402
from demos.iris import IRIS_FEATURES  # noqa: E402
from loadtests.cpu import cpu_cells, metered  # noqa: E402
from loadtests.httpload import LoadResult, run_load  # noqa: E402
from loadtests.table import ONE_REPLICA, loadavg, print_table  # noqa: E402
from servers.payload_logger import PayloadLoggerSettings  # noqa: E402
from tests.support import (  # noqa: E402
    ServerProcess,
    free_port,
    run_platform,
    run_server,
    wait_ready,
)

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
    logged: bool = False  # the predictor logs its payloads to a `modelserve logsink`
    traced: bool = False  # every process exports its spans to an OTLP/HTTP receiver


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
        "modelserve predictor, payload logger on",
        "servers.sklearn",
        None,
        V1_ROWS,
        peer="modelserve predictor",
        logged=True,
    ),
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
    # Same run, traces on (servers/telemetry.py): this ratio (on / off) is what tracing costs.
    Target(
        "gateway -> iris-classifier, traces on",
        "",
        None,
        V1_RECORDS,
        peer="gateway -> iris-classifier",
        via_gateway="iris-classifier",
        traced=True,
    ),
    # The same with the gateway sampling 10 % of traces (the components follow its decision):
    # the unsampled requests' spans are non-recording, nothing is exported for them.
    Target(
        "gateway -> iris-classifier, traces on, 10% sampled",
        "",
        None,
        V1_RECORDS,
        peer="gateway -> iris-classifier",
        via_gateway="iris-classifier",
        env={"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
        traced=True,
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
        with contextlib.ExitStack() as traces:
            env = {**ONE_REPLICA, **target.env}
            if target.traced:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = traces.enter_context(_otlp_receiver())
            platform = traces.enter_context(run_platform(model_dir.parent, logs, env=env))
            path = f"/v1/models/{target.via_gateway}:predict"
            components = platform.component_pids(target.via_gateway)
            return asyncio.run(measure(platform.port, target.body, levels, seconds, path,
                                       {"gateway": platform.process.pid}, components, cpu))
    predictor_args = ["--model_name=iris", f"--model_dir={model_dir}"]
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(_payload_logger_env(logs)) if target.logged else {}
        predictor = stack.enter_context(
            run_server(target.predictor, predictor_args, logs, env=env)
        )
        return _run_direct(target, predictor, model_dir, logs, levels, seconds, cpu)


# A real OTLP/HTTP receiver decoding every export (tests/otlp_receiver.py), in a process of
# its own so that it takes no CPU from the load generator; it prints its endpoint.
_RECEIVER = (
    "import sys, time\n"
    "from tests.otlp_receiver import OtlpReceiver\n"
    "receiver = OtlpReceiver()\n"
    "receiver.start()\n"
    "print(receiver.endpoint, flush=True)\n"
    "time.sleep(1e6)\n"
)


@contextlib.contextmanager
def _otlp_receiver() -> Iterator[str]:
    """The endpoint of an OTLP/HTTP receiver running until the block ends."""
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE,
                                cwd=Path(__file__).resolve().parent.parent)
    try:
        assert receiver.stdout is not None
        yield receiver.stdout.readline().decode().strip()
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


@contextlib.contextmanager
def _payload_logger_env(logs: Path) -> Iterator[dict[str, str]]:
    """A `modelserve logsink` on a free port, and the predictor environment logging to it."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "modelserve"), "logsink",
               "--out", str(logs / f"events-{port}.jsonl"), "--port", str(port)]
    with (logs / f"logsink-{port}.log").open("wb") as out:
        sink = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", sink, logs / f"logsink-{port}.log")
        settings = PayloadLoggerSettings(
            url=f"http://127.0.0.1:{port}/", inference_service="iris", component="predictor"
        )
        yield settings.to_env()
    finally:
        sink.terminate()
        sink.wait(timeout=30)


def _run_direct(
    target: Target, predictor: ServerProcess, model_dir: Path, logs: Path, levels: list[int],
    seconds: float, cpu: CpuTable,
) -> dict[int, LoadResult]:
    """Load `predictor` directly, or through the target's transformer in front of it."""
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
