"""Bounded work per request: how many images, how many pixels, and until when.

A request costs what its images' pixels cost, not what its bytes do: a black 4000x4000 PNG is
~16 KB and decodes to 16 M pixels. Measured here (Pillow 13, one core): ~7 ms of CPU per
megapixel for 8-bit grayscale PNGs, ~15 for RGB, so 64 such PNGs in one 1.3 MB body cost 5.7
CPU-s. The transformer therefore reads every image's header first (`PIL.Image.open` is lazy:
the size is known, no pixel is decoded), refuses the request when the batch or its summed
pixels are over the limits, and only then decodes, one image at a time, checking between
images whether the request was abandoned (`Cancellation`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from servers.errors import BackendTimeout, PayloadTooLarge

__all__ = [
    "DEFAULT_DECODE_TIMEOUT_S",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_REQUEST_PIXELS",
    "Abandoned",
    "Cancellation",
    "PixelBudget",
    "RequestLimits",
    "run_cancellable",
]

T = TypeVar("T")
log = logging.getLogger("modelserve.transformers.image")

# The demo Triton repository's `max_batch_size: 64`: Triton refused larger batches anyway, but
# only after the transformer had decoded every image.
DEFAULT_MAX_BATCH_SIZE = 64
# A full default batch of 1024x1024 images: ~0.5 CPU-s of decoding for grayscale PNGs, ~1 s
# for RGB (the rates above), where 64 images at the per-image limit would cost 7-15 CPU-s. The
# demo's digits are 8x8: any client crop of a digit fits many times over. Memory is bounded by
# the per-image limit instead, since images are decoded one at a time.
DEFAULT_MAX_REQUEST_PIXELS = 64 * 1024 * 1024
# The digits-classifier InferenceService's `timeout: 30`: by then its client has had a 504.
DEFAULT_DECODE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RequestLimits:
    """The most one request may ask of the transformer."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS
    decode_timeout_s: float = DEFAULT_DECODE_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_request_pixels", "decode_timeout_s"):
            value = getattr(self, name)
            if not value > 0:  # NaN too
                raise ValueError(f"{name} must be positive, got {value}")

    def check_batch_size(self, count: int) -> None:
        """PayloadTooLarge (413) for a batch of more than `max_batch_size` images."""
        if count > self.max_batch_size:
            raise PayloadTooLarge(
                f"the batch has {count} images, over the limit of {self.max_batch_size} "
                "images per request"
            )


class PixelBudget:
    """The pixels a request's images may hold together, spent image by image from headers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, index: int, pixels: int) -> None:
        """Count instance `index`'s pixels; PayloadTooLarge (413) once the sum is over."""
        self.spent += pixels
        if self.spent > self.limit:
            raise PayloadTooLarge(
                f"instances 0 to {index} hold {self.spent} pixels, over the limit of "
                f"{self.limit} pixels per request"
            )


class Abandoned(Exception):
    """Raised in the decoding thread once the request's task was cancelled: nobody waits for
    the result any more."""


@dataclass
class Cancellation:
    """Tells decoding, in its worker thread, to stop: the request's task was cancelled
    (`cancelled`, set by `run_cancellable`) or the request is older than `timeout_s`."""

    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def check(self, done: int, total: int) -> None:
        """Called before each image: Abandoned or BackendTimeout (504) to stop there."""
        if self.cancelled.is_set():
            log.warning("request abandoned: decoding stopped after %d of %d images", done, total)
            raise Abandoned
        if time.monotonic() - self.started > self.timeout_s:
            raise BackendTimeout(
                f"decoding the images took over {self.timeout_s:g} s: stopped after {done} "
                f"of {total} images"
            )


async def run_cancellable(work: Callable[[Cancellation], T], cancellation: Cancellation) -> T:
    """`work(cancellation)` in the running loop's executor, stopped when the request is.

    A thread cannot be interrupted, so cancellation is cooperative: when the task awaiting the
    work is cancelled, `cancellation.cancelled` is set and `work`, which checks it between
    images, stops before its next one. At most the image in progress is finished. gRPC cancels
    the task when its client cancels or its deadline passes (grpc.aio cancels the handler).
    Over REST, uvicorn does not cancel a handler whose client disconnected; our REST routes
    (`servers/rest.py`) watch for the disconnect and cancel the task themselves, for models
    that set `cancel_on_disconnect`. `cancellation`'s timeout bounds the rest.
    """
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, functools.partial(work, cancellation))
    except asyncio.CancelledError:
        cancellation.cancelled.set()
        raise
