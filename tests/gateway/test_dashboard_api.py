"""The dashboard: the metrics history (fed by hand, on a fake clock) and, on a real control
plane (the admin app on its own port, fed by a real gateway's metrics in front of the echo
upstreams), the page's assets and its JSON API (metrics, SLOs, examples, try-it, auth).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.controlplane.api.dashboard.history import (
    MetricsHistory,
    classify_code,
    histogram_quantile,
)
from gateway.controlplane.api.server import AdminServer
from gateway.settings import GatewaySettings
from tests.gateway.conftest import SETTINGS, Gateway, LoopThread, Upstream, running_gateway
from tests.gateway.test_services import running_admin

INF = math.inf
Doc = dict[str, Any]
KEY = "dashboard-key-0123456789"  # an inference API key (the data plane's)
TOKEN = "dashboard-admin-token-42"  # the control plane's admin token
ADMIN = {"authorization": f"Bearer {TOKEN}"}
V2_BODY = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
JSON_ROUTES = [
    "/v1/metrics",
    "/v1/slo",
    "/v1/services/echo/metrics",
    "/v1/services/echo/example?protocol=v1",
]


# --- the history, fed by hand ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The gateway's two metrics by their contract names, with or without `revision`."""

    def __init__(self, with_revision: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.with_revision = with_revision
        extra = ["revision"] if with_revision else []
        self.requests = Counter(
            "modelserve_gateway_requests",
            "requests",
            ["service", *extra, "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "modelserve_gateway_request_duration_seconds",
            "latency",
            ["service", *extra, "protocol"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
        )

    def observe(
        self,
        service: str,
        code: str,
        seconds: float,
        revision: str = "r1",
        protocol: str = "v1",
        times: int = 1,
    ) -> None:
        head = [service, revision] if self.with_revision else [service]
        for _ in range(times):
            self.requests.labels(*head, protocol, code).inc()
            self.duration.labels(*head, protocol).observe(seconds)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # 100 observations in (0.0025, 0.005]: the median half-way through that bucket.
        (0.5, [(0.001, 0), (0.0025, 0), (0.005, 100), (INF, 100)], 0.00375),
        (0.99, [(0.001, 0), (0.0025, 0), (0.005, 100), (INF, 100)], 0.0049750),
        # The lowest bucket starts at 0.
        (0.5, [(0.01, 10), (INF, 10)], 0.005),
        # In the +Inf bucket: the largest finite bound.
        (0.99, [(0.01, 50), (0.1, 90), (INF, 100)], 0.1),
        # Across buckets: rank 90 of 100 is 40/40 through (0.01, 0.1].
        (0.9, [(0.01, 50), (0.1, 90), (INF, 100)], 0.1),
        (0.7, [(0.01, 50), (0.1, 90), (INF, 100)], 0.01 + 0.09 * 0.5),
        # No observations, or no +Inf bucket: unknown.
        (0.5, [(0.01, 0), (INF, 0)], None),
        (0.5, [(0.01, 3), (0.1, 5)], None),
    ],
)
def test_histogram_quantile_interpolates_like_prometheus(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = histogram_quantile(q, buckets)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("200", "ok"),
        ("204", "ok"),
        ("400", "client"),
        ("401", "client"),
        ("429", "client"),
        ("499", "client"),
        ("500", "server"),
        ("503", "server"),
        ("504", "server"),
        ("OK", "ok"),
        ("INVALID_ARGUMENT", "client"),
        ("NOT_FOUND", "client"),
        ("UNAUTHENTICATED", "client"),
        ("RESOURCE_EXHAUSTED", "client"),
        ("CANCELLED", "client"),
        ("UNAVAILABLE", "server"),
        ("DEADLINE_EXCEEDED", "server"),
        ("INTERNAL", "server"),
        ("UNKNOWN", "server"),
    ],
)
def test_codes_are_classified_as_the_error_ratio_counts_them(code: str, kind: str) -> None:
    assert classify_code(code) == kind


