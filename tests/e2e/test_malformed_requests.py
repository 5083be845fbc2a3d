"""No 5xx for a client's mistake, on any service (issue 13, item 7).

Malformed Open Inference Protocol (v2) REST requests, sent through the gateway to every demo
service: each must answer a 4xx with `{"error": "..."}` naming the problem, be counted in the
gateway's /metrics as that 4xx (never as a 5xx), and leave the service serving.

Each malformed request is built from the service's own `GET /v2/models/M` metadata (its real
input names, datatypes and shapes), so that only the one intended thing is wrong.

Expected statuses: every kind here is a malformed request body, which the Open Inference
Protocol answers 400 whoever parses it (our servers, or tritonserver whose parse failures the
gateway turns from 500 into 400, gateway/dataplane/backend_errors.py). None is a 404 (the model
exists), 413 (the bodies are small), 415 or 422 (FastAPI's validation is not on this path).
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.e2e.conftest import Platform

pytestmark = pytest.mark.e2e

SERVICES = ["sklearn-iris", "iris-classifier", "digits-classifier", "tf-digits", "triton-digits",
            "xgboost-iris", "lightgbm-iris"]
JSON = {"content-type": "application/json"}
HEADER_LENGTH = "Inference-Header-Content-Length"


def _png() -> str:
    pixels = (load_digits().images[0] * 255 / 16).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


PNG_B64 = _png()


@dataclass(frozen=True)
class Spec:
    """One input of a model, as its v2 metadata describes it, with a valid batch of one."""

    name: str
    datatype: str
    shape: list[int]  # the metadata's shape with -1 (any) set to 1

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    def data(self, count: int | None = None) -> list[Any]:
        n = self.count if count is None else count
        return [PNG_B64] * n if self.datatype == "BYTES" else [0.5] * n

    def tensor(self, **changes: Any) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape,
                "data": self.data(), **changes}

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            item = PNG_B64.encode()
            return b"".join(len(item).to_bytes(4, "little") + item for _ in range(self.count))
        dtype = {"FP32": "<f4", "FP64": "<f8"}[self.datatype]
        return np.full(self.count, 0.5, dtype=dtype).tobytes()

    def wrong_typed_data(self) -> list[Any]:
        """Data of the wrong JSON type: strings for numbers, numbers for BYTES."""
        return [7] * self.count if self.datatype == "BYTES" else ["abc"] * self.count


@dataclass(frozen=True)
class Service:
    name: str
    inputs: list[Spec]
    outputs: list[str]

    def tensors(self) -> list[dict[str, Any]]:
        return [spec.tensor() for spec in self.inputs]

    def with_first(self, **changes: Any) -> list[dict[str, Any]]:
        """Every input valid but the first, which gets `changes`."""
        return [self.inputs[0].tensor(**changes), *self.tensors()[1:]]


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    status: int = 400


def doc(inputs: list[dict[str, Any]], **extra: Any) -> Request:
    return Request(json.dumps({"inputs": inputs, **extra}).encode())


def binary(service: Service, header_length: Callable[[int, int], str] | None = None,
           first_size: Callable[[int], Any] | None = None,
           first_shape: list[int] | None = None) -> Request:
    """The binary tensor extension: a JSON header then every input's raw bytes; optionally
    with a wrong header length (given the header's and the body's sizes), a wrong
    binary_data_size (given its real one) or a wrong shape for the first input."""
    tensors, blobs = [], []
    for index, spec in enumerate(service.inputs):
        blob = spec.raw()
        size, shape = len(blob), spec.shape
        if index == 0:
            size = first_size(size) if first_size is not None else size
            shape = first_shape if first_shape is not None else shape
        tensors.append({"name": spec.name, "datatype": spec.datatype, "shape": shape,
                        "parameters": {"binary_data_size": size}})
        blobs.append(blob)
    header = json.dumps({"inputs": tensors}).encode()
    body = header + b"".join(blobs)
    length = str(len(header)) if header_length is None else header_length(len(header), len(body))
    return Request(body, {"content-type": "application/octet-stream", HEADER_LENGTH: length})


def nested_ragged(service: Service) -> Request:
    spec = service.inputs[0]
    row = spec.data(2)
    return doc(service.with_first(shape=[2, 2], data=[row, row[:1]]))


def non_utf8(service: Service) -> Request:
    name = service.inputs[0].name.encode()
    body = json.dumps({"inputs": service.tensors()}).encode()
    return Request(body.replace(b'"' + name + b'"', b'"' + name + b'\xff\xfe"', 1))


def literal(word: bytes) -> Callable[[Service], Request]:
    """The first input's data as `word`s (NaN, Infinity): JavaScript, not JSON."""

    def build(service: Service) -> Request:
        spec = service.inputs[0]
        body = json.dumps({"inputs": service.tensors()}).encode()
        data = json.dumps(spec.data()).encode()
        assert data in body
        return Request(body.replace(data, b"[" + b", ".join([word] * spec.count) + b"]", 1))

    return build


