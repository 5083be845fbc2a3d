"""The Open Inference Protocol's REST specification against the gateway (issue 13).

schemathesis reads the spec (tests/data/open_inference_rest.yaml, upstream's file with its path
keys fixed: see its header) and, for every demo service, sends generated requests to each of
its operations through the gateway with the model name fixed to that service and the version
to the first one its metadata lists. Every response must pass:

- `not_a_server_error`: no 5xx;
- `response_schema_conformance`: a documented status's body matches the spec's schema;
- `status_code_conformance`: the status is one the spec documents. With the model name and
  version fixed to ones that are served, that is meaningful: the spec documents 200 for every
  operation and 400 for a failed inference (the prose, inference_rest.md, allows "typically
  400"; none of the generated requests is too large, of another media type, or for a model
  that is not served, so nothing else is expected);
- `strict_json` (ours): an `application/json` body is JSON (RFC 8259). schemathesis parses
  bodies with Python's `json`, which takes `NaN` and `Infinity`, which no JSON has.

The spec has only the versioned paths of model metadata, model ready and inference; the prose
makes the version optional, so the schema run here also has the unversioned operations,
derived in memory from the versioned ones (the file stays upstream's). The server-level
operations (health, server metadata) name no model: each service runs them with its
Knative-style Host header, and the gateway's own are run once without one.

Requests: schemathesis' positive and negative generation from the spec's schemas, and, for
inference, requests the spec allows that are shaped after the service's own metadata (its
input names, datatypes and shapes, with data of the right length and within the datatype's
range), so that they reach the model rather than stop at the first name check, after the
valid requests of each service; `test_float_overflow` sends floats at and past their
datatype's range. Generation is bounded (a few examples an operation), deterministic
(derandomized, no example database) and never shrinks; every failing response of a run is
reported, not only the first. Redirects are followed to the same origin only (as
schemathesis' own session does). What the runs found is fixed (GET /v2/ by Host, NaN spelt
as null, tritonserver's bare NaN tokens): nothing here is expected to fail.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case, CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from sklearn.datasets import load_digits

from tests.e2e.conftest import Platform

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).resolve().parent.parent / "data" / "open_inference_rest.yaml"
SERVICES = ["sklearn-iris", "iris-classifier", "digits-classifier", "tf-digits", "triton-digits"]
HOST = "{}.default.example.com"  # the Knative-style host of a service (README)
TIMEOUT = 30

# Examples generated per run of one operation: small, so that the module stays short.
GET_EXAMPLES = 3  # the GET operations have nothing left to generate once the path is fixed
INFER_EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 12}
MODEL_EXAMPLES = 20


def strict_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """An `application/json` body must be JSON: no `NaN`, `Infinity` or `-Infinity`."""
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    if media_type != "application/json" or not response.content:
        return None

    def refuse(constant: str) -> Any:
        raise AssertionError(f"the body is not JSON (RFC 8259): it has a bare {constant}")

    json.loads(response.content, parse_constant=refuse)
    return None


CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, strict_json]


# -- the schema ------------------------------------------------------------------------------
VERSION = "/versions/{model_version}"


def with_unversioned(doc: dict[str, Any]) -> dict[str, Any]:
    """The spec plus, for each versioned model path, the same operation without the version."""
    doc = copy.deepcopy(doc)
    for path, item in list(doc["paths"].items()):
        if VERSION not in path:
            continue
        twin = copy.deepcopy(item)
        twin["parameters"] = [p for p in twin["parameters"] if p["name"] != "model_version"]
        for method in ("get", "post"):
            if method in twin:
                twin[method]["operationId"] += "-unversioned"
        doc["paths"][path.replace(VERSION, "")] = twin
    return doc


SCHEMA = schemathesis.openapi.from_dict(
    with_unversioned(yaml.safe_load(SPEC.read_text())), config=schemathesis.Config()
)


@dataclass(frozen=True)
class Operation:
    name: str  # the test id
    method: str
    path: str

    @property
    def versioned(self) -> bool:
        return VERSION in self.path


SERVER_OPERATIONS = [
    Operation("health-live", "GET", "/v2/health/live"),
    Operation("health-ready", "GET", "/v2/health/ready"),
    Operation("server-metadata", "GET", "/v2/"),
]
MODEL_OPERATIONS = [
    Operation("model-metadata-versioned", "GET", "/v2/models/{model_name}" + VERSION),
    Operation("model-ready-versioned", "GET", "/v2/models/{model_name}" + VERSION + "/ready"),
    Operation("model-metadata", "GET", "/v2/models/{model_name}"),
    Operation("model-ready", "GET", "/v2/models/{model_name}/ready"),
]
INFER_OPERATIONS = [
    Operation("infer-versioned", "POST", "/v2/models/{model_name}" + VERSION + "/infer"),
    Operation("infer", "POST", "/v2/models/{model_name}/infer"),
]


def test_the_schema_is_valid_and_has_every_operation_tested_here() -> None:
    schemathesis.openapi.from_path(SPEC, config=schemathesis.Config()).validate()
    SCHEMA.validate()
    loaded = list(SCHEMA.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded), loaded  # a valid OpenAPI document
    operations = {(r.ok().method.upper(), r.ok().path) for r in loaded if isinstance(r, Ok)}
    tested = {(o.method, o.path) for o in SERVER_OPERATIONS + MODEL_OPERATIONS + INFER_OPERATIONS}
    assert operations == tested


# -- valid requests of each service ----------------------------------------------------------
def _png_b64(index: int) -> str:
    pixels = (load_digits().images[index] * 255 / 16).round().astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.NEAREST).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


_DIGIT = load_digits().images[3].astype(float).ravel().tolist()
_IRIS = {"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2}
VALID_INPUTS: dict[str, list[dict[str, Any]]] = {
    "sklearn-iris": [
        {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": list(_IRIS.values())}
    ],
    "iris-classifier": [
        {"name": name, "datatype": "FP64", "shape": [1], "data": [value]}
        for name, value in _IRIS.items()
    ],
    "digits-classifier": [
        {"name": "image", "datatype": "BYTES", "shape": [1], "data": [_png_b64(7)]}
    ],
    "tf-digits": [{"name": "images", "datatype": "FP32", "shape": [1, 8, 8], "data": _DIGIT}],
    "triton-digits": [
        {"name": "images", "datatype": "FP32", "shape": [1, 8, 8], "data": _DIGIT}
    ],
}


def valid_requests(service: str, outputs: list[str]) -> list[dict[str, Any]]:
    """The service's valid request, and the same with each optional member of the spec's."""
    inputs = VALID_INPUTS[service]
    return [
        {"inputs": inputs},
        {"id": "42", "parameters": {}, "inputs": [{**i, "parameters": {}} for i in inputs]},
        {"inputs": inputs, "outputs": [{"name": outputs[-1]}]},
        {"inputs": inputs, "outputs": [{"name": name, "parameters": {}} for name in outputs]},
        {"inputs": inputs, "parameters": {"binary_data_output": False}},
    ]


# -- requests shaped after a model's metadata ------------------------------------------------
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]
FLOAT_WIDTHS: dict[str, Literal[16, 32, 64]] = {"FP16": 16, "FP32": 32, "BF16": 32, "FP64": 64}
LARGEST = {16: float(np.finfo(np.float16).max), 32: float(np.finfo(np.float32).max),
           64: float(np.finfo(np.float64).max)}
IMAGE_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK"]
IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"]


def unchanged_mostly(unchanged: Any, changed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`unchanged` four times in five, else a value of `changed`."""
    return st.integers(0, 4).flatmap(lambda n: changed if n == 0 else st.just(unchanged))