def test_rate_latency_and_error_ratios_over_the_window() -> None:
    recorder, clock = Recorder(), Clock()
    history = MetricsHistory(recorder.registry, interval_s=1, retention_s=60, clock=clock)
    history.sample()
    recorder.observe("iris", "200", 0.003, times=80)
    recorder.observe("iris", "503", 0.003, times=5)
    recorder.observe("iris", "UNAVAILABLE", 0.003, protocol="grpc", times=5)
    recorder.observe("iris", "400", 0.003, times=6)
    recorder.observe("iris", "INVALID_ARGUMENT", 0.003, protocol="grpc", times=4)
    clock.now += 10
    history.sample()
    stats = history.summary("iris", window_s=60)
    assert stats is not None
    doc = stats.as_dict()
    assert doc["requests"] == 100 and doc["rps"] == pytest.approx(10.0)
    assert doc["p50_ms"] == pytest.approx(3.75)
    assert doc["server_errors"] == 10 and doc["error_ratio"] == pytest.approx(0.1)
    assert doc["client_errors"] == 10 and doc["client_error_ratio"] == pytest.approx(0.1)


def test_only_the_window_counts_and_the_ring_is_bounded() -> None:
    recorder, clock = Recorder(), Clock()
    history = MetricsHistory(recorder.registry, interval_s=1, retention_s=30, clock=clock)
    for second in range(100):
        # Slow requests first, fast ones in the last 10 s.
        recorder.observe("iris", "200", 0.08 if second < 90 else 0.002, times=2)
        clock.now += 1
        history.sample()
    assert len(history.snapshots()) == 31
    recent = history.summary("iris", window_s=10)
    assert recent is not None
    assert recent.as_dict()["requests"] == 20 and recent.as_dict()["rps"] == pytest.approx(2)
    p99 = recent.quantiles[2]
    assert p99 is not None and p99 <= 0.0025
    # A window longer than what is kept covers what is kept.
    whole = history.summary("iris", window_s=600)
    assert whole is not None and whole.seconds == pytest.approx(30)
    p50 = whole.quantiles[0]
    assert p50 is not None and p50 > 0.05


def test_revisions_are_summarised_apart_and_in_the_series() -> None:
    recorder, clock = Recorder(), Clock()
    history = MetricsHistory(recorder.registry, interval_s=1, retention_s=60, clock=clock)
    history.sample()
    for _ in range(20):
        recorder.observe("iris", "200", 0.003, revision="iris-00002", times=3)
        recorder.observe("iris", "200", 0.003, revision="iris-00001", times=7)
        clock.now += 1
        history.sample()
    assert history.revisions("iris") == ["iris-00001", "iris-00002"]
    latest = history.summary("iris", 60, "iris-00002")
    assert latest is not None and latest.as_dict()["rps"] == pytest.approx(3)
    series = history.series("iris", window_s=10, step_s=2, revisions=history.revisions("iris"))
    assert [point["t"] for point in series] == [-8, -6, -4, -2, 0]
    assert all(point["rps"] == pytest.approx(10) for point in series)
    assert series[-1]["revisions"] == {
        "iris-00001": pytest.approx(7),
        "iris-00002": pytest.approx(3),
    }


def test_metrics_without_a_revision_label_and_a_reset_counter() -> None:
    recorder, clock = Recorder(with_revision=False), Clock()
    history = MetricsHistory(recorder.registry, interval_s=1, retention_s=60, clock=clock)
    assert history.summary("iris", 60) is None  # nothing to compare yet
    recorder.observe("iris", "200", 0.02, times=50)
    history.sample()
    clock.now += 5
    recorder = Recorder(with_revision=False)  # a restarted process: counts start over
    recorder.observe("iris", "200", 0.02, times=5)
    history.registry = recorder.registry
    history.sample()
    stats = history.summary("iris", 60)
    assert stats is not None and stats.as_dict()["requests"] == 5
    assert history.revisions("iris") == []
    assert stats.as_dict()["p50_ms"] == pytest.approx(17.5)


def test_no_requests_reads_as_no_data_not_zero_latency() -> None:
    recorder, clock = Recorder(), Clock()
    history = MetricsHistory(recorder.registry, interval_s=1, retention_s=60, clock=clock)
    history.sample()
    clock.now += 3
    history.sample()
    stats = history.summary("iris", 60)
    assert stats is not None
    assert stats.as_dict() == {
        "seconds": 3.0,
        "requests": 0,
        "rps": 0.0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "server_errors": 0,
        "client_errors": 0,
        "error_ratio": None,
        "client_error_ratio": None,
    }


# --- the API, on a real gateway -------------------------------------------------------------


