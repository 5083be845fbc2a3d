"""The REST app's ASGI fast path answers exactly what its FastAPI routes would.

`_match` must pick the same requests, and the same model names, as Starlette's router does
for the proxy routes; and a request answered by the fast path must get the same status,
headers and body as when FastAPI answers it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Match, Route

from gateway.dataplane.app import _GatewayApp, _match, create_app
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings
from tests.gateway.conftest import SETTINGS, Upstream, build_table

# The proxy routes `_add_proxy_routes` registers, and what each forwards.
PROXY_ROUTES = {
    "/v1/models/{name}:predict": ("v1", True),
    "/v1/models/{name}:explain": ("v1", True),
    "/v1/models/{name}": ("v1", False),
    "/v2/models/{name}/infer": ("v2", True),
    "/v2/models/{name}/ready": ("v2", False),
    "/v2/models/{name}": ("v2", False),
    "/v2/models/{name}/versions/{version}/infer": ("v2", True),
    "/v2/models/{name}/versions/{version}/ready": ("v2", False),
    "/v2/models/{name}/versions/{version}": ("v2", False),
}

PATHS = [
    "/v1/models/m:predict", "/v1/models/m:explain", "/v1/models/m", "/v1/models/a:b:predict",
    "/v1/models/:predict", "/v1/models/m/x:predict", "/v1/models/m:predict/", "/v1/models/",
    "/v1/models", "/v1/models/m:other", "/v2/models/m", "/v2/models/m/", "/v2/models/m/infer",
    "/v2/models/m/ready", "/v2/models/m/infer/", "/v2/models/m/other", "/v2/models//infer",
    "/v2/models/m/versions", "/v2/models/m/versions/", "/v2/models/m/versions/3",
    "/v2/models/m/versions/3/infer", "/v2/models/m/versions/3/ready",
    "/v2/models/m/versions//infer", "/v2/models/m/versions/3/infer/x",
    "/v2/models/versions/versions/1/infer", "/v2/models/m/x/infer", "/v2/models", "/v2/health/live",
    "/metrics", "/v3/models/m/infer", "/v2/models/m%2Fx/infer",
]


def starlette_pick(app: _GatewayApp, method: str, path: str) -> tuple[str, str, bool] | None:
    """What Starlette's router chooses for `method path`: (name, protocol, has body) when a
    proxy route matches in full, None when another route or none does."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for route in app.router.routes:
        assert isinstance(route, Route)
        match, child = route.matches(scope)
        if match is Match.FULL:
            if route.path not in PROXY_ROUTES:
                return None
            protocol, has_body = PROXY_ROUTES[route.path]
            return child["path_params"]["name"], protocol, has_body
    return None


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
@pytest.mark.parametrize("path", PATHS)
def test_fast_path_matches_what_starlette_routes(method: str, path: str) -> None:
    app = create_app(RoutingTable(), GatewaySettings())
    assert isinstance(app, _GatewayApp)
    assert _match(method, path) == starlette_pick(app, method, path)


@pytest.fixture
def both(upstreams: tuple[Upstream, Upstream]) -> Iterator[tuple[TestClient, TestClient]]:
    """The same app twice: with the fast path, and with every request left to FastAPI."""
    table = build_table(*upstreams)
    fast, slow = create_app(table, SETTINGS), create_app(table, SETTINGS)
    assert isinstance(slow, _GatewayApp)
    slow.plane = None
    with TestClient(fast) as fast_client, TestClient(slow) as slow_client:
        yield fast_client, slow_client


V2 = b'{"inputs": []}'


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/models/echo:predict", b'{"instances": [[1]]}', {}),
        ("POST", "/v2/models/echo/infer?status=418", V2, {"content-type": "application/json"}),
        ("POST", "/v2/models/echo/versions/2/infer", V2, {"x-request-id": "r"}),
        ("GET", "/v2/models/echo/ready", None, {}),
        ("GET", "/v1/models/echo", None, {}),
        ("POST", "/v2/models/whatever/infer", V2, {"host": "echo.default.example.com"}),
        ("POST", "/v2/models/nope/infer", V2, {}),
        ("POST", "/v1/models/loading:predict", b"{}", {}),
        ("POST", "/v2/models/down/infer", V2, {}),
        ("POST", "/v2/models/echo/infer", b"x" * 5000, {}),
        ("POST", "/v1/models/echo:predict", b"{}",
         {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
def test_fast_path_answers_as_fastapi_does(
    both: tuple[TestClient, TestClient],
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    fast, slow = both
    # One request id for both: the gateway makes a new one for each request without one.
    headers = {"x-request-id": "same-for-both", **headers}
    answers = [c.request(method, path, content=body, headers=headers) for c in (fast, slow)]
    first, second = answers
    assert first.status_code == second.status_code
    assert first.headers == second.headers
    if first.headers.get("content-type") == "application/json":
        assert first.json() == second.json()
    else:
        assert first.content == second.content


def test_head_is_left_to_fastapi_and_forwarded(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    response = fast.head("/v2/models/echo")
    assert response.status_code == 200
    assert response.headers["x-modelserve-revision"] == "echo-00001"
    assert response.content == b""
