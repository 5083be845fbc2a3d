"""gRPC `ModelStreamInfer` through the gateway: a stream of requests, each answered in order.

Each request of the stream is routed and sent on its own, as a unary `ModelInfer` would be
(so it takes the same revision split, activator, retries and outlier ejection, and works with
every backend: ours serve no stream, and Triton's is the same per request for a model that is
not decoupled). Answers go back in the order the requests came, as Triton's answers for a
non-decoupled model do; a request that fails is answered with its `error_message` (and the
request's `id`, as Triton repopulates it) and the stream goes on.

Up to `window` requests of one stream are in flight at once: beyond that the gateway stops
reading the stream until an answer has gone out, so a client that writes faster than the
models answer is held back by HTTP/2 flow control instead of filling the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.dataplane.grpc_wire import read_strings
from servers.errors import InvalidInput
from servers.protocol.protowire import bytes_field

__all__ = ["STREAM_WINDOW", "answer_in_order", "stream_error", "stream_response"]

STREAM_WINDOW = 64
_REQUEST_ID = 3  # ModelInferRequest.id; ModelInferResponse.id too
_ERROR_MESSAGE, _INFER_RESPONSE = 1, 2  # ModelStreamInferResponse


def stream_response(infer_response: bytes) -> bytes:
    """A `ModelStreamInferResponse` carrying a serialized `ModelInferResponse`."""
    return bytes_field(_INFER_RESPONSE, infer_response)


def stream_error(request: bytes, message: str) -> bytes:
    """A `ModelStreamInferResponse` saying why `request` failed, with the request's id."""
    try:
        request_id = read_strings(request, (_REQUEST_ID,)).get(_REQUEST_ID, "")
    except InvalidInput:
        request_id = ""
    answer = bytes_field(_ERROR_MESSAGE, message.encode())
    if request_id:
        answer += bytes_field(_INFER_RESPONSE, bytes_field(_REQUEST_ID, request_id.encode()))
    return answer


async def answer_in_order(
    requests: AsyncIterator[bytes],
    answer: Callable[[bytes], Awaitable[bytes]],
    window: int = STREAM_WINDOW,
) -> AsyncIterator[bytes]:
    """`answer(request)` for each request, started as they come (at most `window` at once),
    yielded in the requests' order. `answer` must not raise for a request's own failure (it
    answers it); an error reading the stream ends it once the answers before it are out."""
    pending: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue()
    room = asyncio.Semaphore(window)

    async def read() -> None:
        try:
            async for request in requests:
                await room.acquire()
                pending.put_nowait(asyncio.ensure_future(answer(request)))
        finally:
            pending.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (next_answer := await pending.get()) is not None:
            yield await next_answer
            room.release()
        await reader  # re-raises what ended the stream's reading, if anything did
    finally:
        reader.cancel()
        while not pending.empty():
            left = pending.get_nowait()
            if left is not None:
                left.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