def batch(service: Service, size: int) -> list[int]:
    return [size, *service.inputs[0].shape[1:]]


# Each kind: what is wrong, and the request with that one thing wrong for a service.
KINDS: dict[str, Callable[[Service], Request]] = {
    "truncated-json": lambda s: Request(b'{"inputs": ['),
    "inputs-is-an-object": lambda s: Request(b'{"inputs": {}}'),
    "empty-object": lambda s: Request(b"{}"),
    "null": lambda s: Request(b"null"),
    "top-level-array": lambda s: Request(b"[]"),
    "inputs-empty-list": lambda s: doc([]),
    "shape-is-a-string": lambda s: doc(s.with_first(shape="abc")),
    "negative-shape": lambda s: doc(s.with_first(shape=batch(s, -1))),
    "non-integer-shape": lambda s: doc(s.with_first(shape=[1.5, *s.inputs[0].shape[1:]])),
    "shape-far-past-the-data": lambda s: doc(s.with_first(shape=batch(s, 2**40))),
    "too-many-elements": lambda s: doc(s.with_first(data=s.inputs[0].data(s.inputs[0].count + 1))),
    "too-few-elements": lambda s: doc(s.with_first(data=s.inputs[0].data(s.inputs[0].count - 1))),
    "unknown-datatype": lambda s: doc(s.with_first(datatype="FP99")),
    "wrong-typed-data": lambda s: doc(s.with_first(data=s.inputs[0].wrong_typed_data())),
    "nested-ragged-data": nested_ragged,
    "data-missing": lambda s: doc([{k: v for k, v in s.inputs[0].tensor().items() if k != "data"},
                                   *s.tensors()[1:]]),
    "unknown-input-name": lambda s: doc(s.with_first(name="no-such-input")),
    "extra-unknown-input": lambda s: doc([*s.tensors(), s.inputs[0].tensor(name="no-such-input")]),
    "missing-required-input": lambda s: doc(s.tensors()[1:]),
    "duplicate-input": lambda s: doc([*s.tensors(), s.inputs[0].tensor()]),
    "non-utf8-bytes": non_utf8,
    "nan-literal": literal(b"NaN"),
    "infinity-literal": literal(b"Infinity"),
    "byte-order-mark": lambda s: Request(b"\xef\xbb\xbf" + doc(s.tensors()).body),
    "unknown-output": lambda s: doc(s.tensors(), outputs=[{"name": "no-such-output"}]),
    "header-length-not-a-number": lambda s: binary(s, header_length=lambda h, b: "abc"),
    "header-length-past-the-body": lambda s: binary(s, header_length=lambda h, b: str(b + 10)),
    "header-length-negative": lambda s: binary(s, header_length=lambda h, b: "-5"),
    "binary-data-size-negative": lambda s: binary(s, first_size=lambda n: -1),
    "binary-data-size-past-the-body": lambda s: binary(s, first_size=lambda n: n + 1000),
    "binary-batch-of-2**32": lambda s: binary(s, first_shape=batch(s, 2**32)),
    "binary-batch-of-2**32+1": lambda s: binary(s, first_shape=batch(s, 2**32 + 1)),
}

