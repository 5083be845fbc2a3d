"""Benchmark (not a test): the digits ONNX on NVIDIA Triton (CPU, python backend running ONNX
Runtime), called directly, through our gateway, and through the image transformer, in one run.

    .venv/bin/python loadtests/bench_triton.py
    .venv/bin/python loadtests/bench_triton.py --seconds 10 --connections 1 16 64 --markdown
    .venv/bin/python loadtests/bench_triton.py --models-dir models --batch 8

Three paths, the same requests on the first two (`--batch` 8x8 digits per request, default 1):
1. direct Triton: the wheel's real tritonserver (`servers.triton.tritonserver.TritonServer`)
   on free ports, serving the CPU repository `<models>/triton/` (built by
   `demos.build_all` into a temporary directory, unless `--models-dir` already
   holds it), model `triton-digits`:
   - v2 HTTP JSON: `POST /v2/models/triton-digits/infer`, FP32 [N, 8, 8] as a JSON list;
   - v2 HTTP binary: the same tensor as raw bytes after the JSON header (Triton's binary tensor
     extension, `Inference-Header-Content-Length`), outputs asked for binary as
     `tritonclient.http` does (`binary_data_output`);
   - v2 gRPC: `ModelInfer` with `raw_input_contents`;
2. gateway: the same three to `modelserve up inferenceservices/triton-digits.yaml
   inferenceservices/digits-classifier.yaml` (REST on its HTTP port, `ModelInfer` on its gRPC
   port), which runs its own tritonserver per service;
3. transformer: `digits-classifier` through the same gateway, one 32x32 PNG per digit (the
   image transformer decodes, shrinks to 8x8 and calls its Triton over v2 gRPC):
   - v1 b64: `{"instances": [{"b64": ...}]}` to `/v1/models/digits-classifier:predict`;
   - v2 HTTP BYTES binary: a BYTES [N] tensor of the PNGs (length-prefixed, binary extension);
   - v2 gRPC BYTES: the same tensor as `raw_input_contents` on the gateway's gRPC port.

Every request is built once before the load. REST goes through loadtests/httpload.py, gRPC
through loadtests/grpcload.py (raw message bytes): closed loop, one request in flight per
connection, 1 s warm-up, then `--seconds` measured per row and level, after an unmeasured warm-up
of each path. Each row's request is checked once before its load (the digits, or labels, must be
the dataset's labels for those images; the model fits the digits set exactly): a row that fails
is not loaded, and the exit status is 1.

Prints req/s, images/s, p50 and p99 latency, errors, the CPU the load generator used (in cores:
client and servers share this machine's CPUs), the ratio of req/s to direct Triton HTTP JSON at
the same connections, and for gateway rows the ratio to the same protocol called directly, then
the machine's load average before and after. Traffic goes to 127.0.0.1 only; every start, check
and load has a deadline; servers are stopped with SIGTERM (SIGKILL after a grace period),
SIGTERM or Ctrl-C on the benchmark included.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from grpc import aio  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from demos.triton import DIGITS_MODELS, TRITON_REPOSITORY  # noqa: E402
from loadtests.cpu import cpu_cells, metered  # noqa: E402
from loadtests.grpcload import call_once, run_grpc_load  # noqa: E402
from loadtests.httpload import LoadResult, run_load  # noqa: E402
from loadtests.table import ONE_REPLICA, loadavg, measured_cells, print_table, ratio  # noqa: E402
from servers.kserve_argv import argv_hidden  # noqa: E402
from servers.triton.tritonserver import TritonServer  # noqa: E402
from tests.support import run_platform  # noqa: E402

MODEL = "triton-digits"
CLASSIFIER = "digits-classifier"
MANIFESTS = [ROOT / "inferenceservices" / f"{name}.yaml" for name in (MODEL, CLASSIFIER)]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
HOST = "127.0.0.1"
DIRECT, GATEWAY, TRANSFORMER = "direct Triton", "gateway", "transformer"
REFERENCE = (DIRECT, "v2 HTTP JSON")
FIRST_IMAGE = 3  # the batch is digits[3 : 3 + N]: batch 1 is a 3, not the 0 a stuck model says
DEADLINE_S = 60.0  # beyond warm-up + --seconds, for one load or one check
READY_TIMEOUT_S = 180.0  # for each start: Triton loads its python-backend stubs slowly
WARMUP_S = 2.0  # of unmeasured load on each path before its first row


# --- the requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rest:
    """One REST request: path, body and the extra headers httpload sends with it."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Bodies:
    """Every row's request, built once."""

    expected: list[str]  # the labels of the batch's images
    triton_json: Rest
    triton_binary: Rest
    triton_grpc: bytes
    png_v1: Rest
    png_binary: Rest
    png_grpc: bytes


