"""Random JSON sent to every inference route never gets a 5xx: client errors are 4xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ServerProcess

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=30,
)
TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["input-0", "x", "sepal_length"]),
     "datatype": st.sampled_from(["FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES",
                                  "FP16", "BF16", "FP128", "fp32"]),
     "shape": st.lists(st.integers(min_value=-2, max_value=5), max_size=3),
     "data": JSON},
)
V2_BODY = st.fixed_dictionaries({"inputs": st.lists(TENSOR, max_size=3)},
                                optional={"id": JSON, "parameters": JSON,
                                          "outputs": st.lists(JSON, max_size=2)})
V1_BODY = st.fixed_dictionaries({}, optional={"instances": JSON, "inputs": JSON,
                                              "parameters": JSON})


def _post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(path, content=json.dumps(body))


@pytest.fixture(scope="module")
def clients(sklearn_server: ServerProcess, tabular_server: ServerProcess):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=sklearn_server.http_url) as predictor, \
            httpx.Client(base_url=tabular_server.http_url) as transformer:
        yield [predictor, transformer]


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=st.one_of(V1_BODY, JSON))
def test_random_v1_bodies_get_no_5xx(clients: list[httpx.Client], body: Any) -> None:
    for client in clients:
        response = _post(client, "/v1/models/sklearn-iris:predict", body)
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert response.json()["error"]


@FUZZ
@given(body=st.one_of(V2_BODY, JSON))
def test_random_v2_bodies_get_no_5xx(clients: list[httpx.Client], body: Any) -> None:
    for client in clients:
        response = _post(client, "/v2/models/sklearn-iris/infer", body)
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert response.json()["error"]