@st.composite
def encoded_images(draw: st.DrawFn) -> str:
    """Base64 of an image of any mode and size (within 1..40 pixels a side) in one of the
    formats the image transformer reads, or of bytes that are not quite one."""
    mode = draw(st.sampled_from(IMAGE_MODES))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    image = Image.fromarray(pixels, "L").convert(mode)
    out = io.BytesIO()
    try:
        image.save(out, draw(st.sampled_from(IMAGE_FORMATS)))
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        image.convert("RGB").save(out, "PNG")
    data = out.getvalue()
    cut = draw(unchanged_mostly(len(data), st.integers(0, len(data))))
    return base64.b64encode(data[:cut]).decode()


def elements(datatype: str, samples: list[Any]) -> st.SearchStrategy[Any]:
    """JSON values for a tensor of `datatype` (any size of its kind), with the model's own
    valid values among them."""
    own: st.SearchStrategy[Any]
    if datatype == "BOOL":
        own = st.booleans()
    elif datatype == "BYTES":
        own = encoded_images() | st.text(max_size=12)
    elif datatype.startswith(("INT", "UINT")):
        own = st.integers(-(2**64), 2**64)
    else:  # within the datatype's range (the inputs past it are test_float_overflow's)
        width = FLOAT_WIDTHS.get(datatype, 64)
        own = (st.floats(allow_nan=False, allow_infinity=False, width=width)
               | st.sampled_from([LARGEST[width], -LARGEST[width]]) | st.integers(-9, 9))
    return st.sampled_from(samples) | own if samples else own