STATS_CSV = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,"
    "75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    ",Aggregated,1000,2,6,7,2,50,19,500,0,6,7,8,8,10,13,18,22,33,50,50\n"
)
SLO_YAML = """
services:
  echo: {p50_ms: 5, p95_ms: 20, p99_ms: 40, max_error_ratio: 0.01, min_rps: 100}
  half: {p50_ms: 1000, p95_ms: 2000, p99_ms: 5000, max_error_ratio: 0.01, min_rps: 100}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    (root / "slo.yaml").write_text(SLO_YAML)
    (root / "reports").mkdir()
    (root / "reports" / "echo_stats.csv").write_text(STATS_CSV)
    (root / "payloads").mkdir()
    (root / "payloads" / "echo.v1.json").write_text('{"instances": [[1, 2]]}')
    (root / "payloads" / "half.v2.json").write_text(V2_BODY.decode())
    return root


def _dashboard_env(mp: pytest.MonkeyPatch, root: Path, slo: str = "slo.yaml") -> None:
    mp.setenv("MODELSERVE_DASHBOARD_SLO_FILE", str(root / slo))
    mp.setenv("MODELSERVE_DASHBOARD_REPORTS_DIR", str(root / "reports"))
    mp.setenv("MODELSERVE_DASHBOARD_PAYLOADS_DIR", str(root / "payloads"))
    mp.setenv("MODELSERVE_DASHBOARD_SAMPLE_INTERVAL_S", "0.05")
    mp.setenv("MODELSERVE_DASHBOARD_RETENTION_S", "60")


@dataclass
class Board:
    """The control plane's admin door (`admin_url`) over a gateway (`url`: the data plane)."""

    gateway: Gateway
    admin: AdminServer

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin.port}"


@contextmanager
def running_board(
    loop_thread: LoopThread,
    upstreams: tuple[Upstream, Upstream],
    settings: GatewaySettings = SETTINGS,
) -> Iterator[Board]:
    """A gateway and, on a port of its own, the control plane's app over its table and
    metrics, as `modelserve up` runs them (the dashboard's settings from the environment)."""
    with running_gateway(loop_thread, upstreams, settings) as gateway:
        keys = settings.api_key_values()
        with running_admin(
            loop_thread, gateway.table, gateway.server.metrics, TOKEN,
            inference_url=gateway.url, inference_key=keys[0] if keys else None,
        ) as admin:
            yield Board(gateway, admin)


@pytest.fixture(scope="module")
def board(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream], files: Path
) -> Iterator[Board]:
    with pytest.MonkeyPatch.context() as mp:
        _dashboard_env(mp, files)
        with running_board(loop_thread, upstreams) as running:
            yield running


@pytest.fixture
def client(board: Board) -> Iterator[httpx.Client]:
    """The dashboard's client: the control plane, with the admin token."""
    with httpx.Client(base_url=board.admin_url, headers=ADMIN, timeout=10) as c:
        yield c


@pytest.fixture
def infer(board: Board) -> Iterator[httpx.Client]:
    """An inference client: the data plane."""
    with httpx.Client(base_url=board.url, timeout=10) as c:
        yield c


def wait_for(
    client: httpx.Client, path: str, check: Callable[[Doc], bool], timeout: float = 10
) -> Doc:
    """Poll `path` until `check(doc)` holds (the sampler runs every 50 ms here)."""
    deadline = time.monotonic() + timeout
    while True:
        doc: Doc = client.get(path).json()
        if check(doc):
            return doc
        assert time.monotonic() < deadline, f"{path} never satisfied the check: {doc}"
        time.sleep(0.05)


def test_the_page_and_its_assets_are_served_from_the_package(client: httpx.Client) -> None:
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-modelserve-revision"] == "none"
    for asset, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
        assert f"/ui/static/{asset}" in page.text
        answer = client.get(f"/ui/static/{asset}")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media)
        # Nothing is fetched from elsewhere (the SVG namespace is a name, not a fetch).
        assert "https://" not in answer.text
        assert answer.text.replace("http://www.w3.org/2000/svg", "").count("http://") == 0
    assert "https://" not in page.text and "http://" not in page.text
    assert client.get("/ui/", follow_redirects=False).headers["location"] == "/ui"
    missing = client.get("/ui/static/nope.js")
    assert missing.status_code == 404 and "error" in missing.json()


