"""`modelserve apply/canary/promote/rollback/status` against a real gateway (`GatewayServer`
with `rollouts=` a LocalPlatform over tiny fake components), as a user runs them: the CLI's
`main` in the test thread, the gateway and the platform in a background event loop."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import main
from gateway.controlplane.manifests import InferenceService
from gateway.controlplane.platform import LocalPlatform
from gateway.dataplane.server import GatewayServer
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings
from tests.gateway.conftest import LoopThread
from tests.gateway.test_platform_revisions import NAME, OPTIONS, manifest, rev

KEY = "k-123"


@dataclass
class Stack:
    loop: LoopThread
    table: RoutingTable
    platform: LocalPlatform
    server: GatewayServer
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def file(self, doc: dict[str, Any], name: str = "isvc.yaml") -> str:
        path = self.tmp / name
        path.write_text(json.dumps(doc))  # JSON is YAML
        return str(path)

    def traffic(self, name: str = NAME) -> dict[str, int]:
        async def read() -> dict[str, int]:
            route = self.table.get(name)
            return {t.revision: t.percent for t in route.traffic} if route else {}

        return self.loop.run(read())

    def until(self, condition: Any, what: str, limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, f"not reached: {what}"
            time.sleep(0.02)

    def revisions_served(self, n: int, **headers: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        with httpx.Client(base_url=self.url, timeout=10, headers=headers) as client:
            for _ in range(n):
                response = client.post(f"/v1/models/{NAME}:predict", json={"instances": [[1]]})
                assert response.status_code == 200, response.text
                counts[response.headers["x-modelserve-revision"]] += 1
        return counts


def stack_for(loop_thread: LoopThread, tmp: Path, settings: GatewaySettings) -> Iterator[Stack]:
    table = RoutingTable()
    services = [InferenceService.model_validate(manifest())]
    platform = LocalPlatform([], tmp, table, output=(tmp / "platform.log").open("w"),
                             services=services, **OPTIONS)
    server = GatewayServer(table, settings, http_port=0, grpc_port=None, rollouts=platform)

    async def start() -> None:
        await platform.start()
        await server.start()

    loop_thread.run(start())
    try:
        yield Stack(loop_thread, table, platform, server, tmp)
    finally:
        async def stop() -> None:
            await server.stop(grace=1)
            await platform.stop()

        loop_thread.run(stop())


@pytest.fixture
def stack(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Stack]:
    yield from stack_for(loop_thread, tmp_path, GatewaySettings())


@pytest.fixture
def secured(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Stack]:
    yield from stack_for(loop_thread, tmp_path, GatewaySettings(api_keys=(KEY,)))


def test_apply_canary_rollback_promote(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--url", stack.url]
    assert stack.revisions_served(5) == Counter({rev(1): 5})

    # apply: a changed spec, a new revision, all traffic once it is ready.
    assert main(["apply", stack.file(manifest("2")), *url]) == 0
    assert capsys.readouterr().out == f"inferenceservice.serving.kserve.io/{NAME} configured\n"
    stack.until(lambda: stack.traffic() == {rev(2): 100}, "00002 rolled out")
    assert stack.revisions_served(5) == Counter({rev(2): 5})

    # apply with canaryTrafficPercent: the split once 00003 is ready.
    assert main(["apply", stack.file(manifest("3", canary=30)), *url]) == 0
    capsys.readouterr()
    stack.until(lambda: len(stack.traffic()) == 2, "canary split")
    assert stack.traffic() == {rev(3): 30, rev(2): 70}

    # canary: move the split.
    assert main(["canary", NAME, "--percent", "20", *url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"canary: {NAME} patched"
    assert "  predictor: canaryTrafficPercent 20 (spec)" in out
    assert f"     20%  {rev(3)}  (tag latest, latestRevision)" in out
    assert f"     80%  {rev(2)}  (tag prev)" in out
    assert f"    previousRolledoutRevision: {rev(1)}" in out
    assert stack.traffic() == {rev(3): 20, rev(2): 80}
    counts = stack.revisions_served(300)
    assert set(counts) == {rev(2), rev(3)}
    assert 0.12 < counts[rev(3)] / 300 < 0.28
    # Tag hosts reach one revision each.
    latest = stack.revisions_served(10, host=f"latest-{NAME}.default.example.com")
    assert latest == Counter({rev(3): 10})

    # rollback: canaryTrafficPercent 0, everything on the previous revision.
    assert main(["rollback", NAME, *url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"rollback: {NAME} patched"
    assert f"      0%  {rev(3)}  (tag latest, latestRevision)" in out
    assert f"    100%  {rev(2)}  (tag prev)" in out
    assert stack.revisions_served(20) == Counter({rev(2): 20})

    # promote: the latest takes everything; the previous one is retired.
    assert main(["promote", NAME, *url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"promote: {NAME} patched"
    assert "  predictor: canaryTrafficPercent - (spec)" in out
    assert f"    100%  {rev(3)}  (tag latest, latestRevision)" in out
    assert f"    previousRolledoutRevision: {rev(2)}" in out
    assert stack.traffic() == {rev(3): 100}
    assert stack.revisions_served(20) == Counter({rev(3): 20})
    with httpx.Client(base_url=stack.url) as client:
        body = client.post(f"/v1/models/{NAME}:predict", json={}).json()
    assert body["version"] == "3"

    # Nothing left to promote.
    assert main(["promote", NAME, *url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modelserve: error: 422: ")
    assert "is a canary in progress?" in err

    assert main(["status", NAME, *url]) == 0
    status = capsys.readouterr().out
    assert f"{NAME}  (namespace default)" in status
    assert "  url: http://svc.default.example.com" in status
    assert "Ready=True" in status


def test_apply_creates_and_reports_every_document(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack.tmp / "two.yaml"
    path.write_text(json.dumps(manifest("1")) + "\n---\n" + json.dumps(manifest("x", name="new")))
    assert main(["apply", str(path), "--url", stack.url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"inferenceservice.serving.kserve.io/{NAME} configured",
        "inferenceservice.serving.kserve.io/new created",
    ]
    stack.until(lambda: stack.traffic("new") == {rev(1, "new"): 100}, "new service ready")
    assert stack.traffic() == {rev(1): 100}  # the unchanged one made no revision


def test_errors_exit_1_with_the_platforms_message(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", stack.url]
    assert main(["canary", "nope", "--percent", "10", *url]) == 1
    assert "modelserve: error: 404: " in capsys.readouterr().err

    bad = manifest("2", minReplicas=-1)
    assert main(["apply", stack.file(bad), *url]) == 1
    err = capsys.readouterr().err
    assert "422" in err and "minReplicas" in err

    with pytest.raises(SystemExit) as caught:
        main(["canary", NAME, "--percent", "150", *url])
    assert caught.value.code == 2
    assert "must be an integer from 0 to 100" in capsys.readouterr().err

    down = ["--url", "http://127.0.0.1:9"]  # nothing listens there
    assert main(["rollback", NAME, *down]) == 1
    assert "cannot reach the platform" in capsys.readouterr().err
    assert stack.traffic() == {rev(1): 100}


def test_with_auth_on_a_missing_key_is_401(
    secured: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELSERVE_API_KEY", raising=False)
    url = ["--url", secured.url]
    assert main(["canary", NAME, "--percent", "10", *url]) == 1
    assert "modelserve: error: 401: " in capsys.readouterr().err
    assert main(["apply", secured.file(manifest("2")), *url]) == 1
    assert "401" in capsys.readouterr().err
    assert main(["canary", NAME, "--percent", "10", *url, "--api-key", "wrong"]) == 1
    assert "modelserve: error: 403: " in capsys.readouterr().err
    assert secured.traffic() == {rev(1): 100}
    assert len(secured.platform.supervisors()) == 1  # nothing was applied

    assert main(["rollback", NAME, *url, "--api-key", KEY]) == 0
    assert capsys.readouterr().out.startswith(f"rollback: {NAME} patched")
    monkeypatch.setenv("MODELSERVE_API_KEY", KEY)  # read when the parser is built
    assert main(["status", NAME, *url]) == 0
    assert "canaryTrafficPercent 0 (spec)" in capsys.readouterr().out