def nest(flat: list[Any], shape: list[int]) -> list[Any]:
    """Row-major `flat` as nested lists of `shape` (the spec's tensor_data allows both)."""
    if len(shape) <= 1:
        return flat
    step = math.prod(shape[1:])
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def model_tensor(
    draw: st.DrawFn, spec: dict[str, Any], batch: int, samples: list[Any]
) -> dict[str, Any]:
    """One input as the metadata has it, its datatype or shape now and then another."""
    datatype = draw(unchanged_mostly(spec["datatype"], st.sampled_from(DATATYPES)))
    exact = [batch if d == -1 else d for d in spec["shape"]]
    shape = draw(unchanged_mostly(exact, st.lists(st.integers(0, 4), max_size=3)))
    count = math.prod(shape)
    own = samples if datatype == spec["datatype"] else []
    flat = draw(st.lists(elements(datatype, own), min_size=count, max_size=count))
    data = nest(flat, shape) if draw(st.booleans()) else flat
    tensor = {"name": spec["name"], "datatype": datatype, "shape": shape, "data": data}
    if draw(st.booleans()):
        tensor["parameters"] = {}
    return tensor


@st.composite
def model_request(draw: st.DrawFn, service: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """An inference request the spec allows, shaped after the model's metadata: its inputs
    (now and then one missing, twice or out of order), optional members of the spec's."""
    batch = draw(st.sampled_from([1, 2, 3, 1, 0]))
    samples = {i["name"]: list(i["data"]) for i in VALID_INPUTS[service]}
    inputs = [draw(model_tensor(s, batch, samples.get(s["name"], []))) for s in metadata["inputs"]]
    inputs = draw(unchanged_mostly(inputs, st.permutations(inputs) | st.lists(
        st.sampled_from(inputs), min_size=1, max_size=len(inputs) + 1)))
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8))
    names = [o["name"] for o in metadata["outputs"]]
    if draw(st.booleans()):
        wanted = draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))
        body["outputs"] = [{"name": name} for name in wanted]
        body["outputs"] += draw(unchanged_mostly([], st.just([{"name": "no-such-output"}])))
    if draw(st.booleans()):
        body["parameters"] = draw(st.dictionaries(
            st.text(max_size=6), st.booleans() | st.integers() | st.text(max_size=6), max_size=2))
    return body


# -- running -----------------------------------------------------------------------------------
def bounded(examples: int) -> settings:
    """At most `examples` examples, the same ones every run, never shrunk."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no replay, no targeting, no shrinking
        suppress_health_check=list(HealthCheck),
    )


class SameOriginRedirects(requests.Session):
    """Follows a redirect only to the origin the request went to, as schemathesis' own session
    does: one to a Knative-style virtual host is the response under test."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is None or urlsplit(urljoin(resp.url, target))[:2] != urlsplit(resp.url)[:2]:
            return None
        return target


@dataclass
class Run:
    """Sends cases through the gateway and keeps every failing response."""

    base_url: str
    session: requests.Session
    headers: dict[str, str]
    failures: list[str]
    statuses: dict[int, int]

    def check(self, case: Case) -> None:
        response = case.call(base_url=self.base_url, session=self.session,
                             headers=self.headers, timeout=TIMEOUT)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=self.headers)
        except FailureGroup as group:
            self.failures.append(str(group))

    def assert_none_failed(self) -> None:
        assert self.statuses, "no request was sent"
        assert not self.failures, (
            f"{len(self.failures)} failing response(s) (statuses seen: {self.statuses}):\n\n"
            + "\n".join(self.failures[:5])
        )


@pytest.fixture
def run(platform: Platform) -> Iterator[Callable[[dict[str, str]], Run]]:
    with SameOriginRedirects() as session:
        yield lambda headers: Run(platform.url, session, headers, [], {})


