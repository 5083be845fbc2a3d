"""The dashboard in a real browser: Debian's chromium, driven headless by Playwright, against
`modelserve up` serving the two sklearn demo services. The page is the control plane's (its
admin port), opened as `modelserve up` prints it: `/ui#token=<admin token>`.

Skipped, saying why, when the `playwright` package or /usr/bin/chromium is missing (`make
install` installs chromium when it runs as root or with sudo; Playwright's own browser download
is never used). Screenshots land in tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from gateway.controlplane.api.server import AdminServer
from gateway.dataplane.server import GatewayServer
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from tests.gateway.conftest import LoopThread
from tests.gateway.test_services import running_admin
from tests.support import ROOT, Platform, free_port, run_platform

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the browser tests need the playwright package (the dev extra: pip install -e '.[dev]')",
)
if not CHROMIUM.is_file():
    pytest.skip(
        f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium; "
        "`make install` does it when run as root or with sudo)",
        allow_module_level=True,
    )

expect = sync_api.expect
ARTIFACTS = ROOT / "tests" / "artifacts"
MANIFESTS = [
    ROOT / "inferenceservices" / "sklearn-iris.yaml",
    ROOT / "inferenceservices" / "iris-classifier.yaml",
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROW = [[5.0, 3.4, 1.5, 0.2]]
KEY = "dashboard-browser-key-42"  # an inference API key (the data plane's)
TOKEN = "dashboard-browser-admin-token-7"  # the control plane's admin token


@pytest.fixture(scope="module")
def sklearn_platform(models_root: Path, logs: Path) -> Iterator[Platform]:
    """`modelserve up` with just the sklearn demo services (fast to start)."""
    with run_platform(models_root, logs, files=MANIFESTS) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, sklearn_platform: Platform) -> Iterator[Page]:
    """The dashboard on a laptop-sized screen; an uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"{sklearn_platform.admin_url}/ui#token={sklearn_platform.token}")
    yield opened
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def secured_gateway() -> Iterator[tuple[GatewayServer, AdminServer, LoopThread]]:
    """A gateway of its own with API keys on and no services yet (no platform behind it), and
    the control plane's door over its table, with the admin token TOKEN."""
    loop = LoopThread()
    server = GatewayServer(
        RoutingTable(), GatewaySettings(api_keys=KEY), http_port=0, grpc_port=None
    )
    loop.run(server.start())
    try:
        with running_admin(loop, server.table, server.metrics, TOKEN,
                           inference_url=f"http://127.0.0.1:{server.http_port}",
                           inference_key=KEY) as admin:
            yield server, admin, loop
    finally:
        loop.run(server.stop(grace=1))
        loop.close()


def row(page: Page, name: str) -> Any:
    return page.locator(f'[data-testid="service-row"][data-service="{name}"]')


def open_service(page: Page, name: str) -> None:
    row(page, name).get_by_role("button", name=name).click()
    expect(page.locator("#detail")).to_have_attribute("data-service", name)


def screenshot(page: Page, name: str = "dashboard.png") -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_the_page_lists_the_services(page: Page) -> None:
    for name in ("iris-classifier", "sklearn-iris"):
        service = row(page, name)
        expect(service.locator('[data-col="ready"] .badge')).to_have_text("Ready")
        expect(service.locator('[data-col="url"]')).to_have_text(
            f"http://{name}.default.example.com"
        )
        expect(service.locator('[data-testid="traffic-entry"]').first).to_contain_text("100%")
    # The first service is opened; its SLOs come from the demo SLO file.
    expect(page.locator("#detail")).to_have_attribute("data-service", "iris-classifier")
    expect(page.locator('#slo-body tr[data-slo="p95"]')).to_contain_text("<= 80 ms")
    expect(page.locator("#gateway-status")).to_contain_text("live")
    # The token left the address bar (and the history) once the page kept it.
    assert "token=" not in page.url