def png(image: np.ndarray) -> bytes:
    """An 8x8 digit (0..16) as a 32x32 grayscale PNG, the transformer's BOX shrink undoes."""
    pixels = (image * 255 / 16).round().astype(np.uint8)
    resized = Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST)
    out = io.BytesIO()
    resized.save(out, format="PNG")
    return out.getvalue()


def _bytes_tensor(items: list[bytes]) -> bytes:
    """v2 BYTES elements on the wire: 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _binary(path: str, header: dict[str, Any], raw: bytes) -> Rest:
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return Rest(path, encoded + raw, {"Inference-Header-Content-Length": str(len(encoded))})


def _grpc_request(model: str, name: str, datatype: str, shape: list[int], raw: bytes) -> bytes:
    with argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb2
    return pb2.ModelInferRequest(
        model_name=model,
        inputs=[pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype,
                                                       shape=shape)],
        raw_input_contents=[raw],
    ).SerializeToString()


def build_bodies(batch: int) -> Bodies:
    data = load_digits()
    index = [(FIRST_IMAGE + i) % len(data.images) for i in range(batch)]
    images = data.images[index].astype(np.float32)
    pngs = [png(image) for image in images]
    shape = list(images.shape)
    raw = np.ascontiguousarray(images, dtype="<f4").tobytes()
    infer = f"/v2/models/{MODEL}/infer"
    triton_json = json.dumps(
        {"inputs": [{"name": "images", "datatype": "FP32", "shape": shape,
                     "data": images.ravel().tolist()}]},
        separators=(",", ":"),
    ).encode()
    triton_binary = _binary(infer, {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": shape,
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }, raw)
    v1 = json.dumps({"instances": [{"b64": base64.b64encode(p).decode()} for p in pngs]},
                    separators=(",", ":")).encode()
    png_raw = _bytes_tensor(pngs)
    png_binary = _binary(f"/v2/models/{CLASSIFIER}/infer", {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [batch],
                    "parameters": {"binary_data_size": len(png_raw)}}],
        "parameters": {"binary_data_output": True},
    }, png_raw)
    return Bodies(
        expected=[str(int(t)) for t in data.target[index]],
        triton_json=Rest(infer, triton_json, {}),
        triton_binary=triton_binary,
        triton_grpc=_grpc_request(MODEL, "images", "FP32", shape, raw),
        png_v1=Rest(f"/v1/models/{CLASSIFIER}:predict", v1, {}),
        png_binary=png_binary,
        png_grpc=_grpc_request(CLASSIFIER, "image", "BYTES", [batch], png_raw),
    )


# --- reading the answers -------------------------------------------------------------------------

_DTYPES = {"INT64": "<i8", "INT32": "<i4", "FP32": "<f4", "FP64": "<f8"}


def _values(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            items.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return items
    return np.frombuffer(raw, dtype=_DTYPES[datatype]).tolist()


def _labels(outputs: dict[str, list[Any]]) -> list[str]:
    """The answer as labels: the transformer's `label`, or Triton's `digit` ([N, 1])."""
    if "label" in outputs:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["label"]]
    if "digit" in outputs:
        return [str(int(v)) for v in outputs["digit"]]
    raise RuntimeError(f"no 'label' or 'digit' output in {sorted(outputs)}")


def _rest_labels(response: httpx.Response) -> list[str]:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    body = response.content
    length = response.headers.get("inference-header-content-length")
    doc = json.loads(body[: int(length)] if length else body)
    if "predictions" in doc:  # v1
        return [str(p["label"]) for p in doc["predictions"]]
    outputs: dict[str, list[Any]] = {}
    offset = int(length) if length else 0
    for output in doc["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = np.asarray(output["data"], dtype=object).ravel().tolist()
        else:
            outputs[output["name"]] = _values(output["datatype"], body[offset : offset + size])
            offset += size
    return _labels(outputs)


def _grpc_labels(answer_bytes: bytes) -> list[str]:
    with argv_hidden():
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb2
    answer = pb2.ModelInferResponse.FromString(answer_bytes)
    outputs: dict[str, list[Any]] = {}
    for index, output in enumerate(answer.outputs):
        if answer.raw_output_contents:
            outputs[output.name] = _values(output.datatype, answer.raw_output_contents[index])
        elif output.datatype == "BYTES":
            outputs[output.name] = list(output.contents.bytes_contents)
        else:
            outputs[output.name] = list(output.contents.int64_contents)
    return _labels(outputs)


# --- the rows: one checked call, and the load ----------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where one server (Triton, or the gateway) listens."""

    http_port: int
    grpc_port: int
    # Processes whose CPU per request is measured: alone (the gateway, whose children are the
    # components) and with their children (tritonserver and its python-backend stubs).
    own: dict[str, int] = field(default_factory=dict)
    trees: dict[str, int] = field(default_factory=dict)

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"