# Where a service does not answer 4xx yet: each needs a change outside this test's reach.
# (What tritonserver mishandles, a shape far past its data, batch sizes of 2**32, NaN,
# Infinity, a byte order mark, non-UTF-8 names, the gateway refuses before forwarding:
# gateway/dataplane/backend_errors.py `v2_request_problem`.)
# Except one kind on purpose: the tabular predictors (scikit-learn, XGBoost, LightGBM) and the
# image transformer take their one input under any name, as KServe's sklearn server and
# MLServer's NumpyRequestCodec do,
# so clients written for those keep working; a renamed input is answered, not refused.
ANY_NAME = {"sklearn-iris", "xgboost-iris", "lightgbm-iris", "digits-classifier"}

CASES = [
    pytest.param(name, kind, id=f"{name}-{kind}")
    for name in SERVICES
    for kind in KINDS
    if not (kind == "unknown-input-name" and name in ANY_NAME)
]


@pytest.fixture(scope="module")
def services(platform: Platform) -> dict[str, Service]:
    found = {}
    for name in SERVICES:
        response = httpx.get(f"{platform.url}/v2/models/{name}", timeout=30)
        assert response.status_code == 200, response.text
        meta = response.json()
        inputs = [Spec(i["name"], i["datatype"], [1 if d < 0 else d for d in i["shape"]])
                  for i in meta["inputs"]]
        found[name] = Service(name, inputs, [o["name"] for o in meta["outputs"]])
    return found


def codes(platform: Platform, service: str) -> dict[str, float]:
    """The gateway's v2 answers for `service` by status code (all revisions), from /metrics."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{platform.url}/metrics", timeout=30).text.splitlines():
        if (line.startswith("modelserve_gateway_requests_total{")
                and f'service="{service}"' in line and 'protocol="v2"' in line):
            code = line.split('code="', 1)[1].split('"', 1)[0]
            counts[code] = counts.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_every_demo_service_takes_the_valid_requests(
    platform: Platform, services: dict[str, Service]
) -> None:
    # The baseline the malformed kinds differ from: JSON and binary, both answer 200.
    for service in services.values():
        for request in (doc(service.tensors()), binary(service)):
            response = httpx.post(f"{platform.url}/v2/models/{service.name}/infer",
                                  content=request.body, headers=request.headers, timeout=30)
            assert response.status_code == 200, (service.name, response.text)
            assert {o["name"] for o in response.json()["outputs"]} <= set(service.outputs)


@pytest.mark.parametrize("name", sorted(ANY_NAME))
def test_a_one_input_server_takes_its_input_under_any_name(
    platform: Platform, services: dict[str, Service], name: str
) -> None:
    service = services[name]
    renamed = doc(service.with_first(name="no-such-input"))
    response = httpx.post(f"{platform.url}/v2/models/{name}/infer", content=renamed.body,
                          headers=renamed.headers, timeout=30)
    assert response.status_code == 200, response.text
    valid = doc(service.tensors())
    expected = httpx.post(f"{platform.url}/v2/models/{name}/infer", content=valid.body,
                          headers=valid.headers, timeout=30)
    assert response.json()["outputs"] == expected.json()["outputs"]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_malformed_v2_request_is_a_client_error(
    platform: Platform, services: dict[str, Service], name: str, kind: str
) -> None:
    service = services[name]
    request = KINDS[kind](service)
    url = f"{platform.url}/v2/models/{name}"
    before = codes(platform, name)
    response = httpx.post(f"{url}/infer", content=request.body, headers=request.headers,
                          timeout=30)
    assert response.status_code == request.status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and error.strip(), response.text
    after = codes(platform, name)
    code = str(request.status)
    assert after.get(code, 0.0) == before.get(code, 0.0) + 1, (before, after)
    assert {c: n for c, n in after.items() if c.startswith("5")} == {
        c: n for c, n in before.items() if c.startswith("5")
    }
    # The service keeps serving.
    assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
    valid = doc(service.tensors())
    response = httpx.post(f"{url}/infer", content=valid.body, headers=valid.headers, timeout=30)
    assert response.status_code == 200, response.text
