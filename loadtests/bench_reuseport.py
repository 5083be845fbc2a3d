"""Benchmark (not a test): one data-plane process against several on one `SO_REUSEPORT` port.

    .venv/bin/python loadtests/bench_reuseport.py --perf-analyzer "$(tools/perf-analyzer.sh)"
    .venv/bin/python loadtests/bench_reuseport.py --perf-analyzer PATH --processes 1 2 4

`modelserve up inferenceservices/triton-digits.yaml` held at one replica gives a tritonserver;
in front of it, for each count in `--processes`, that many data-plane processes (the gateway's
`GatewayServer`, REST only, default settings: front door and limits on, uvloop) listen on one
port with `SO_REUSEPORT`, so the kernel spreads perf_analyzer's connections over them. Each
process routes with a routing table of its own: this measures what more processes would buy,
not a finished feature (the autoscaler's concurrency statistics would have to be summed
across them exactly). Prints perf_analyzer's throughput (HTTP, `--concurrency` levels), the
ratio to the one-process row, and the CPU all the data-plane processes spent per request
(`/proc/PID/stat`), then direct Triton for scale. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.bench_perf_analyzer import MODEL, held_triton, run, wait_listening  # noqa: E402
from loadtests.cpu import CpuMeter  # noqa: E402
from loadtests.table import loadavg  # noqa: E402
from tests.support import free_port  # noqa: E402


def reuseport_socket(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:`port` that other processes may bind as well."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    return sock


async def _serve(port: int, triton_url: str) -> None:
    from gateway.dataplane.server import GatewayServer
    from gateway.routing import Backend, RoutingTable, ServiceRoute
    from gateway.settings import GatewaySettings

    table = RoutingTable()
    table.update(ServiceRoute(name=MODEL, backends=(Backend("bench", triton_url, None),),
                              screen_v2_bodies=True))
    server = GatewayServer(table, GatewaySettings(), grpc_port=None)
    await server.start(reuseport_socket(port))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(0)


def worker(port: int, triton_url: str) -> None:
    """One data-plane process (`--worker`), until it is terminated."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(port, triton_url))


@contextlib.contextmanager
def _data_planes(count: int, triton_url: str) -> Iterator[tuple[int, list[int]]]:
    """`count` worker processes on one free port: (the port, their pids)."""
    port = free_port()
    processes = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(port), triton_url], cwd=ROOT)
        for _ in range(count)
    ]
    try:
        wait_listening(port, processes, "a data-plane process")
        time.sleep(2)  # every process listening, not only the first
        yield port, [p.pid for p in processes]
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--perf-analyzer", help="the perf_analyzer executable")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement window")
    parser.add_argument("--worker", nargs=2, metavar=("PORT", "TRITON_URL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1])
        return 0
    if not args.perf_analyzer:
        parser.error("--perf-analyzer is required")
    with held_triton() as platform:
        triton_url = str(platform.ready_replica(MODEL)["url"])
        print(f"load average before: {loadavg()}")
        print(f"\n{'processes':>9} {'conc':>4} {'infer/s':>9} {'vs 1':>6} {'us/req':>7}")
        single: dict[int, float] = {}
        for count in args.processes:
            with _data_planes(count, triton_url) as (port, pids):
                meter = CpuMeter({f"data plane {i}": pid for i, pid in enumerate(pids)})
                for concurrency in args.concurrency:
                    rps, _, per_process = run(args.perf_analyzer, f"127.0.0.1:{port}", "http",
                                              concurrency, args.seconds, meter)
                    if count == 1:
                        single[concurrency] = rps
                    known = single.get(concurrency)
                    ratio = f"{rps / known:.2f}x" if known else ""
                    cpu = sum(per_process.values())
                    print(f"{count:>9} {concurrency:>4} {rps:>9.0f} {ratio:>6} {cpu:>7.0f}",
                          flush=True)
        for concurrency in args.concurrency:
            rps, _, _ = run(args.perf_analyzer, triton_url.removeprefix("http://"), "http",
                            concurrency, args.seconds, CpuMeter({}))
            print(f"{'direct':>9} {concurrency:>4} {rps:>9.0f}", flush=True)
        print(f"load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