def test_metrics_summarise_each_service_and_revision(
    client: httpx.Client, infer: httpx.Client, board: Board
) -> None:
    for _ in range(30):
        assert infer.post("/v2/models/half/infer", content=V2_BODY).status_code == 200
    for _ in range(3):
        assert infer.post("/v2/models/echo/infer?status=503", content=V2_BODY).status_code == 503
        assert infer.post("/v2/models/echo/infer?status=400", content=V2_BODY).status_code == 400
    doc = wait_for(
        client,
        "/v1/metrics?window=60",
        lambda d: (
            d["services"]["half"].get("requests", 0) >= 30
            and d["services"]["echo"].get("requests", 0) >= 6
        ),
    )
    assert doc["window_s"] == 60 and doc["interval_s"] == 0.05
    half = doc["services"]["half"]
    assert half["requests"] == 30 and half["error_ratio"] == 0
    assert half["p50_ms"] is not None and half["p50_ms"] <= half["p95_ms"] <= half["p99_ms"]
    echo = doc["services"]["echo"]
    assert echo["server_errors"] == 3 and echo["client_errors"] == 3
    assert echo["error_ratio"] == pytest.approx(0.5)
    assert set(doc["services"]) >= {r.name for r in board.gateway.table.routes()}
    revisions = half["revisions"]
    if revisions:  # the metrics carry a revision label
        assert set(revisions) == {"half-a", "half-b"}
        assert sum(r["requests"] for r in revisions.values()) == 30


