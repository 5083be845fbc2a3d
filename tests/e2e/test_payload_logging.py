"""Issue 18's acceptance for payload logging: iris-classifier with `logger: {mode: all}` behind
the gateway, the real `modelserve logsink` as its sink, 1,000 requests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import ROOT, Platform, free_port, run_platform

REQUESTS = 1000
BODY = {"instances": [{"sepal_length": 5.1, "sepal_width": 3.5,
                       "petal_length": 1.4, "petal_width": 0.2}]}


@contextmanager
def _logsink(out: Path, logs: Path) -> Iterator[str]:
    port = free_port()
    log = logs / f"logsink_{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "modelserve"), "logsink", "--out", str(out),
             "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _answers(f"{url}/healthz"), "the log sink listening", process)
        yield url + "/"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _until(check: Callable[[], bool], what: str,
           process: subprocess.Popen[bytes] | None = None, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited before {what}")
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def _manifest(tmp_path: Path, sink_url: str) -> Path:
    doc = yaml.safe_load((ROOT / "inferenceservices" / "iris-classifier.yaml").read_text())
    doc["spec"]["transformer"]["logger"] = {
        "mode": "all", "url": sink_url, "metadataHeaders": ["x-tenant"]}
    for component in ("transformer", "predictor"):
        doc["spec"][component]["maxReplicas"] = 1  # one transformer: one /metrics to read
    path = tmp_path / "iris-classifier.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _predict(platform: Platform, client: httpx.Client, number: int) -> httpx.Response:
    return client.post(
        f"{platform.url}/v1/models/iris-classifier:predict", json=BODY,
        headers={"x-tenant": f"tenant-{number % 3}"},
    )


def _transformer_metric(platform: Platform, result: str) -> float:
    entry = platform.ready_replica("iris-classifier")["url"]  # the transformer's
    text = httpx.get(f"{entry}/metrics").text
    pattern = rf'^modelserve_payload_logger_events_total\{{[^}}]*result="{result}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_a_thousand_requests_give_two_thousand_paired_cloudevents(
    tmp_path: Path, models_root: Path, logs: Path
) -> None:
    out = tmp_path / "events.jsonl"
    with _logsink(out, logs) as sink_url, run_platform(
        models_root, logs, files=[_manifest(tmp_path, sink_url)]
    ) as platform:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: _predict(platform, client, n), range(REQUESTS)))
        assert [a.status_code for a in answers] == [200] * REQUESTS
        ids = [a.headers["x-request-id"] for a in answers]
        assert len(set(ids)) == REQUESTS  # the gateway made one per request
        _until(lambda: len(_lines(out)) >= 2 * REQUESTS, "2,000 events in the sink's file")
        time.sleep(0.5)  # anything beyond 2,000 would be a duplicate: let it arrive to be seen
        events = _lines(out)
        assert _transformer_metric(platform, "sent") == 2 * REQUESTS
        assert _transformer_metric(platform, "dropped") == 0

    assert len(events) == 2 * REQUESTS
    types = Counter((e["id"], e["type"]) for e in events)
    assert set(types.values()) == {1}
    assert {i for i, _ in types} == set(ids)
    assert Counter(t for _, t in types) == {
        "org.kubeflow.serving.inference.request": REQUESTS,
        "org.kubeflow.serving.inference.response": REQUESTS,
    }
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["inferenceservicename"] == "iris-classifier"
        assert event["namespace"] == "default"
        assert event["component"] == "transformer"
        assert event["endpoint"] == "default"
        assert event["source"].startswith("http://127.0.0.1:")
        assert json.loads(event["metadata"])["x-tenant"][0].startswith("tenant-")
        if event["type"].endswith("request"):
            assert event["data"] == BODY
        else:
            assert event["data"] == {"predictions": ["setosa"]}


def test_with_the_sink_down_requests_succeed_and_the_counters_say_what_was_lost(
    tmp_path: Path, models_root: Path, logs: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/"
    with run_platform(models_root, logs, files=[_manifest(tmp_path, down)]) as platform:
        with httpx.Client(timeout=60) as client:
            answers = [_predict(platform, client, n) for n in range(100)]
        assert [a.status_code for a in answers] == [200] * 100
        _until(
            lambda: _transformer_metric(platform, "dropped")
            + _transformer_metric(platform, "failed") == 200,
            "the 200 lost events counted",
        )
        assert _transformer_metric(platform, "sent") == 0