def test_every_control_is_labelled_and_works_from_the_keyboard(page: Page) -> None:
    expect(row(page, "sklearn-iris")).to_be_visible()
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
             .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                            && !e.textContent.trim())
             .map((e) => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    row(page, "sklearn-iris").get_by_role("button", name="sklearn-iris").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_have_attribute("data-service", "sklearn-iris")
    expect(page.locator("#try-body")).to_have_value(re.compile("instances"))
    page.locator("#try-body").focus()
    page.keyboard.press("Tab")  # from the body to Send
    expect(page.locator("#try-send")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#try-status")).to_have_text(re.compile(r"^200"))


def test_try_it_returns_a_prediction(page: Page) -> None:
    open_service(page, "sklearn-iris")
    expect(page.locator("#try-body")).to_have_value(re.compile("instances"))
    expect(page.locator("#try-path")).to_have_text("POST /v1/models/sklearn-iris:predict")
    page.locator("#try-send").click()
    expect(page.locator("#try-status")).to_have_text(re.compile(r"^200"))
    assert json.loads(page.locator("#try-response").text_content() or "") == {"predictions": [0]}
    expect(page.locator("#try-latency")).to_contain_text(re.compile(r"\d ms"))
    expect(page.locator("#try-revision")).to_contain_text("sklearn-iris-predictor-")

    page.select_option("#try-protocol", "v2")
    expect(page.locator("#try-body")).to_have_value(re.compile('"inputs"'))
    page.locator("#try-send").click()
    expect(page.locator("#try-response")).to_contain_text('"outputs"')
    answer = json.loads(page.locator("#try-response").text_content() or "")
    assert answer["outputs"][0]["data"] == [0]

    # A bad body is the gateway's 400, shown as it came.
    page.locator("#try-body").fill('{"inputs": []}')
    page.locator("#try-send").click()
    expect(page.locator("#try-status")).to_have_text(re.compile(r"^400"))
    expect(page.locator("#try-response")).to_contain_text('"error"')

    open_service(page, "iris-classifier")
    expect(page.locator("#try-path")).to_have_text("POST /v1/models/iris-classifier:predict")
    page.locator("#try-send").click()
    expect(page.locator("#try-response")).to_contain_text("setosa")
    # Numbers show up once the gateway's history has the requests.
    expect(row(page, "iris-classifier").locator('[data-col="p50"]')).not_to_have_text("—")
    screenshot(page)


def test_the_page_asks_for_the_admin_token_and_says_why_a_service_is_not_ready(
    browser: Browser, secured_gateway: tuple[GatewayServer, AdminServer, LoopThread]
) -> None:
    server, admin, loop = secured_gateway
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{admin.url}/ui")
        expect(page.locator("#auth")).to_be_visible()
        expect(page.locator("#auth-message")).to_contain_text("401")
        expect(page.get_by_role("textbox", name="Admin token")).to_be_focused()
        page.keyboard.type("not-the-token")
        page.keyboard.press("Enter")
        expect(page.locator("#auth-message")).to_contain_text("403")
        # The data plane's inference key does not open the control plane either.
        page.get_by_role("textbox", name="Admin token").fill(KEY)
        page.keyboard.press("Enter")
        expect(page.locator("#auth-message")).to_contain_text("403")
        page.get_by_role("textbox", name="Admin token").fill(TOKEN)
        page.get_by_role("button", name="Use this token").click()
        expect(page.locator("#auth")).to_be_hidden()
        expect(page.locator("#services-empty")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('modelserve.adminToken')") == TOKEN

        dead = f"http://127.0.0.1:{free_port()}"
        broken = ServiceRoute(
            "broken",
            message="predictor exited with status 1: no model.joblib",
            backends=(Backend("broken-predictor-00001", dead, None, ready=False),),
        )
        loop.loop.call_soon_threadsafe(server.table.update, broken)
        expect(row(page, "broken").locator('[data-col="ready"]')).to_contain_text("Not ready")
        expect(row(page, "broken").get_by_test_id("not-ready-message")).to_contain_text(
            "no model.joblib"
        )
        expect(page.locator("#services-empty")).to_be_hidden()
        expect(page.locator("#detail-ready")).to_contain_text("no model.joblib")
        screenshot(page, "dashboard-not-ready.png")
    finally:
        context.close()


def _wait_for_canary(platform: Platform, timeout: float = 90) -> dict[str, Any]:
    """The sklearn-iris document once its new revision is ready and takes traffic."""
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = httpx.get(f"{platform.admin_url}/v1/services/sklearn-iris",
                                        headers=platform.admin_headers, timeout=10).json()
        predictor = doc["status"]["components"]["predictor"]
        traffic = predictor.get("traffic", [])
        latest = predictor.get("latestCreatedRevision")
        if len(traffic) == 2 and latest and predictor.get("latestReadyRevision") == latest:
            return doc
        assert time.monotonic() < deadline, f"the canary never became ready: {doc}"
        time.sleep(0.5)


def test_a_canary_moved_to_30_percent_shows_the_split_and_traffic_follows(
    page: Page, sklearn_platform: Platform
) -> None:
    url = sklearn_platform.url
    manifest = yaml.safe_load(MANIFESTS[0].read_text())
    predictor = manifest["spec"]["predictor"]
    predictor["canaryTrafficPercent"] = 10
    container = predictor["containers"][0]
    container["args"] = [
        "--max_batch_size=16" if arg.startswith("--max_batch_size") else arg
        for arg in container["args"]
    ]
    with sklearn_platform.admin() as admin:
        applied = admin.post("/v1/services", json=manifest)
    assert applied.status_code in (200, 201), applied.text
    traffic = _wait_for_canary(sklearn_platform)["status"]["components"]["predictor"]["traffic"]
    latest = next(t["revisionName"] for t in traffic if t["latestRevision"])
    previous = next(t["revisionName"] for t in traffic if not t["latestRevision"])

    def entry(revision: str) -> Any:
        return row(page, "sklearn-iris").locator(f'[data-revision="{revision}"]')

    open_service(page, "sklearn-iris")
    expect(entry(latest)).to_have_attribute("data-percent", "10")
    expect(page.locator("#canary-percent")).to_have_value("10")
    page.locator("#canary-percent").fill("30")
    page.locator("#canary-apply").click()
    expect(page.locator("#canary-message")).to_contain_text("done")
    expect(entry(latest)).to_have_attribute("data-percent", "30")
    expect(entry(latest)).to_have_text(re.compile(r"30%$"))
    expect(entry(previous)).to_have_attribute("data-percent", "70")
    expect(
        page.locator(f'#revisions-body tr[data-revision="{latest}"] [data-col="percent"]')
    ).to_have_text("30%")

    seen: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(400):
            answer = client.post("/v1/models/sklearn-iris:predict", json={"instances": ROW})
            assert answer.status_code == 200, answer.text
            seen[answer.headers["x-modelserve-revision"]] += 1
            time.sleep(0.02)  # ~8 s of traffic: the chart draws a few points of it
    assert set(seen) == {latest, previous}
    assert 0.22 <= seen[latest] / 400 <= 0.38, seen

    # The chart draws the throughput of both revisions; the table has the numbers.
    expect(page.locator("#chart-rps path.series")).to_have_count(3)
    expect(page.locator(f'#revisions-body tr[data-revision="{latest}"]')).not_to_contain_text(
        "not ready"
    )
    screenshot(page)

    page.locator("#canary-rollback").click()
    expect(entry(previous)).to_have_attribute("data-percent", "100")
    page.locator("#canary-promote").click()
    expect(entry(latest)).to_have_attribute("data-percent", "100")
    expect(page.locator("#canary-message")).to_contain_text("Promote the latest revision: done")


def test_the_page_lists_every_demo_service(browser: Browser, platform: Platform) -> None:
    """Against the session's `modelserve up` of inferenceservices/ (all seven demo services)."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{platform.admin_url}/ui#token={platform.token}")
        for name in ("sklearn-iris", "iris-classifier", "tf-digits", "triton-digits",
                     "digits-classifier", "xgboost-iris", "lightgbm-iris"):
            expect(row(page, name).locator('[data-col="ready"] .badge')).to_have_text("Ready")
        expect(page.locator('[data-testid="service-row"]')).to_have_count(7)
        screenshot(page, "dashboard-demo-services.png")
    finally:
        context.close()
