"""Benchmark (not a test): the TensorFlow digits predictor (`python -m servers.tensorflow`) over
each protocol it speaks, with the same batch of 32 digits images, in one run; then the same
protocols through the gateway (`modelserve up inferenceservices/tf-digits.yaml`).

    .venv/bin/python loadtests/bench_tensorflow.py
    .venv/bin/python loadtests/bench_tensorflow.py --seconds 10 --connections 1 16 64 --markdown

Protocols, each request built once before the load:
- v2 REST JSON: `POST /v2/models/tf-digits/infer`, FP32 [32, 8, 8] as a JSON list;
- v2 REST binary: the same tensor as raw bytes after the JSON header
  (`Inference-Header-Content-Length`, loadtests/bodies.py);
- v2 gRPC: `ModelInfer` with `raw_input_contents`;
- TF Serving gRPC: `PredictionService/Predict`, a PredictRequest with `tensor_content`.
REST goes through loadtests/httpload.py, gRPC through loadtests/grpcload.py (grpc.aio, raw
message bytes): closed loop, one request in flight per connection, 1 s warm-up, then
`--seconds` measured per protocol and level. Every protocol's answer is checked once before its
load (the digits equal the SavedModel's own answer, computed in this process); a protocol that
fails the check is not loaded, and the exit status is 1.

Prints req/s, images/s, p50 and p99 latency, errors, the CPU the load generator itself used
(in cores: client and servers share this machine's CPUs), the ratio of req/s to v2 REST JSON
over the same path at the same connections, and for gateway rows the ratio to the same protocol
called directly. The predictor runs with the flags of inferenceservices/tf-digits.yaml (its adaptive
batching). Traffic goes to 127.0.0.1 only; every load and start-up has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from grpc import aio  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from demos import build_all  # noqa: E402
from gateway.loadgen.bodies import PREDICT_METHOD, encode_predict_request  # noqa: E402
from loadtests.cpu import cpu_cells, metered  # noqa: E402
from loadtests.grpcload import call_once, run_grpc_load  # noqa: E402
from loadtests.httpload import LoadResult, run_load  # noqa: E402
from loadtests.table import ONE_REPLICA, measured_cells, print_table, ratio  # noqa: E402
from servers.kserve_argv import argv_hidden  # noqa: E402
from tests.support import run_platform, run_server  # noqa: E402

MODEL = "tf-digits"
BATCH = 32
MANIFEST = ROOT / "inferenceservices" / f"{MODEL}.yaml"
V2_PATH = f"/v2/models/{MODEL}/infer"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
REFERENCE = "v2 REST JSON"
HOST = "127.0.0.1"
DEADLINE_S = 60.0  # beyond warm-up + --seconds, for one load or one check
WARMUP_S = 2.0  # of unmeasured load on each server before the first protocol


@dataclass(frozen=True)
class Endpoint:
    """Where one server (the predictor, or the gateway) listens."""

    via: str  # "direct" or "gateway"
    http_port: int
    grpc_port: int
    # Processes whose CPU per request is measured: alone (the gateway, whose children are the
    # components) and with their children (the predictor).
    own: dict[str, int] = field(default_factory=dict)
    trees: dict[str, int] = field(default_factory=dict)

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"


@dataclass(frozen=True)
class Bodies:
    """The batch and every protocol's request for it, built once."""

    images: np.ndarray
    v2_json: bytes
    v2_binary: bytes
    v2_binary_header_length: int
    v2_grpc: bytes
    tfserving: bytes


def build_bodies(images: np.ndarray) -> Bodies:
    with argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb2
    shape = list(images.shape)
    raw = np.ascontiguousarray(images, dtype="<f4").tobytes()
    v2_json = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": shape,
                     "data": images.ravel().tolist()}]},
        separators=(",", ":"),
    ).encode()
    header = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": shape,
                     "parameters": {"binary_data_size": len(raw)}}]},
        separators=(",", ":"),
    ).encode()
    grpc_request = pb2.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb2.ModelInferRequest.InferInputTensor(name="images", datatype="FP32",
                                                       shape=shape)],
        raw_input_contents=[raw],
    )
    return Bodies(
        images=images,
        v2_json=v2_json,
        v2_binary=header + raw,
        v2_binary_header_length=len(header),
        v2_grpc=grpc_request.SerializeToString(),
        tfserving=encode_predict_request(MODEL, {"images": images}, "serving_default"),
    )


# --- each protocol: one checked call, and the load ----------------------------------------------


