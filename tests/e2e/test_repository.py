"""Triton's repository extension on a real `modelserve up`: the index on both doors, load and
unload on the control plane's, with Triton's own clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as triton_http
import yaml
from tritonclient.utils import InferenceServerException

from tests.support import ROOT, Platform, iris_manifest, run_platform

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture(scope="module")
def platform(
    models_root: Path, logs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    folder = tmp_path_factory.mktemp("repository-manifests")
    files = []
    for name, replicas in (("zero-iris", (0, 1)), ("kept-iris", (1, 1))):
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(iris_manifest(name, replicas=replicas)))
        files.append(path)
    with run_platform(models_root, logs, files) as running:
        yield running


def _admin_client(platform: Platform) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(platform.admin_url.removeprefix("http://"))


def _index(platform: Platform) -> dict[str, dict[str, Any]]:
    client = triton_http.InferenceServerClient(platform.url.removeprefix("http://"))
    try:
        entries: list[dict[str, Any]] = client.get_model_repository_index()
    finally:
        client.close()
    return {e["name"]: e for e in entries}


def _wait_state(platform: Platform, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        entry = _index(platform)[name]
        if entry["state"] == state or time.monotonic() > deadline:
            return entry
        time.sleep(0.2)


def test_index_lists_every_service_ready(platform: Platform) -> None:
    index = _index(platform)
    assert index == {"kept-iris": {"name": "kept-iris", "state": "READY"},
                     "zero-iris": {"name": "zero-iris", "state": "READY"}}
    ready = httpx.post(f"{platform.url}/v2/repository/index", json={"ready": True}).json()
    assert [e["name"] for e in ready] == ["kept-iris", "zero-iris"]
    bad = httpx.post(f"{platform.url}/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400 and "ready" in bad.json()["error"]


def test_unload_scales_to_zero_and_load_wakes_it(platform: Platform) -> None:
    client = _admin_client(platform)
    headers = platform.admin_headers
    try:
        client.unload_model("zero-iris", headers=headers)
        entry = _wait_state(platform, "zero-iris", "UNAVAILABLE")
        assert entry["state"] == "UNAVAILABLE" and "scaled to zero" in entry["reason"], entry
        time.sleep(2)  # a few autoscaler ticks: the KPA's history is gone, it stays at zero
        assert _index(platform)["zero-iris"]["state"] == "UNAVAILABLE"
        client.load_model("zero-iris", headers=headers)  # answers once it is ready
        assert _index(platform)["zero-iris"]["state"] == "READY"
        client.load_model("zero-iris", headers=headers)  # already loaded: nothing to do
    finally:
        client.close()
    answer = httpx.post(f"{platform.url}/v1/models/zero-iris:predict", json=BODY, timeout=30)
    assert answer.status_code == 200, answer.text


def test_unload_refuses_a_service_that_keeps_replicas(platform: Platform) -> None:
    client = _admin_client(platform)
    try:
        with pytest.raises(InferenceServerException, match="minReplicas: 1") as refused:
            client.unload_model("kept-iris", headers=platform.admin_headers)
        assert refused.value.status() == "422"
        with pytest.raises(InferenceServerException, match="no InferenceService") as missing:
            client.load_model("nope", headers=platform.admin_headers)
        assert missing.value.status() == "404"
        with pytest.raises(InferenceServerException, match="not supported") as config:
            client.load_model("kept-iris", headers=platform.admin_headers,
                              config=json.dumps({"backend": "python"}))
        assert config.value.status() == "400"
    finally:
        client.close()
    assert _index(platform)["kept-iris"]["state"] == "READY"


def test_control_actions_need_the_admin_door_and_token(platform: Platform) -> None:
    for action in ("load", "unload"):
        inference = httpx.post(f"{platform.url}/v2/repository/models/kept-iris/{action}")
        assert inference.status_code == 403, inference.text
        assert "control plane" in inference.json()["error"]
        anonymous = httpx.post(f"{platform.admin_url}/v2/repository/models/kept-iris/{action}")
        assert anonymous.status_code == 401
        forged = httpx.post(  # a page's form post, with the token even: refused
            f"{platform.admin_url}/v2/repository/models/kept-iris/{action}",
            headers={**platform.admin_headers, "origin": "http://evil.example",
                     "content-type": "application/x-www-form-urlencoded"},
            content=b"x=1",
        )
        assert forged.status_code == 403
    assert _index(platform)["kept-iris"]["state"] == "READY"


_GRPC = """
import json, sys
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
out = {"index": client.get_model_repository_index(as_json=True)}
try:
    client.load_model("kept-iris")
except g.InferenceServerException as exc:
    out["load"] = [exc.status(), exc.message()]
print(json.dumps(out))
"""


def test_grpc_index_and_refused_load(platform: Platform) -> None:
    completed = subprocess.run([sys.executable, "-c", _GRPC, platform.grpc_target],
                               capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    out = json.loads(completed.stdout)
    names = {m["name"]: m["state"] for m in out["index"]["models"]}
    assert names == {"kept-iris": "READY", "zero-iris": "READY"}
    assert out["load"][0] == "StatusCode.PERMISSION_DENIED"
    assert "control plane" in out["load"][1]
