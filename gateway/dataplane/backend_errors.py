"""Backend answers whose status blames the server for a client's mistake.

Triton's REST front end answers a malformed v2 JSON body with 500: `{"inputs": [`,
`{"inputs": {}}`, a `shape` that is not an array, data that does not match its shape, a body
without `inputs` (measured against the tritonserver behind triton-digits; its other
client errors, such as an unknown input or a byte-size mismatch, are already 400). Passed
through, a client's typo counted as a server error on the dashboard and in the SLOs.

The gateway does not decode bodies on the way in (the point of a byte-forwarding proxy),
so instead of checking every v2 envelope before forwarding, it reclassifies such answers on
the way out: only a 500 is looked at, so an answer that succeeded costs one integer
comparison, and a 500 that is not one of these parse failures passes unchanged.
"""

from __future__ import annotations

import orjson

__all__ = ["client_error_status"]

# How Triton's HTTP server begins the messages of its request-parsing failures.
_PARSE_FAILURES = (
    "failed to parse the request JSON buffer",
    "Unable to parse '",
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
