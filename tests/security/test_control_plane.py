"""The control plane's door against a real `modelserve up`, attacked as a web page or a local
process would: nothing it did not ship runs, nothing outside the models roots is read, no body
can stall or bloat the gateway, and nothing listens beyond loopback.

Each test is one row of the security issue's table (docs/SECURITY.md lists them all).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from tests.support import ROOT, Platform, run_platform

pytestmark = pytest.mark.e2e

SKLEARN = ROOT / "inferenceservices" / "sklearn-iris.yaml"
INFERENCE_KEY = "inference-key-1"
IRIS = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
# A web page's fetch(): a foreign Origin, a "simple" content type (no CORS preflight).
CROSS_SITE = {
    "origin": "http://evil.example",
    "sec-fetch-site": "cross-site",
    "content-type": "text/plain",
}


@pytest.fixture(scope="module")
def platform(models_root: Path, logs: Path) -> Iterator[Platform]:
    """A default `modelserve up` (no API keys: how every developer runs it)."""
    with run_platform(models_root, logs, files=[SKLEARN]) as running:
        yield running


@pytest.fixture(scope="module")
def keyed(models_root: Path, logs: Path) -> Iterator[Platform]:
    """`modelserve up` with inference API keys on."""
    env = {"MODELSERVE_GATEWAY_API_KEYS": INFERENCE_KEY}
    with run_platform(models_root, logs, files=[SKLEARN], env=env) as running:
        yield running


def _service(name: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"containers": [{"name": "kserve-container", **container}]}},
    }


def _shell(marker: Path) -> dict[str, Any]:
    return _service(
        "pwned", {"image": "x", "command": ["sh", "-c", f"touch {marker}"], "args": []}
    )


def _sklearn(name: str, storage_uri: str) -> dict[str, Any]:
    return _service(
        name,
        {
            "image": "ghcr.io/modelserve/servers:0.1.0",
            "command": ["python", "-m", "servers.sklearn"],
            "args": [f"--model_name={name}", "--model_dir=/mnt/models"],
            "env": [{"name": "STORAGE_URI", "value": storage_uri}],
        },
    )


def _no_marker(marker: Path) -> None:
    # A started command would have touched it within a second or two.
    time.sleep(2)
    assert not marker.exists(), "the spec's shell command ran"


def test_a_cross_site_text_plain_post_is_refused_and_runs_nothing(
    platform: Platform, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    body = json.dumps(_shell(marker))
    # To the control plane (where the rollout API is now) and to the data plane (where it was).
    admin = httpx.post(platform.admin_url + "/v1/services", content=body, headers=CROSS_SITE)
    assert admin.status_code == 403, admin.text
    assert "cross-site" in admin.json()["error"]
    data = httpx.post(platform.url + "/v1/services", content=body, headers=CROSS_SITE)
    assert data.status_code == 404
    assert "control plane" in data.json()["error"]
    # Even with the token (a page cannot have it) text/plain is not a body type we accept,
    # and a foreign Origin alone is refused too.
    with_token = {**platform.admin_headers, "content-type": "text/plain"}
    plain = httpx.post(platform.admin_url + "/v1/services", content=body, headers=with_token)
    assert plain.status_code == 415, plain.text
    foreign = {**platform.admin_headers, "content-type": "application/json",
               "origin": "http://localhost:3000"}
    origin = httpx.post(platform.admin_url + "/v1/services", content=body, headers=foreign)
    assert origin.status_code == 403 and "Origin" in origin.json()["error"]
    rebinding = {**platform.admin_headers, "content-type": "application/json",
                 "host": "evil.example:8082"}
    rebound = httpx.post(platform.admin_url + "/v1/services", content=body, headers=rebinding)
    assert rebound.status_code == 403 and "Host" in rebound.json()["error"]
    _no_marker(marker)


def test_inference_keys_never_open_the_control_plane(keyed: Platform, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    body = _shell(marker)
    for headers in ({"x-api-key": INFERENCE_KEY}, {"authorization": f"Bearer {INFERENCE_KEY}"}):
        refused = httpx.post(keyed.admin_url + "/v1/services", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "inference API keys do not open the control plane" in refused.json()["error"]
        listed = httpx.get(keyed.admin_url + "/v1/services", headers=headers)
        assert listed.status_code == 403
    anonymous = httpx.post(keyed.admin_url + "/v1/services", json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    # ... and an admin token is not needed (nor accepted) for inference.
    served = httpx.post(keyed.url + "/v1/models/sklearn-iris:predict", json=IRIS,
                        headers={"x-api-key": INFERENCE_KEY})
    assert served.status_code == 200, served.text
    with_token = httpx.post(keyed.url + "/v1/models/sklearn-iris:predict", json=IRIS,
                            headers={"x-api-key": keyed.token})
    assert with_token.status_code == 403
    _no_marker(marker)


def test_the_admin_token_cannot_launch_a_command_we_do_not_ship(
    platform: Platform, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    with platform.admin() as admin:
        refused = admin.post("/v1/services", json=_shell(marker))
        assert refused.status_code == 403, refused.text
        assert "launch policy" in refused.json()["error"]
        for command in (["python", "-c", f"open('{marker}', 'w')"],
                        ["python", "-m", "http.server"],
                        ["python", "-X", "dev", "-m", "servers.sklearn"]):
            spec = _service("pwned", {"image": "x", "command": command})
            answer = admin.post("/v1/services", json=spec)
            assert answer.status_code == 403, (command, answer.text)
        # Code-loading environment and flags, on a shipped entry point.
        spec = _sklearn("pwned", "pvc://modelserve-models/iris")
        spec["spec"]["predictor"]["containers"][0]["env"].append(
            {"name": "PYTHONPATH", "value": str(tmp_path)}
        )
        assert admin.post("/v1/services", json=spec).status_code == 403
        assert admin.get("/v1/services/pwned").status_code == 404
    _no_marker(marker)


def test_remote_storage_and_remote_pickles_are_refused(platform: Platform) -> None:
    with platform.admin() as admin:
        for uri in ("http://127.0.0.1:9/model.joblib", "s3://bucket/iris", "gs://b/m.pkl"):
            answer = admin.post("/v1/services", json=_sklearn("remote", uri))
            assert answer.status_code == 403, (uri, answer.text)
            assert "storage policy" in answer.json()["error"]
            assert "--allow-remote-storage" in answer.json()["error"]


def test_storage_outside_the_models_roots_is_refused_alike_whether_it_exists_or_not(
    platform: Platform, models_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "escape"
    outside.mkdir()
    (models_root / "escape-link").symlink_to(outside)
    try:
        messages = {}
        with platform.admin() as admin:
            for uri in ("file:///etc/ssl", "file:///etc/no-such-dir", "/etc",
                        "pvc://modelserve-models/../../etc", "pvc://modelserve-models/escape-link"):
                answer = admin.post("/v1/services", json=_sklearn("files", uri))
                assert answer.status_code == 403, (uri, answer.text)
                messages[uri] = answer.json()["error"].replace(repr(uri), "URI")
        # The same words for an existing and a missing path: the answer tells nothing.
        assert messages["file:///etc/ssl"] == messages["file:///etc/no-such-dir"]
        assert len(set(messages.values())) == 1, messages
    finally:
        (models_root / "escape-link").unlink()


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # gRPC's dual-stack sockets: ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def test_no_listener_of_the_platform_is_outside_loopback(platform: Platform) -> None:
    root = psutil.Process(platform.process.pid)
    processes = [root, *root.children(recursive=True)]
    listening = []
    for process in processes:
        try:
            # psutil 6 renamed connections() to net_connections().
            connections = getattr(process, "net_connections", process.connections)(kind="inet")
        except psutil.NoSuchProcess:
            continue
        listening += [c.laddr for c in connections if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 5  # REST, gRPC, admin; the predictor's REST and gRPC
    outside = [addr for addr in listening if not _loopback(addr.ip)]
    assert not outside, f"listening beyond loopback: {outside}"
    ports = {addr.port for addr in listening}
    assert {platform.port, platform.grpc_port, platform.admin_port} <= ports


# 7 levels of aliases, 10 wide: 10**7 strings once expanded (the table's 645 bytes).
BOMB = "a: &a [" + ",".join(['"lol"'] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
    for i in range(7)
)


def _probe_while(platform: Platform, attack: threading.Event) -> list[float]:
    """Probe the data plane (health and a prediction) until `attack` is cleared."""
    latencies: list[float] = []
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        while attack.is_set() or len(latencies) < 20:
            started = time.perf_counter()
            assert client.get("/v2/health/live").status_code == 200
            assert client.post("/v1/models/sklearn-iris:predict", json=IRIS).status_code == 200
            latencies.append(time.perf_counter() - started)
    return latencies


def test_a_yaml_bomb_is_refused_while_inference_goes_on(platform: Platform) -> None:
    assert len(BOMB) < 700
    attack = threading.Event()
    attack.set()
    answers: list[httpx.Response] = []

    def bomb() -> None:
        headers = {**platform.admin_headers, "content-type": "application/yaml"}
        with httpx.Client(timeout=60) as client:
            for _ in range(20):
                answers.append(client.post(platform.admin_url + "/v1/services",
                                           content=BOMB, headers=headers))
        attack.clear()

    before = psutil.Process(platform.process.pid).memory_info().rss
    thread = threading.Thread(target=bomb)
    thread.start()
    latencies = _probe_while(platform, attack)
    thread.join()
    assert len(answers) == 20
    assert {a.status_code for a in answers} == {400}
    assert "anchors" in answers[0].json()["error"]
    # The bar: probes under 1 s while the bomb is sent (it stalled them 5-10 s).
    assert max(latencies) < 1.0, latencies
    growth = psutil.Process(platform.process.pid).memory_info().rss - before
    assert growth < 64 * 2**20
    print(f"\nYAML bomb x20: {len(latencies)} probes, slowest {max(latencies) * 1000:.0f} ms, "
          f"gateway RSS {growth / 2**20:+.1f} MiB")


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_300_mb_body_is_refused_without_reading_it(platform: Platform) -> None:
    before = _peak_rss(platform.process.pid)
    chunk = b"x" * (1 << 20)

    def body() -> Iterator[bytes]:
        for _ in range(300):
            yield chunk

    headers = {**platform.admin_headers, "content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        # Declared: refused before a byte of the body is read (a raw client: httpx will not
        # send a Content-Length it does not keep).
        with socket.create_connection(("127.0.0.1", platform.admin_port), timeout=30) as raw:
            raw.sendall(
                b"POST /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + platform.token.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{"
                % (300 << 20)
            )
            answer = raw.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        # Streamed (chunked): refused once past the limit; the rest is never buffered.
        try:
            streamed = client.post(platform.admin_url + "/v1/services", headers=headers,
                                   content=body())
            assert streamed.status_code == 413, streamed.text
            assert "limit" in streamed.json()["error"]
        except httpx.TransportError:
            pass  # the server closed the connection mid-upload after answering 413
    growth = _peak_rss(platform.process.pid) - before
    assert growth < 64 * 2**20
    print(f"\n300 MB body: peak RSS {growth / 2**20:+.1f} MiB")
    # The door still works.
    with platform.admin() as admin:
        assert admin.get("/v1/services").status_code == 200


def test_grpc_messages_up_to_the_gateways_limit_reach_the_component(platform: Platform) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    rows = (20 << 20) // 16  # ~20 MiB of FP32: above the components' old 8 MiB limit
    values = np.tile(np.float32([6.8, 2.8, 4.8, 1.4]), rows)
    request = pb.ModelInferRequest(model_name="sklearn-iris")
    request.inputs.add(name="input-0", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(values.tobytes())
    limit = 64 << 20
    options = [("grpc.max_send_message_length", limit),
               ("grpc.max_receive_message_length", limit)]
    with grpc.insecure_channel(platform.grpc_target, options=options) as channel:
        try:
            answer = stubs.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=120)
        except grpc.RpcError as exc:
            assert exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        else:
            assert answer.outputs[0].shape == [rows]