def _rest_digits(response: httpx.Response) -> list[int]:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    body = response.content
    length = response.headers.get("inference-header-content-length")
    doc = json.loads(body[: int(length)] if length else body)
    offset = int(length) if length else 0
    for output in doc["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if output["name"] == "digit":
            if size is None:
                return [int(d) for d in output["data"]]
            return np.frombuffer(body[offset : offset + size], dtype="<i8").tolist()
        offset += size or 0
    raise RuntimeError(f"no 'digit' output in {sorted(o['name'] for o in doc['outputs'])}")


async def _check_v2_json(endpoint: Endpoint, bodies: Bodies) -> list[int]:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        response = await client.post(
            f"http://{HOST}:{endpoint.http_port}{V2_PATH}", content=bodies.v2_json,
            headers={"Content-Type": "application/json"},
        )
    return _rest_digits(response)


def _binary_headers(bodies: Bodies) -> dict[str, str]:
    return {"Inference-Header-Content-Length": str(bodies.v2_binary_header_length)}


async def _check_v2_binary(endpoint: Endpoint, bodies: Bodies) -> list[int]:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        response = await client.post(
            f"http://{HOST}:{endpoint.http_port}{V2_PATH}", content=bodies.v2_binary,
            headers={"Content-Type": "application/octet-stream", **_binary_headers(bodies)},
        )
    return _rest_digits(response)


async def _check_v2_grpc(endpoint: Endpoint, bodies: Bodies) -> list[int]:
    with argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb2
    answer = pb2.ModelInferResponse.FromString(
        await call_once(endpoint.grpc_target, MODEL_INFER, bodies.v2_grpc, DEADLINE_S)
    )
    for index, output in enumerate(answer.outputs):
        if output.name == "digit":
            if answer.raw_output_contents:
                raw = answer.raw_output_contents[index]
                return np.frombuffer(raw, dtype="<i8").tolist()
            return list(output.contents.int64_contents)
    raise RuntimeError(f"no 'digit' output in {[o.name for o in answer.outputs]}")


async def _check_tfserving(endpoint: Endpoint, bodies: Bodies) -> list[int]:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    answer = predict_pb2.PredictResponse.FromString(
        await call_once(endpoint.grpc_target, PREDICT_METHOD, bodies.tfserving, DEADLINE_S)
    )
    if "digit" not in answer.outputs:
        raise RuntimeError(f"no 'digit' output in {sorted(answer.outputs)}")
    return [int(d) for d in tf.make_ndarray(answer.outputs["digit"])]


def _load_v2_json(
    endpoint: Endpoint, bodies: Bodies, conns: int, secs: float
) -> Awaitable[LoadResult]:
    return run_load(HOST, endpoint.http_port, V2_PATH, bodies.v2_json, conns, secs)


def _load_v2_binary(
    endpoint: Endpoint, bodies: Bodies, conns: int, secs: float
) -> Awaitable[LoadResult]:
    # httpload sends Content-Type: application/json; the server goes by the header length.
    return run_load(HOST, endpoint.http_port, V2_PATH, bodies.v2_binary, conns, secs,
                    headers=_binary_headers(bodies))


def _load_v2_grpc(
    endpoint: Endpoint, bodies: Bodies, conns: int, secs: float
) -> Awaitable[LoadResult]:
    return run_grpc_load(endpoint.grpc_target, MODEL_INFER, bodies.v2_grpc, conns, secs)


def _load_tfserving(
    endpoint: Endpoint, bodies: Bodies, conns: int, secs: float
) -> Awaitable[LoadResult]:
    return run_grpc_load(endpoint.grpc_target, PREDICT_METHOD, bodies.tfserving, conns, secs)


@dataclass(frozen=True)
class Protocol:
    name: str
    check: Callable[[Endpoint, Bodies], Awaitable[list[int]]]
    load: Callable[[Endpoint, Bodies, int, float], Awaitable[LoadResult]]


PROTOCOLS = [
    Protocol(REFERENCE, _check_v2_json, _load_v2_json),
    Protocol("v2 REST binary", _check_v2_binary, _load_v2_binary),
    Protocol("v2 gRPC", _check_v2_grpc, _load_v2_grpc),
    Protocol("TF Serving gRPC", _check_tfserving, _load_tfserving),
]

# (via, protocol) -> {connections: result}; (via, protocol) -> why it was not loaded
Results = dict[tuple[str, str], dict[int, LoadResult]]
Failures = dict[tuple[str, str], str]
# (via, protocol, connections) -> CPU the load generator (this process) used, in cores
ClientCPU = dict[tuple[str, str, int], float]
# (via, protocol, connections) -> µs of CPU a request, per measured process
ServerCPU = dict[tuple[str, str, int], dict[str, float]]
CPU_COLUMNS = ["gateway", "predictor"]


async def measure(
    endpoint: Endpoint, bodies: Bodies, expected: list[int], levels: list[int], seconds: float,
    results: Results, failures: Failures, client_cpu: ClientCPU, server_cpu: ServerCPU,
) -> None:
    # Unmeasured: the first seconds of a fresh server (allocations, lazy imports, caches) would
    # otherwise count against whichever protocol comes first.
    print(f"… {endpoint.via}: warming up", file=sys.stderr, flush=True)
    await asyncio.wait_for(
        run_load(HOST, endpoint.http_port, V2_PATH, bodies.v2_json, max(levels), WARMUP_S, 0),
        WARMUP_S + DEADLINE_S,
    )
    for protocol in PROTOCOLS:
        key = (endpoint.via, protocol.name)
        print(f"… {endpoint.via}: {protocol.name}", file=sys.stderr, flush=True)
        try:
            digits = await asyncio.wait_for(protocol.check(endpoint, bodies), DEADLINE_S)
        except aio.AioRpcError as exc:
            failures[key] = f"gRPC {exc.code().name}: {exc.details()}"
            continue
        except Exception as exc:  # reported below; that protocol is not loaded
            failures[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if digits != expected:
            failures[key] = f"digits {digits} != expected {expected}"
            continue
        for connections in levels:
            wall, cpu = time.perf_counter(), time.process_time()
            load = asyncio.wait_for(protocol.load(endpoint, bodies, connections, seconds),
                                    1 + seconds + DEADLINE_S)
            result, used = await metered(endpoint.own, endpoint.trees, load)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results.setdefault(key, {})[connections] = result
            client_cpu[(*key, connections)] = cpu / wall if wall else 0.0
            server_cpu[(*key, connections)] = used


# --- servers ------------------------------------------------------------------------------------


def predictor_args(model_dir: Path) -> list[str]:
    """The manifest's predictor flags (batching etc.), with this run's model directory."""
    args = [f"--model_name={MODEL}", "--max_batch_size=64", "--max_batch_latency_us=0"]
    if MANIFEST.is_file():
        doc = yaml.safe_load(MANIFEST.read_text())
        args = list(doc["spec"]["predictor"]["containers"][0].get("args", []))
    own = ("--model_dir", "--http_port", "--grpc_port")
    return [a for a in args if not a.startswith(own)] + [f"--model_dir={model_dir}"]


@contextmanager
def run_gateway(models_root: Path, logs: Path) -> Iterator[Endpoint]:
    """`modelserve up inferenceservices/tf-digits.yaml` on free ports, stopped with SIGTERM."""
    with run_platform(models_root, logs, [MANIFEST], env=ONE_REPLICA) as platform:
        yield Endpoint("gateway", platform.port, platform.grpc_port,
                       {"gateway": platform.process.pid}, platform.component_pids(MODEL))


def reference_digits(model_dir: Path, images: np.ndarray) -> list[int]:
    """What the SavedModel itself answers for `images`."""
    import tensorflow as tf

    function = tf.saved_model.load(str(model_dir / "1")).signatures["serving_default"]
    return [int(d) for d in function(images=tf.constant(images))["digit"].numpy()]


# --- the table ----------------------------------------------------------------------------------




def table_rows(
    results: Results, client_cpu: ClientCPU, server_cpu: ServerCPU
) -> list[list[str]]:
    rows = []
    for (via, name), levels in results.items():
        for connections, result in levels.items():
            same_via = results.get((via, REFERENCE), {}).get(connections)
            direct = None if via == "direct" else results.get(("direct", name), {}).get(connections)
            cpu = client_cpu.get((via, name, connections), 0)
            server = server_cpu.get((via, name, connections), {})
            rows.append([
                name, via, str(connections), *measured_cells(result, BATCH, cpu),
                ratio(result, same_via), ratio(result, direct),
                *cpu_cells(server, CPU_COLUMNS),
            ])
    return rows


HEADER = ["protocol", "via", "conns", "req/s", "images/s", "p50 ms", "p99 ms", "errors",
          "client cpu", "vs v2 JSON", "vs direct", *(f"{c} us/req" for c in CPU_COLUMNS)]




def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[16])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--no-gateway", action="store_true",
                        help="only the predictor called directly, not through `modelserve up`")
    args = parser.parse_args()
    if not all(c >= 1 for c in args.connections) or not 0 < args.seconds <= 600:
        parser.error("--connections must be >= 1 and --seconds in (0, 600]")
    data = load_digits()
    images = data.images[:BATCH].astype(np.float32)
    bodies = build_bodies(images)
    results: Results = {}
    failures: Failures = {}
    client_cpu: ClientCPU = {}
    server_cpu: ServerCPU = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("… building the demo models", file=sys.stderr, flush=True)
        models_root = Path(tmp) / "models"
        model_dir = next(d for d in build_all(models_root) if d.name == "digits-tf")
        expected = reference_digits(model_dir, images)
        logs = Path(tmp)
        with run_server("servers.tensorflow", predictor_args(model_dir), logs) as server:
            direct = Endpoint("direct", server.http_port, server.grpc_port, {},
                              {"predictor": server.process.pid})
            asyncio.run(measure(direct, bodies, expected, args.connections, args.seconds,
                                results, failures, client_cpu, server_cpu))
        if not args.no_gateway:
            with run_gateway(models_root, logs) as gateway:
                asyncio.run(measure(gateway, bodies, expected, args.connections, args.seconds,
                                    results, failures, client_cpu, server_cpu))
    labelled = sum(int(a == b) for a, b in zip(expected, data.target[:BATCH], strict=True))
    print(f"\n{MODEL}: {BATCH} images per request ({labelled}/{BATCH} predicted as labelled), "
          f"{args.seconds:g} s per level after 1 s warm-up")
    print_table(HEADER, table_rows(results, client_cpu, server_cpu), args.markdown)
    for (via, name), reason in failures.items():
        print(f"NOT MEASURED {via}: {name}: {reason}")
    empty = any(math.isnan(r.percentile(50)) for lv in results.values() for r in lv.values())
    return 1 if failures or empty else 0


if __name__ == "__main__":
    sys.exit(main())
