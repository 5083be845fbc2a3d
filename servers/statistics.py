"""Triton's statistics extension, counted for real in our servers.

Each served model keeps a `ModelStatistics`: request counts and nanosecond totals in Triton's
schema (`GET /v2/models/M/stats`, gRPC `ModelStatistics`; Triton's docs/protocol/
extension_statistics.md). What is counted where:

- `success` / `fail`: one per inference request that reached the model (`ServedModel.__call__`),
  with its whole time there. Requests refused before (unknown model, a body that does not parse)
  count nowhere, as in Triton.
- `compute_input` / `compute_output`: decoding the request's tensors and encoding the answer
  (`TensorModel.predict`); for transformers, whatever they mark with `phase`.
- `queue`: waiting for the model, in the adaptive batcher's queue or for a thread of the
  executor (`off_loop`); `compute_infer`: the model call itself. What no phase claims of a
  request's time (a transformer's call to its predictor) counts as `compute_infer`.
- `inference_count` counts rows (a request of batch 8 counts 8), `execution_count` model calls:
  with batching on, one call answers several requests, so execution count < inference count.
  `batch_stats` has one entry per batch size executed.

The timing of the request in flight travels in a context variable (set by `ServedModel.__call__`
for the request's task), so the phases need no extra arguments through the model's code; the
batcher, whose worker task serves many requests, takes each request's timing at `submit`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Duration",
    "ModelStatistics",
    "Phase",
    "RequestTiming",
    "current_timing",
    "phase",
]

Phase = Literal["queue", "compute_input", "compute_infer", "compute_output"]

_CURRENT: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar(
    "modelserve_request_timing", default=None
)


@dataclass(slots=True)
class Duration:
    """Triton's `StatisticDuration`: how many, and their total nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(ns, 0)

    def document(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class _BatchStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class RequestTiming:
    """One request's time in the model, by phase (nanoseconds), as the phases report it."""

    statistics: ModelStatistics
    start_ns: int
    rows: int = 1
    queue_ns: int = 0
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    # Model calls made for this request alone (rows, ns); batched calls are counted by the
    # batcher, once for all the requests they answered.
    executions: list[tuple[int, int]] = field(default_factory=list)
    batched: bool = False

    def add(self, name: Phase, ns: int) -> None:
        """Add `ns` to phase `name`."""
        if name == "queue":
            self.queue_ns += ns
        elif name == "compute_input":
            self.input_ns += ns
        elif name == "compute_infer":
            self.infer_ns += ns
        else:
            self.output_ns += ns


def current_timing() -> RequestTiming | None:
    """The timing of the request this task is running for, if a model's `__call__` set one."""
    return _CURRENT.get()


@contextmanager
def phase(name: Phase) -> Iterator[None]:
    """Count the time of the `with` block under `name` for the current request (if any)."""
    timing = _CURRENT.get()
    if timing is None:
        yield
        return
    start = time.perf_counter_ns()
    try:
        yield
    finally:
        timing.add(name, time.perf_counter_ns() - start)


class ModelStatistics:
    """The counters of one served model (one version: our servers serve one each)."""

    def __init__(self) -> None:
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self._batches: dict[int, _BatchStatistics] = {}

    @contextmanager
    def request(self) -> Iterator[RequestTiming]:
        """Time one inference request: success or failure is counted when the block ends."""
        timing = RequestTiming(self, time.perf_counter_ns())
        token = _CURRENT.set(timing)
        try:
            yield timing
        except BaseException:
            self.fail.add(time.perf_counter_ns() - timing.start_ns)
            self.last_inference_ms = int(time.time() * 1000)
            raise
        finally:
            _CURRENT.reset(token)
        self._succeeded(timing, time.perf_counter_ns() - timing.start_ns)

    def _succeeded(self, timing: RequestTiming, total_ns: int) -> None:
        self.success.add(total_ns)
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += timing.rows
        attributed = timing.queue_ns + timing.input_ns + timing.infer_ns + timing.output_ns
        infer_ns = timing.infer_ns
        if not timing.executions and not timing.batched:
            # No model call was timed (a transformer calling its predictor): the rest is infer.
            infer_ns += max(total_ns - attributed, 0)
            timing.executions.append((timing.rows, infer_ns))
        self.queue.add(timing.queue_ns)
        self.compute_input.add(timing.input_ns)
        self.compute_infer.add(infer_ns)
        self.compute_output.add(timing.output_ns)
        for index, (rows, ns) in enumerate(timing.executions):
            # The request's own decoding and encoding go with its first (usually only) call.
            first = index == 0
            self.executed(rows, ns, timing.input_ns if first else 0,
                          timing.output_ns if first else 0)

    def executed(self, rows: int, infer_ns: int, input_ns: int = 0, output_ns: int = 0) -> None:
        """Count one model call over `rows` rows (the batch size)."""
        self.execution_count += 1
        batch = self._batches.get(rows)
        if batch is None:
            batch = self._batches[rows] = _BatchStatistics()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def document(self, name: str, version: str) -> dict[str, Any]:
        """This model's entry of `model_stats`, in Triton's JSON schema."""
        zero = Duration().document()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.document(),
                "fail": self.fail.document(),
                "queue": self.queue.document(),
                "compute_input": self.compute_input.document(),
                "compute_infer": self.compute_infer.document(),
                "compute_output": self.compute_output.document(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": batch.compute_input.document(),
                    "compute_infer": batch.compute_infer.document(),
                    "compute_output": batch.compute_output.document(),
                }
                for size, batch in sorted(self._batches.items())
            ],
            "memory_usage": [],
        }
