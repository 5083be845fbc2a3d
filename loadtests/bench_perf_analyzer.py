"""Benchmark (not a test): Triton's own `perf_analyzer`, unmodified, against triton-digits
through the gateway and against the tritonserver behind it, in one run.

    make bench-perf-analyzer        # installs perf_analyzer once (tools/perf-analyzer.sh)
    .venv/bin/python loadtests/bench_perf_analyzer.py --perf-analyzer PATH [--seconds 5]

`modelserve up inferenceservices/triton-digits.yaml` on free ports, held at one replica
(min = max = 1) so that the gateway and the direct run measure the same one tritonserver
(the autoscaler would otherwise add a second behind the gateway only); the tritonserver's own
HTTP and gRPC ports are read from the control plane's status (the replica's URL). For each
protocol (http, grpc) and concurrency (1, 16) it prints perf_analyzer's throughput and
average latency for both targets, the gateway's ratio to Triton, and the CPU the gateway's
process and the tritonserver (with its children) spent per request (`/proc/PID/stat` over the
whole perf_analyzer run, divided by its wall time and its throughput: loadtests/cpu.py).
`--floor` adds, for gRPC, a bare grpc.aio byte proxy in front of the same tritonserver
(loadtests/grpc_floor.py): the least a Python gRPC proxy costs, so that the gateway's CPU per
request above it is its own work. Traffic goes to 127.0.0.1 only; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from loadtests.cpu import CpuMeter  # noqa: E402
from loadtests.table import loadavg  # noqa: E402
from tests.support import Platform, free_port, run_platform  # noqa: E402

MODEL = "triton-digits"
SHAPE = "images:1,8,8"
MANIFEST = ROOT / "inferenceservices" / "triton-digits.yaml"
_THROUGHPUT = re.compile(r"Concurrency: \d+, throughput: ([\d.]+) infer/sec, latency (\d+) usec")


def run(perf_analyzer: str, url: str, protocol: str, concurrency: int, seconds: float,
        meter: CpuMeter) -> tuple[float, float, dict[str, float]]:
    """(infer/s, average latency in ms) as perf_analyzer measured them, and each metered
    process's CPU µs per request over the run."""
    window_ms = str(int(seconds * 1000))
    command = [perf_analyzer, "-m", MODEL, "-u", url, "-i", protocol, "--shape", SHAPE,
               "--concurrency-range", str(concurrency), "--measurement-interval", window_ms,
               "--max-trials", "8", "--stability-percentage", "100"]
    meter.start()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    used = meter.stop()
    match = _THROUGHPUT.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"perf_analyzer failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    rps = float(match.group(1))
    per_request = {name: s / wall / rps * 1e6 if rps else 0.0 for name, s in used.items()}
    return rps, int(match.group(2)) / 1000, per_request


def wait_listening(port: int, processes: list[subprocess.Popen[bytes]], what: str,
                   timeout: float = 60) -> None:
    """Return once something accepts on 127.0.0.1:`port`; raise if one of `processes`
    exits first or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


@contextlib.contextmanager
def held_triton() -> Iterator[Platform]:
    """`modelserve up` with triton-digits held at one replica (min = max = 1), on the demo
    models built into a temporary folder."""
    from demos import build_all

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        build_all(models)
        doc = yaml.safe_load(MANIFEST.read_text())
        doc["spec"]["predictor"]["minReplicas"] = doc["spec"]["predictor"]["maxReplicas"] = 1
        manifest = Path(tmp) / MANIFEST.name
        manifest.write_text(yaml.safe_dump(doc))
        with run_platform(models, Path(tmp), files=[manifest]) as platform:
            yield platform


@contextlib.contextmanager
def _floor_proxy(target: str) -> Iterator[tuple[str, int]]:
    """loadtests/grpc_floor.py in front of `target`: (its address, its pid)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.grpc_floor", "--port", str(port), "--target", target],
        cwd=ROOT,
    )
    try:
        wait_listening(port, [process], "the floor proxy", timeout=30)
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def _triton_ports(platform: Platform) -> tuple[str, str]:
    """The tritonserver's own HTTP and gRPC addresses (its replica's, from the status)."""
    replica = platform.ready_replica(MODEL)
    return str(replica["url"]).removeprefix("http://"), str(replica["grpcTarget"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--perf-analyzer", required=True, help="the perf_analyzer executable")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"],
                        choices=["http", "grpc"])
    parser.add_argument("--floor", action="store_true",
                        help="also a bare grpc.aio proxy, for gRPC (loadtests/grpc_floor.py)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        platform = stack.enter_context(held_triton())
        triton_http, triton_grpc = _triton_ports(platform)
        proxies = {"gateway": platform.process.pid}
        targets = {
            "http": {"gateway": f"127.0.0.1:{platform.port}", "triton": triton_http},
            "grpc": {"gateway": platform.grpc_target, "triton": triton_grpc},
        }
        if args.floor:
            floor, proxies["floor"] = stack.enter_context(_floor_proxy(triton_grpc))
            targets["grpc"] = {"floor": floor, **targets["grpc"]}
        meter = CpuMeter(proxies, {"triton": platform.component_pids(MODEL)["predictor"]})
        print(f"load average before: {loadavg()}")
        print(f"\n{'protocol':8} {'conc':>4} {'target':8} {'infer/s':>9} {'avg ms':>8} "
              f"{'x/triton':>9} {'proxy us/req':>12} {'triton us/req':>13}")
        for protocol, urls in targets.items():
            if protocol not in args.protocols:
                continue
            for concurrency in args.concurrency:
                measured = {
                    name: run(args.perf_analyzer, url, protocol, concurrency, args.seconds,
                              meter)
                    for name, url in urls.items()
                }
                for name, (rps, latency, cpu) in measured.items():
                    ratio = proxy_cpu = ""
                    if name in proxies and measured["triton"][0]:
                        ratio = f"{rps / measured['triton'][0]:.2f}x"
                        proxy_cpu = f"{cpu[name]:.0f}"
                    print(f"{protocol:8} {concurrency:>4} {name:8} {rps:>9.0f} "
                          f"{latency:>8.2f} {ratio:>9} {proxy_cpu:>12} "
                          f"{cpu['triton']:>13.0f}", flush=True)
        print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
