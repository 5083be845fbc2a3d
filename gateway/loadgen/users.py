"""REST Locust users: KServe v1, v2 (Open Inference Protocol) JSON and the v2 binary extension.

Each user sends its service's payload in a closed loop (no think time), so the platform, not a
schedule, sets the pace. The service comes from `--service`, its payloads from `--payloads`
(see locustfile.py).
"""

from __future__ import annotations

from pathlib import Path

from locust import FastHttpUser, constant, task

from gateway.loadgen.bodies import binary_body, json_body

__all__ = ["V1User", "V2BinaryUser", "V2User"]

JSON_HEADERS = {"Content-Type": "application/json"}


def _post(user: FastHttpUser, path: str, body: bytes, headers: dict[str, str], name: str) -> None:
    # FastHttpSession's hint says str | dict, but its docstring and geventhttpclient take bytes.
    user.client.post(path, data=body, headers=headers, name=name)  # type: ignore[arg-type]


def _target(user: FastHttpUser) -> tuple[str, Path]:
    """The service to load and its payload directory, from the command line."""
    options = user.environment.parsed_options
    assert options is not None, f"{type(user).__name__} runs under the locust command line"
    return str(options.service), Path(options.payloads)


class V1User(FastHttpUser):
    """`POST /v1/models/<service>:predict` with `<service>.v1.json`."""

    wait_time = constant(0)

    @task
    def predict(self) -> None:
        service, payloads = _target(self)
        _post(self, f"/v1/models/{service}:predict", json_body(service, "v1", payloads),
              JSON_HEADERS, f"v1 {service}")


class V2User(FastHttpUser):
    """`POST /v2/models/<service>/infer` with `<service>.v2.json`."""

    wait_time = constant(0)

    @task
    def infer(self) -> None:
        service, payloads = _target(self)
        _post(self, f"/v2/models/{service}/infer", json_body(service, "v2", payloads),
              JSON_HEADERS, f"v2 {service}")


class V2BinaryUser(FastHttpUser):
    """The v2 binary extension: JSON header + raw bytes, `Inference-Header-Content-Length`."""

    wait_time = constant(0)

    @task
    def infer(self) -> None:
        service, payloads = _target(self)
        body = binary_body(service, payloads)
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(body.header_length),
        }
        _post(self, f"/v2/models/{service}/infer", body.body, headers, f"v2-binary {service}")