Check = Callable[[Endpoint, Bodies], Awaitable[list[str]]]
Load = Callable[[Endpoint, Bodies, int, float], Awaitable[LoadResult]]


def _rest_row(pick: Callable[[Bodies], Rest]) -> tuple[Check, Load]:
    async def check(endpoint: Endpoint, bodies: Bodies) -> list[str]:
        rest = pick(bodies)
        # The headers httpload sends: the servers go by Inference-Header-Content-Length.
        async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
            response = await client.post(
                f"http://{HOST}:{endpoint.http_port}{rest.path}", content=rest.body,
                headers={"Content-Type": "application/json", "Accept-Encoding": "identity",
                         **rest.headers},
            )
        return _rest_labels(response)

    def load(endpoint: Endpoint, bodies: Bodies, conns: int, secs: float) -> Awaitable[LoadResult]:
        rest = pick(bodies)
        return run_load(HOST, endpoint.http_port, rest.path, rest.body, conns, secs,
                        headers=rest.headers)

    return check, load


def _grpc_row(pick: Callable[[Bodies], bytes]) -> tuple[Check, Load]:
    async def check(endpoint: Endpoint, bodies: Bodies) -> list[str]:
        return _grpc_labels(await call_once(endpoint.grpc_target, MODEL_INFER, pick(bodies),
                                            DEADLINE_S))

    def load(endpoint: Endpoint, bodies: Bodies, conns: int, secs: float) -> Awaitable[LoadResult]:
        return run_grpc_load(endpoint.grpc_target, MODEL_INFER, pick(bodies), conns, secs)

    return check, load


@dataclass(frozen=True)
class Row:
    name: str
    check: Check
    load: Load


TRITON_ROWS = [
    Row("v2 HTTP JSON", *_rest_row(lambda b: b.triton_json)),
    Row("v2 HTTP binary", *_rest_row(lambda b: b.triton_binary)),
    Row("v2 gRPC", *_grpc_row(lambda b: b.triton_grpc)),
]
TRANSFORMER_ROWS = [
    Row("v1 PNG b64", *_rest_row(lambda b: b.png_v1)),
    Row("v2 HTTP BYTES binary", *_rest_row(lambda b: b.png_binary)),
    Row("v2 gRPC BYTES", *_grpc_row(lambda b: b.png_grpc)),
]

