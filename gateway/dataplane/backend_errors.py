"""Client mistakes a backend blames on itself, or does not survive.

**Answers (`client_error_status`).** Triton's REST front end answers a malformed v2 JSON body
with 500: `{"inputs": [`, `{"inputs": {}}`, a `shape` that is not an array, data that does not
match its shape, a body without `inputs` (measured against the tritonserver behind
triton-digits; its other client errors, such as an unknown input or a byte-size mismatch, are
already 400). Passed through, a client's typo counted as a server error on the dashboard and in
the SLOs.

The gateway does not decode bodies on the way in (the point of a byte-forwarding proxy),
so instead of checking every v2 envelope before forwarding, it reclassifies such answers on
the way out: only a 500 is looked at, so an answer that succeeded costs one integer
comparison, and a 500 that is not one of these parse failures passes unchanged.

**Requests (`v2_request_problem`).** A few malformed v2 REST bodies cannot be fixed on the
way out, because tritonserver never answers them as errors (measured, tritonserver of the
`nvidia-pytriton` wheel behind triton-digits):
- a JSON tensor whose `shape` holds far more elements than its `data`: the front end sizes a
  buffer from the shape before it reads the data (`serialized.resize(element_count *
  dtype_size)` in its http_server.cc), so `[1099511627776, 8, 8]` throws `std::bad_alloc` and
  the whole tritonserver aborts (SIGABRT; every model it serves is down until it restarts,
  and the gateway answers 503), and a shape of a few GiB is allocated and zero-filled first;
- a batch dimension of 2**32 or more with binary data: Triton keeps it modulo 2**32, so
  `[4294967296, 8, 8]` reaches the model as batch 0 (500 from ONNX Runtime: "Invalid rank")
  and `[4294967297, 8, 8]` as batch 1 (200, with the wrong shape accepted);
- `NaN`, `Infinity` or a UTF-8 byte order mark in the JSON: not JSON (RFC 8259), refused 400
  by our servers, but tritonserver parses them and answers 200 (with `NaN` in its response,
  which is not JSON either);
- JSON that is not UTF-8: tritonserver answers 400 but quotes the bytes back (`unexpected
  inference input 'images\\xff\\xfe'`), so its error document is not JSON either.

Every element of a tensor sent in the body takes at least one byte of it (a JSON number and
its comma, a raw element, a BYTES element's 4-byte length), so shapes that together hold
more elements than the body has bytes are always a mistake. Finding them costs a substring
search for `"shape"` in the JSON part plus a small match per tensor; the JSON is decoded only
when it is not ASCII, and parsed only when `NaN`, `Infinity` or a BOM occurs in it (base64
text can hold "NaN": then the parse succeeds and the body passes). A tensor in shared memory
(`shared_memory_region`) is not in the body, so a body that names one is not bounded.
**Answers with bare NaN (`spell_non_finite`).** tritonserver takes an FP32 JSON number past
FP32's range (`1e300`) as infinity, and writes the model's NaN and infinite outputs as bare
`NaN` / `inf` tokens, which are not JSON either: a client's strict parser (and the spec's
schema) fails on a 200. The gateway spells them as our servers do (`"NaN"`, `"Infinity"`,
`"-Infinity"`, servers/protocol/v2.py), found by a substring search of a 200's JSON part (a
few hundred bytes for triton-digits) and rewritten only when one occurs.

Measured here (2 shared cores): ~7 us for a 120-byte iris body, ~5 us for a 16 KB binary
one, ~21 us for 64 digits as JSON (28 KB), ~5.5 ms for 7 MB of JSON (where tritonserver's
own parse takes far longer). Only services whose backend is tritonserver need it: our own
servers already refuse all of these with 400.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

__all__ = ["client_error_status", "spell_non_finite", "v2_request_problem"]

# How Triton's HTTP server begins the messages of its request-parsing failures.
_PARSE_FAILURES = (
    "failed to parse the request JSON buffer",
    "Unable to parse '",
    # `"parameters": []`: "failed to get request params.: attempt to get members for
    # non-object" (found by the schemathesis run)
    "failed to get request params",
)


def client_error_status(status: int, content: bytes) -> int:
    """400 for a backend's 500 that is a request-parsing failure, else `status`."""
    if status != 500 or not content.startswith(b"{"):
        return status
    try:
        message = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return status
    if isinstance(message, str) and message.startswith(_PARSE_FAILURES):
        return 400
    return status


