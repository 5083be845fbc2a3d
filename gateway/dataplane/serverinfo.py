"""What the gateway says about itself: server metadata (`GET /v2`, gRPC `ServerMetadata`).

The Open Inference Protocol's server metadata names the server and the protocol extensions
it supports, with Triton's names. Listed are only those every service behind the gateway
really answers: the binary tensor data extension (passed through as bytes to servers that
all decode it), request/response `parameters`, the model configuration extension
(`GET /v2/models/M/config`, gRPC `ModelConfig`: Triton's own, or derived by our servers),
statistics (`GET /v2/models/M/stats`, gRPC `ModelStatistics`: summed over replicas) and the
model repository (the index here; load and unload on the control plane's door).
"""

from __future__ import annotations

__all__ = ["EXTENSIONS", "SERVER_NAME", "SERVER_VERSION", "server_metadata"]

SERVER_NAME = "modelserve-gateway"
SERVER_VERSION = "0.1.0"
EXTENSIONS = (
    "binary_tensor_data", "parameters", "model_configuration", "statistics", "model_repository",
)


def server_metadata() -> dict[str, object]:
    """`GET /v2`'s body (the OIP's `metadata_server_response`)."""
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}