@pytest.fixture(scope="module")
def metadata(platform: Platform) -> dict[str, dict[str, Any]]:
    """Each service's v2 model metadata, as the gateway answers it."""
    docs = {}
    for service in SERVICES:
        answer = requests.get(f"{platform.url}/v2/models/{service}", timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text
        docs[service] = answer.json()
    return docs


def path_parameters(operation: Operation, service: str, doc: dict[str, Any]) -> dict[str, str]:
    fixed = {"model_name": service}
    if operation.versioned:
        fixed["model_version"] = doc.get("versions", ["1"])[0]
    return fixed


def generate(
    operation: Operation,
    mode: GenerationMode,
    examples: int,
    send: Callable[[Case], None],
    path: dict[str, str] | None = None,
) -> None:
    api = SCHEMA[operation.path][operation.method]

    @bounded(examples)
    @given(case=api.as_strategy(generation_mode=mode, path_parameters=path))
    def each(case: Case) -> None:
        send(case)

    each()


SERVER_CASES = [
    pytest.param(operation, host, id=f"{host or 'gateway'}-{operation.name}")
    for operation in SERVER_OPERATIONS
    for host in [None, *SERVICES]
]


@pytest.mark.parametrize(("operation", "host"), SERVER_CASES)
def test_server_operation(
    run: Callable[[dict[str, str]], Run], operation: Operation, host: str | None
) -> None:
    checked = run({"host": HOST.format(host)} if host else {})
    generate(operation, GenerationMode.POSITIVE, GET_EXAMPLES, checked.check)
    checked.assert_none_failed()


@pytest.mark.parametrize("operation", MODEL_OPERATIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("service", SERVICES)
def test_model_operation(
    run: Callable[[dict[str, str]], Run],
    metadata: dict[str, dict[str, Any]],
    service: str,
    operation: Operation,
) -> None:
    checked = run({})
    fixed = path_parameters(operation, service, metadata[service])
    generate(operation, GenerationMode.POSITIVE, GET_EXAMPLES, checked.check, fixed)
    checked.assert_none_failed()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
@pytest.mark.parametrize("operation", INFER_OPERATIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("service", SERVICES)
def test_infer_from_the_spec(
    run: Callable[[dict[str, str]], Run],
    metadata: dict[str, dict[str, Any]],
    service: str,
    operation: Operation,
    mode: GenerationMode,
) -> None:
    checked = run({})
    fixed = path_parameters(operation, service, metadata[service])
    generate(operation, mode, INFER_EXAMPLES[mode], checked.check, fixed)
    checked.assert_none_failed()


@pytest.mark.parametrize("operation", INFER_OPERATIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("service", SERVICES)
def test_infer_shaped_after_the_model(
    run: Callable[[dict[str, str]], Run],
    metadata: dict[str, dict[str, Any]],
    service: str,
    operation: Operation,
) -> None:
    checked = run({})
    doc = metadata[service]
    fixed = path_parameters(operation, service, doc)
    api = SCHEMA[operation.path][operation.method]

    def case(body: dict[str, Any]) -> Case:
        return api.Case(path_parameters=fixed, body=body, media_type="application/json")

    outputs = [o["name"] for o in doc["outputs"]]
    for body in valid_requests(service, outputs):
        checked.check(case(body))
    assert checked.statuses == {200: len(valid_requests(service, outputs))}, checked.failures

    @bounded(MODEL_EXAMPLES)
    @given(body=model_request(service, doc))
    def each(body: dict[str, Any]) -> None:
        checked.check(case(body))

    each()
    checked.assert_none_failed()


# -- floats past what JSON numbers can mean --------------------------------------------------
@pytest.mark.parametrize("service", ["sklearn-iris", "tf-digits", "triton-digits"])
def test_float_overflow(
    run: Callable[[dict[str, str]], Run], metadata: dict[str, dict[str, Any]], service: str
) -> None:
    """Inputs at and past the largest float of their datatype: a 400 (past it), or a 200 whose
    outputs (NaN and infinities where the model overflows) are JSON and match the schema."""
    checked = run({})
    api = SCHEMA["/v2/models/{model_name}/infer"]["POST"]
    (spec,) = metadata[service]["inputs"]
    shape = [1 if d == -1 else d for d in spec["shape"]]
    largest = LARGEST[FLOAT_WIDTHS[spec["datatype"]]]
    outputs = [{"name": o["name"]} for o in metadata[service]["outputs"]]
    for value in (largest, -largest, 1e300, 1e308):
        for sign in (1, -1):
            data = [value * sign ** i for i in range(math.prod(shape))]
            body: dict[str, Any] = {"inputs": [{**spec, "shape": shape, "data": data}],
                                    "outputs": outputs}
            checked.check(api.Case(path_parameters={"model_name": service}, body=body,
                                   media_type="application/json"))
    checked.assert_none_failed()