# (path, row) -> {connections: result}; (path, row) -> why it was not loaded
Results = dict[tuple[str, str], dict[int, LoadResult]]
Failures = dict[tuple[str, str], str]
# (path, row, connections) -> CPU the load generator (this process) used, in cores
ClientCPU = dict[tuple[str, str, int], float]
# (path, row, connections) -> µs of CPU a request, per measured process
ServerCPU = dict[tuple[str, str, int], dict[str, float]]
CPU_COLUMNS = ["gateway", "transformer", "triton"]


@dataclass
class Run:
    bodies: Bodies
    levels: list[int]
    seconds: float
    results: Results
    failures: Failures
    client_cpu: ClientCPU
    server_cpu: ServerCPU = field(default_factory=dict)


async def measure(run: Run, via: str, endpoint: Endpoint, rows: list[Row]) -> None:
    # Unmeasured: a fresh server's first seconds (stubs, allocations, caches) would otherwise
    # count against whichever row comes first.
    print(f"… {via}: warming up", file=sys.stderr, flush=True)
    try:
        await asyncio.wait_for(rows[0].check(endpoint, run.bodies), DEADLINE_S)
        await asyncio.wait_for(rows[0].load(endpoint, run.bodies, max(run.levels), WARMUP_S),
                               1 + WARMUP_S + DEADLINE_S)
    except Exception:  # the first row's own check below reports what is wrong
        pass
    for row in rows:
        key = (via, row.name)
        print(f"… {via}: {row.name}", file=sys.stderr, flush=True)
        try:
            labels = await asyncio.wait_for(row.check(endpoint, run.bodies), DEADLINE_S)
        except aio.AioRpcError as exc:
            run.failures[key] = f"gRPC {exc.code().name}: {exc.details()}"
            continue
        except Exception as exc:  # reported below; that row is not loaded
            run.failures[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if labels != run.bodies.expected:
            run.failures[key] = f"answered {labels} != expected {run.bodies.expected}"
            continue
        for connections in run.levels:
            wall, cpu = time.perf_counter(), time.process_time()
            load = asyncio.wait_for(row.load(endpoint, run.bodies, connections, run.seconds),
                                    1 + run.seconds + DEADLINE_S)
            result, used = await metered(endpoint.own, endpoint.trees, load)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            run.results.setdefault(key, {})[connections] = result
            run.client_cpu[(*key, connections)] = cpu / wall if wall else 0.0
            run.server_cpu[(*key, connections)] = used


# --- servers -------------------------------------------------------------------------------------


def has_repository(models_root: Path) -> bool:
    repository = models_root / TRITON_REPOSITORY
    return (repository / "metadata.json").is_file() and all(
        (repository / name / "config.pbtxt").is_file() for name in DIGITS_MODELS
    )


def wait_models_ready(base_url: str, names: list[str], process: Any, timeout: float) -> None:
    """Poll each model's v2 ready endpoint on the gateway until 200, within `timeout`."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        for name in names:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"modelserve up exited with {process.returncode}")
                try:
                    if client.get(f"{base_url}/v2/models/{name}/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready through the gateway after {timeout:g} s")
                time.sleep(0.25)


@contextmanager
def gateway(models_root: Path, logs: Path) -> Iterator[tuple[Endpoint, Endpoint]]:
    """`modelserve up` with the two Triton manifests; both services ready (or an error).
    The same door twice: metered for triton-digits, and for digits-classifier's pipeline."""
    with run_platform(models_root, logs, files=MANIFESTS, env=ONE_REPLICA) as platform:
        try:
            wait_models_ready(platform.url, [MODEL, CLASSIFIER], platform.process,
                              READY_TIMEOUT_S)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{platform.log.read_text()[-4000:]}") from None
        door = {"gateway": platform.process.pid}
        triton = platform.component_pids(MODEL)["predictor"]
        classifier = platform.component_pids(CLASSIFIER)
        yield (
            Endpoint(platform.port, platform.grpc_port, door, {"triton": triton}),
            Endpoint(platform.port, platform.grpc_port, door,
                     {"transformer": classifier["transformer"],
                      "triton": classifier["predictor"]}),
        )


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started here is stopped."""
    def handler(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def run_async(work: Awaitable[None]) -> None:
    """`asyncio.run(work)`; SIGTERM meanwhile cancels it and then unwinds like Ctrl-C."""
    async def guarded() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await work
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("signal 15") from None
    _stop_on_sigterm()  # remove_signal_handler left SIGTERM at its default


# --- the table -----------------------------------------------------------------------------------




def table_rows(run: Run, batch: int) -> list[list[str]]:
    rows = []
    for (via, name), levels in run.results.items():
        for connections, result in levels.items():
            reference = run.results.get(REFERENCE, {}).get(connections)
            direct = run.results.get((DIRECT, name), {}).get(connections) if via == GATEWAY \
                else None
            cpu = run.client_cpu.get((via, name, connections), 0)
            server = run.server_cpu.get((via, name, connections), {})
            rows.append([
                via, name, str(connections), *measured_cells(result, batch, cpu),
                ratio(result, reference), ratio(result, direct),
                *cpu_cells(server, CPU_COLUMNS),
            ])
    return rows


HEADER = ["path", "protocol", "conns", "req/s", "images/s", "p50 ms", "p99 ms", "errors",
          "client cpu", "vs direct Triton HTTP JSON", "vs direct same protocol",
          *(f"{c} us/req" for c in CPU_COLUMNS)]






def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[16])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=1, help="digits (images) per request")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="reuse this models directory if it holds triton/ "
                        "(default: build the demo models into a temporary directory)")
    parser.add_argument("--no-gateway", action="store_true",
                        help="only Triton called directly, not through `modelserve up`")
    args = parser.parse_args()
    if not all(c >= 1 for c in args.connections) or not 0 < args.seconds <= 600:
        parser.error("--connections must be >= 1 and --seconds in (0, 600]")
    if not 1 <= args.batch <= 64:
        parser.error("--batch must be in 1..64 (the models' max_batch_size)")
    _stop_on_sigterm()
    run = Run(build_bodies(args.batch), args.connections, args.seconds, {}, {}, {})
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench_triton_") as tmp:
        logs = Path(tmp)
        models_root = args.models_dir.resolve() if args.models_dir else None
        if models_root is None or not has_repository(models_root):
            print("… building the demo models", file=sys.stderr, flush=True)
            from demos import build_all

            models_root = Path(tmp) / "models"
            build_all(models_root)
            if not has_repository(models_root):
                print("error: build_all wrote no Triton repository (needs the tensorflow and "
                      "triton extras: make install)", file=sys.stderr)
                return 1
        print(f"… starting tritonserver on {models_root / TRITON_REPOSITORY}", file=sys.stderr,
              flush=True)
        with (logs / "tritonserver.log").open("wb") as log, TritonServer(
            models_root / TRITON_REPOSITORY, log=log, ready_timeout_s=READY_TIMEOUT_S,
        ) as triton:
            assert triton.process is not None
            direct = Endpoint(triton.http_port, triton.grpc_port, {},
                              {"triton": triton.process.pid})
            run_async(measure(run, DIRECT, direct, TRITON_ROWS))
        if not args.no_gateway:
            print("… starting modelserve up", file=sys.stderr, flush=True)
            with gateway(models_root, logs) as (to_triton, to_classifier):
                run_async(measure(run, GATEWAY, to_triton, TRITON_ROWS))
                run_async(measure(run, TRANSFORMER, to_classifier, TRANSFORMER_ROWS))
    print(f"\n{MODEL} on Triton (CPU): {args.batch} image(s) per request (digits "
          f"{''.join(run.bodies.expected)}); {args.seconds:g} s per level after 1 s warm-up")
    print_table(HEADER, table_rows(run, args.batch), args.markdown)
    print(f"load average (1/5/15 min): {load_before} before, {loadavg()} after")
    for (via, name), reason in run.failures.items():
        print(f"NOT MEASURED {via}: {name}: {reason}")
    empty = any(math.isnan(r.percentile(50)) for lv in run.results.values() for r in lv.values())
    return 1 if run.failures or empty else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers are stopped by now (context managers)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
