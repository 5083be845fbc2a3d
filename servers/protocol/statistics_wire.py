"""Triton's `ModelStatisticsResponse` from the statistics extension's JSON, serialized.

The JSON (`GET /v2/models/M/stats`) is the one form our servers build and the gateway sums;
gRPC `ModelStatistics` answers are this encoding of it (field numbers from Triton's
`grpc_service.proto`).
"""

from __future__ import annotations

from typing import Any

from servers.protocol.protowire import bytes_field, int_field

__all__ = ["encode_statistics_response"]

_INFER_STATS = (
    "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
    "cache_hit", "cache_miss",
)  # InferStatistics fields 1..8
_BATCH_STATS = ("compute_input", "compute_infer", "compute_output")  # fields 2..4


def _duration(doc: Any) -> bytes:
    doc = doc if isinstance(doc, dict) else {}
    return int_field(1, int(doc.get("count", 0))) + int_field(2, int(doc.get("ns", 0)))


def _model(stats: dict[str, Any]) -> bytes:
    out = bytes_field(1, str(stats.get("name", "")).encode())
    out += bytes_field(2, str(stats.get("version", "")).encode())
    out += int_field(3, int(stats.get("last_inference", 0)))
    out += int_field(4, int(stats.get("inference_count", 0)))
    out += int_field(5, int(stats.get("execution_count", 0)))
    inference = stats.get("inference_stats") or {}
    out += bytes_field(6, b"".join(
        bytes_field(number, _duration(inference.get(name)))
        for number, name in enumerate(_INFER_STATS, start=1)
    ))
    for batch in stats.get("batch_stats") or ():
        body = int_field(1, int(batch.get("batch_size", 0)))
        body += b"".join(
            bytes_field(number, _duration(batch.get(name)))
            for number, name in enumerate(_BATCH_STATS, start=2)
        )
        out += bytes_field(7, body)
    return out


def encode_statistics_response(doc: dict[str, Any]) -> bytes:
    """`{"model_stats": [...]}` as a serialized `ModelStatisticsResponse`."""
    return b"".join(bytes_field(1, _model(stats)) for stats in doc.get("model_stats", ()))
