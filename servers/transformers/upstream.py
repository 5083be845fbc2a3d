"""A transformer's predictor failures as our error types, the same for every transformer.

An error the predictor answered with keeps its status (a 400 from the predictor is a 400 to the
client, over REST and gRPC alike); a predictor that is down or refuses the connection is a 503,
one that does not answer in time a 504 — never a 500.

`predictor_grpc_client` is the gRPC client a transformer calls its predictor with: kserve's own
(`Model._grpc_client`) sets no message limits and is one per process, shared by every model.
kserve forwards the request's `x-request-id` in its metadata; while traces are on, each call
also carries its CLIENT span's `traceparent` (`servers/tracing.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import orjson

from servers.errors import (
    BackendTimeout,
    BackendUnavailable,
    ModelServeError,
    UpstreamError,
    grpc_code_for_http,
    status_for_http,
)
from servers.tracing import traced_grpc_client

__all__ = ["from_grpc", "from_http", "predictor_errors", "predictor_grpc_client"]

def _error_text(text: str) -> str:
    # v1/v2 error bodies are {"error": "..."}: pass on the message, not the JSON around it.
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return text


def from_http(status: int, text: str) -> ModelServeError:
    """The error for an HTTP error answer from the predictor: its status passes through."""
    if not 400 <= status < 600:
        return UpstreamError(f"predictor: {_error_text(text)}", 502, grpc.StatusCode.UNAVAILABLE)
    return UpstreamError(f"predictor: {_error_text(text)}", status, grpc_code_for_http(status))


def from_grpc(exc: grpc.RpcError) -> ModelServeError:
    """The error for a failed gRPC call to the predictor: its code passes through."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"predictor did not answer in time: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(f"predictor unavailable: {details}")
    return UpstreamError(f"predictor: {details}", status_for_http(code), code)


@contextmanager
def predictor_errors() -> Iterator[None]:
    """Within this block, failed predictor calls (kserve's gRPC or REST client) raise ours."""
    try:
        yield
    except grpc.RpcError as exc:
        raise from_grpc(exc) from exc
    except httpx.HTTPStatusError as exc:
        raise from_http(exc.response.status_code, exc.response.text) from exc
    except httpx.TimeoutException as exc:
        raise BackendTimeout(f"predictor did not answer in time: {exc}") from exc
    except httpx.TransportError as exc:
        raise BackendUnavailable(f"predictor unreachable: {exc}") from exc


def predictor_grpc_client(config: Any, options: Sequence[tuple[str, int]]) -> Any:
    """kserve's `InferenceGRPCClient` to the predictor of `config` (a `kserve.PredictorConfig`),
    with the channel `options` (the component's gRPC message limits, `servers.server.grpc_options`)
    and kserve's retry policy. Make it inside the event loop that will use it."""
    from kserve.inference_client import InferenceGRPCClient

    client = InferenceGRPCClient(
        config.predictor_host,
        use_ssl=config.use_ssl,
        timeout=config.timeout,
        retries=config.retries,
        channel_args=list(options),  # kserve appends its retry settings to this list
    )
    return traced_grpc_client(client)  # a traceparent on each call while traces are on