_SHAPE_KEY = b'"shape"'
# What follows a "shape" key when it is a list of non-negative integers of at most 20 digits;
# anything else (a string, negative, fractional or over-uint64 dimensions) the backend refuses
# with a 400 of its own.
_DIMS = re.compile(rb"\s*:\s*\[\s*(\d{1,20}(?:\s*,\s*\d{1,20})*)?\s*\]")
# Each with the byte a search looks for first: one byte is a memchr, ~10x faster than the word
# over JSON numbers, where neither capital occurs.
_NOT_JSON = ((b"N", b"NaN"), (b"I", b"Infinity"))
_BOM = b"\xef\xbb\xbf"


def _json_part(body: bytes, header_length: bytes | str | None) -> bytes:
    if header_length is None:
        return body
    try:
        length = int(header_length)
    except ValueError:
        return body  # the backend refuses it (or reads the body as JSON anyway)
    return body[:length] if 0 <= length <= len(body) else body


def v2_request_problem(body: bytes, header_length: bytes | str | None = None) -> str | None:
    """What makes a v2 REST infer body one a backend mishandles (see the module docstring),
    for a 400; None for every other body. `header_length`: the request's
    `Inference-Header-Content-Length`, if any (the JSON is the body's first that many bytes).
    """
    head = _json_part(body, header_length)
    problem = _too_many_elements(head, len(body))
    if problem is not None:
        return problem
    if not head.isascii():
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"request body is not valid JSON: not UTF-8 at byte {exc.start}"
    if head.startswith(_BOM) or any(c in head and word in head for c, word in _NOT_JSON):
        try:
            orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            return f"request body is not valid JSON: {exc}"
    return None


def _elements(dims: list[int], limit: int) -> int:
    """The element count of `dims`, or `limit + 1` once it is past `limit` (no huge products
    for a list of many large dimensions)."""
    if 0 in dims:
        return 0
    count = 1
    for dim in dims:
        count *= dim
        if count > limit:
            return limit + 1
    return count


def _too_many_elements(head: bytes, body_bytes: int) -> str | None:
    total = 0
    at = head.find(_SHAPE_KEY)
    while at != -1:
        at += len(_SHAPE_KEY)
        found = _DIMS.match(head, at)
        if found is not None and found.group(1) is not None:
            dims = [int(d) for d in found.group(1).split(b",")]
            total += _elements(dims, body_bytes)
            if total > body_bytes:
                if b"shared_memory_region" in head:
                    return None
                return (
                    f"shape {dims} holds more elements than the request's {body_bytes} "
                    "bytes could carry (each element of a tensor takes at least one byte)"
                )
        at = head.find(_SHAPE_KEY, at)
    return None


# What tritonserver's JSON writer (RapidJSON's kWriteNanAndInfFlag) writes for non-finite
# floats; the stdlib's parser reads them, orjson's does not.
_BARE_NON_FINITE = (b"NaN", b"Infinity")
_SPELT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _spelt(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _SPELT[repr(value)]
    if isinstance(value, list):
        return [_spelt(v) for v in value]
    if isinstance(value, dict):
        return {k: _spelt(v) for k, v in value.items()}
    return value


def spell_non_finite(content: bytes, json_length: int | None) -> tuple[bytes, int] | None:
    """A v2 REST answer whose JSON part (its first `json_length` bytes when it carries binary
    tensors) has bare NaN or infinities, rewritten with them as strings: (body, new JSON
    length). None when there are none (the answer passes as it is)."""
    head = content if json_length is None else content[:json_length]
    if not any(token in head for token in _BARE_NON_FINITE):
        return None
    try:
        doc = json.loads(head)
    except ValueError:
        return None
    spelt = orjson.dumps(_spelt(doc))
    if spelt == orjson.dumps(doc):
        return None  # "NaN" within a string, not a number
    return spelt + content[len(head):], len(spelt)
