"""`modelserve apply/canary/promote/rollback/status/delete` against a real control plane (the
admin app, `create_admin_app` with `rollouts=` a LocalPlatform over tiny fake components, on its
own port) in front of a real data plane (`GatewayServer`), as a user runs them: the CLI's `main`
in the test thread, both servers and the platform in a background event loop."""

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
from gateway.controlplane.api.server import AdminServer
from gateway.controlplane.api.tokens import write_token_file
from gateway.controlplane.manifests import InferenceService
from gateway.controlplane.platform import LocalPlatform
from gateway.dataplane.server import GatewayServer
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings
from tests.gateway.conftest import LoopThread
from tests.gateway.test_platform_revisions import NAME, OPTIONS, manifest, rev
from tests.gateway.test_services import running_admin
from tests.gateway.test_supervisor import custom

KEY = "k-123"  # an inference API key (the data plane's)
TOKEN = "admin-t0ken"  # the control plane's admin token


@dataclass
class Stack:
    loop: LoopThread
    table: RoutingTable
    platform: LocalPlatform
    server: GatewayServer
    admin: AdminServer
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin.port}"

    @property
    def cli(self) -> list[str]:
        """The rollout commands' flags for this control plane, with the admin token."""
        return ["--admin-url", self.admin_url, "--token", TOKEN]

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
                             services=services, policy=custom(tmp), **OPTIONS)
    server = GatewayServer(table, settings, http_port=0, grpc_port=None)
    keys = settings.api_key_values()

    async def start() -> None:
        await platform.start()
        await server.start()

    loop_thread.run(start())
    try:
        with running_admin(
            loop_thread, table, server.metrics, TOKEN, rollouts=platform,
            inference_url=f"http://127.0.0.1:{server.http_port}",
            inference_key=keys[0] if keys else None,
        ) as admin:
            yield Stack(loop_thread, table, platform, server, admin, tmp)
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
    url = stack.cli
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
    # Nor to roll back: the canary was promoted.
    assert main(["rollback", NAME, *url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"modelserve: error: nothing to roll back: {NAME} has no canary")
    assert stack.traffic() == {rev(3): 100}

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
    assert main(["apply", str(path), *stack.cli]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"inferenceservice.serving.kserve.io/{NAME} configured",
        "inferenceservice.serving.kserve.io/new created",
    ]
    stack.until(lambda: stack.traffic("new") == {rev(1, "new"): 100}, "new service ready")
    assert stack.traffic() == {rev(1): 100}  # the unchanged one made no revision


def test_errors_exit_1_with_the_platforms_message(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    url = stack.cli
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

    down = ["--admin-url", "http://127.0.0.1:9", "--token", TOKEN]  # nothing listens there
    assert main(["rollback", NAME, *down]) == 1
    assert "cannot reach the platform" in capsys.readouterr().err
    assert stack.traffic() == {rev(1): 100}


def test_delete_removes_the_service_and_stops_its_revisions(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    [supervisor] = stack.platform.supervisors()
    assert main(["delete", NAME, *stack.cli]) == 0
    assert capsys.readouterr().out == f'inferenceservice.serving.kserve.io "{NAME}" deleted\n'
    assert stack.table.get(NAME) is None
    assert supervisor.pid is None
    with httpx.Client(base_url=stack.url) as client:
        assert client.post(f"/v1/models/{NAME}:predict", json={}).status_code == 404
    assert main(["delete", NAME, *stack.cli]) == 1
    assert "modelserve: error: 404: " in capsys.readouterr().err


def test_the_control_plane_takes_an_admin_token_not_an_inference_key(
    secured: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELSERVE_ADMIN_TOKEN", raising=False)
    runtime = secured.tmp / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # no token file of `up` there
    admin = ["--admin-url", secured.admin_url]
    assert main(["canary", NAME, "--percent", "10", *admin]) == 1
    assert "modelserve: error: 401: " in capsys.readouterr().err
    assert main(["apply", secured.file(manifest("2")), *admin]) == 1
    assert "401" in capsys.readouterr().err
    assert main(["canary", NAME, "--percent", "10", *admin, "--token", "wrong"]) == 1
    assert "modelserve: error: 403: " in capsys.readouterr().err
    assert main(["canary", NAME, "--percent", "10", *admin, "--token", KEY]) == 1
    assert "modelserve: error: 403: " in capsys.readouterr().err
    for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}):
        assert httpx.get(secured.admin_url + "/v1/services", headers=headers).status_code == 403
    assert secured.traffic() == {rev(1): 100}
    assert len(secured.platform.supervisors()) == 1  # nothing was applied

    assert main(["canary", NAME, "--percent", "0", *admin, "--token", TOKEN]) == 0
    assert capsys.readouterr().out.startswith(f"canary: {NAME} patched")
    monkeypatch.setenv("MODELSERVE_ADMIN_TOKEN", TOKEN)  # read when the command runs
    assert main(["status", NAME, *admin]) == 0
    assert "canaryTrafficPercent 0 (spec)" in capsys.readouterr().out
    # Without --token or the variable: the token file `modelserve up` writes for the port.
    monkeypatch.delenv("MODELSERVE_ADMIN_TOKEN")
    write_token_file(secured.admin.port, secured.admin_url, TOKEN)
    assert main(["status", NAME, *admin]) == 0
    assert "canaryTrafficPercent 0 (spec)" in capsys.readouterr().out
    # The data plane still takes the inference key, and only it, for predictions.
    assert secured.revisions_served(3, **{"x-api-key": KEY}) == Counter({rev(1): 3})
    with httpx.Client(base_url=secured.url, headers={"x-api-key": TOKEN}) as client:
        assert client.post(f"/v1/models/{NAME}:predict", json={}).status_code == 403
