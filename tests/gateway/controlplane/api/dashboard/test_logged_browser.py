"""The dashboard's "Logged requests" card in a real browser (Debian's chromium, headless, by
Playwright): a service with a logger shows its sink's last events, payloads as text (a
payload that is HTML stays text), and says so when the sink goes down; a service without a
logger shows no card. Skipped, saying why, without playwright or /usr/bin/chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.dataplane.metrics import GatewayMetrics
from gateway.logsink import LogSink
from gateway.routing import RoutingTable, ServiceRoute
from tests.gateway.conftest import LoopThread
from tests.gateway.logsink.support import inference_event, running_sink, send
from tests.gateway.test_services import running_admin

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow  # a browser process

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need the playwright package (dev extra)"
)
if not CHROMIUM.is_file():
    pytest.skip(f"the browser tests need Debian's chromium at {CHROMIUM}",
                allow_module_level=True)

expect = sync_api.expect
TOKEN = "logged-browser-admin-token-9"
HOSTILE = "<img src=x onerror=window.__pwned=1>"


def _route(name: str, logger_url: str | None) -> ServiceRoute:
    predictor: dict[str, Any] = {"model": {"modelFormat": {"name": "sklearn"}}}
    if logger_url is not None:
        predictor["logger"] = {"mode": "all", "url": logger_url}
    status = {
        "url": f"http://{name}.default.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {"predictor": {"traffic": [
            {"revisionName": f"{name}-predictor-00001", "percent": 100, "latestRevision": True}
        ]}},
    }
    document = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"predictor": predictor}, "status": status}
    return ServiceRoute(name, document=document)


@dataclass
class Board:
    page: Page
    sink: LogSink
    admin_url: str


@pytest.fixture
def board(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Board]:
    """A sink, a control plane over services "iris" (logging to the sink) and "quiet" (no
    logger), and the dashboard open in chromium; an uncaught script error fails the test."""
    with running_sink(loop_thread, tmp_path / "events.jsonl") as sink:
        table = RoutingTable()
        table.update(_route("iris", f"{sink.url}/"))
        table.update(_route("quiet", None))
        with running_admin(loop_thread, table, GatewayMetrics(), TOKEN) as admin, \
                sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield Board(page, sink, admin.url)
            browser.close()
            assert not errors, f"script errors on the page: {errors}"


def test_the_card_lists_logged_requests_as_text_and_says_when_the_sink_is_down(
    board: Board, loop_thread: LoopThread
) -> None:
    page, sink = board.page, board.sink
    send(sink.url, inference_event({"instances": [[5.1, 3.5]]}, event_id="req-1"))
    send(sink.url, inference_event({"instances": [HOSTILE]}, event_id="req-2"))
    page.goto(f"{board.admin_url}/ui#service=iris&token={TOKEN}")
    expect(page.locator("#detail")).to_have_attribute("data-service", "iris")
    card = page.get_by_test_id("logged")
    expect(card).to_be_visible()
    rows = card.get_by_test_id("logged-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-id", "req-2")
    expect(rows.first.get_by_test_id("logged-preview")).to_have_text(
        '{"instances":["' + HOSTILE + '"]}'
    )
    assert card.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    expect(card.get_by_test_id("logged-message")).to_contain_text("2 event(s) from")

    page.get_by_role("button", name="quiet").click()
    expect(page.locator("#detail")).to_have_attribute("data-service", "quiet")
    expect(card).to_be_hidden()

    page.get_by_role("button", name="iris").click()
    expect(rows).to_have_count(2)
    loop_thread.run(sink.stop(grace=1))  # the sink goes away: the card says so
    expect(card.get_by_test_id("logged-message")).to_contain_text("is not running")