def test_one_service_has_a_series_for_the_chart(
    client: httpx.Client, infer: httpx.Client
) -> None:
    for _ in range(5):
        infer.post("/v2/models/half/infer", content=V2_BODY)
    doc = wait_for(
        client,
        "/v1/services/half/metrics?window=30&step=0.5",
        lambda d: any(p["requests"] for p in d["series"]),
    )
    assert doc["service"] == "half" and doc["step_s"] == 0.5
    assert doc["series"][-1]["t"] == 0 and all(p["t"] <= 0 for p in doc["series"])
    point = doc["series"][-1]
    assert {"rps", "p50_ms", "p95_ms", "p99_ms", "error_ratio", "revisions"} <= set(point)
    assert "revisions" in doc["summary"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/v1/services/nope/metrics", 404, "nope"),
        ("/v1/services/nope/example", 404, "nope"),
        ("/v1/metrics?window=0", 400, "window"),
        ("/v1/metrics?window=soon", 400, "window"),
        ("/v1/slo?window=100000", 400, "window"),
        ("/v1/services/echo/metrics?window=10&step=20", 400, "step"),
        ("/v1/services/echo/example?protocol=grpc", 400, "protocol"),
        ("/v1/services/echo/example?protocol=v2", 404, "echo.v2.json"),
    ],
)
def test_bad_requests_answer_in_the_error_format(
    client: httpx.Client, path: str, status: int, says: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == status
    assert says in answer.json()["error"]
    assert answer.headers["x-modelserve-revision"] == "none"


def test_examples_come_from_the_payload_files(client: httpx.Client) -> None:
    doc = client.get("/v1/services/echo/example").json()
    assert doc == {
        "service": "echo",
        "protocol": "v1",
        "path": "/v1/models/echo:predict",
        "available": ["v1"],
        "payload": {"instances": [[1, 2]]},
    }
    half = client.get("/v1/services/half/example").json()  # v2 only: v2 is the default
    assert half["protocol"] == "v2" and half["path"] == "/v2/models/half/infer"
    assert half["payload"] == json.loads(V2_BODY)


def test_slo_status_from_the_file_the_report_and_the_live_window(
    client: httpx.Client, infer: httpx.Client
) -> None:
    for _ in range(5):
        infer.post("/v2/models/half/infer", content=V2_BODY)
        infer.post("/v2/models/echo/infer?status=503", content=V2_BODY)
    doc = wait_for(
        client,
        "/v1/slo?window=60",
        lambda d: all(d["services"][name]["live"] is not None for name in ("echo", "half")),
    )
    assert doc["error"] is None
    echo = doc["services"]["echo"]
    assert echo["targets"]["p50_ms"] == 5
    report = echo["report"]
    assert report["measured"]["requests"] == 1000 and report["measured"]["p50_ms"] == 6
    failed = [c["slo"] for c in report["checks"] if not c["passed"]]
    assert failed == ["p50"] and report["passed"] is False
    half = doc["services"]["half"]
    assert half["report"] is None and "no load-test report" in half["report_error"]
    assert [c["slo"] for c in half["live"]["checks"]] == ["p50", "p95", "p99", "error_ratio"]
    assert half["live"]["passed"] is True, half["live"]
    # echo answered 503s: its live error ratio is over the target.
    live_failed = [c["slo"] for c in echo["live"]["checks"] if not c["passed"]]
    assert "error_ratio" in live_failed and echo["live"]["passed"] is False
    assert doc["services"]["split"]["targets"] is None  # running, but not in the SLO file


def test_a_missing_slo_file_is_an_empty_state(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream], files: Path
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _dashboard_env(mp, files, slo="missing.yaml")
        with running_board(loop_thread, upstreams) as running:
            doc = httpx.get(f"{running.admin_url}/v1/slo", headers=ADMIN).json()
    assert doc["error"] == f"no SLO file at {files / 'missing.yaml'}"
    assert all(s["targets"] is None for s in doc["services"].values())


@pytest.fixture(scope="module")
def secured(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream], files: Path
) -> Iterator[Board]:
    settings = GatewaySettings(**SETTINGS.model_dump(exclude={"api_keys"}) | {"api_keys": KEY})
    with pytest.MonkeyPatch.context() as mp:
        _dashboard_env(mp, files)
        with running_board(loop_thread, upstreams, settings) as running:
            yield running


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_the_json_api_takes_the_admin_token_not_an_inference_key(
    secured: Board, path: str
) -> None:
    url = secured.admin_url + path
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "admin token" in missing.json()["error"]
    for inference_key in (
        {"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}, {"x-modelserve-token": KEY},
    ):
        refused = httpx.get(url, headers=inference_key)
        assert refused.status_code == 403 and "inference API keys" in refused.json()["error"]
    assert httpx.get(url, headers={"authorization": "Bearer not-the-token"}).status_code == 403
    assert httpx.get(url, headers=ADMIN).status_code == 200
    assert httpx.get(url, headers={"x-modelserve-token": TOKEN}).status_code == 200
    # Another site's page (the browser says so) reads nothing, even with the token.
    for foreign in ({"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"}):
        assert httpx.get(url, headers={**ADMIN, **foreign}).status_code == 403
    # The data plane serves none of it: it points at the control plane.
    moved = httpx.get(secured.url + "/v1/services/echo/metrics", headers={"x-api-key": KEY})
    assert moved.status_code == 404 and "control plane" in moved.json()["error"]


def test_the_page_itself_is_open_without_a_token(secured: Board) -> None:
    assert httpx.get(f"{secured.admin_url}/ui").status_code == 200
    assert httpx.get(f"{secured.admin_url}/ui/static/app.js").status_code == 200
    assert httpx.get(f"{secured.url}/ui").status_code == 404  # not on the data plane


def test_try_it_sends_the_body_to_the_data_plane_with_its_key(secured: Board) -> None:
    hits = secured.gateway.a.hits.count
    answer = httpx.post(f"{secured.admin_url}/v1/services/echo/try?protocol=v2",
                        content=V2_BODY, headers={**ADMIN, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["path"] == "/v2/models/echo/infer" and doc["body"] == V2_BODY.decode()
    assert answer.headers["x-modelserve-revision"] == "echo-00001"
    assert secured.gateway.a.hits.count == hits + 1
    v1 = httpx.post(f"{secured.admin_url}/v1/services/echo/try", json={"instances": [[1]]},
                    headers=ADMIN)
    assert v1.status_code == 200 and v1.json()["path"] == "/v1/models/echo:predict"
    # A body a foreign page could send without a preflight, an unknown service, a protocol.
    plain = httpx.post(f"{secured.admin_url}/v1/services/echo/try", content=b"{}",
                       headers={**ADMIN, "content-type": "text/plain"})
    assert plain.status_code == 415
    nope = httpx.post(f"{secured.admin_url}/v1/services/nope/try", json={}, headers=ADMIN)
    assert nope.status_code == 404 and "nope" in nope.json()["error"]
    grpc = httpx.post(f"{secured.admin_url}/v1/services/echo/try?protocol=grpc", json={},
                      headers=ADMIN)
    assert grpc.status_code == 400 and "protocol" in grpc.json()["error"]
    assert secured.gateway.a.hits.count == hits + 2
