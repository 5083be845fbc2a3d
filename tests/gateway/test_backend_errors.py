"""Which backend 500s are a client's mistake (Triton's REST parse failures)."""

from __future__ import annotations

import pytest

from gateway.dataplane.backend_errors import client_error_status


@pytest.mark.parametrize(
    "body",
    [
        b'{"error":"failed to parse the request JSON buffer: Invalid value. at 12"}',
        b'{"error":"Unable to parse \'inputs\': attempt to access JSON non-array as array"}',
    ],
)
def test_tritons_parse_failures_become_400(body: bytes) -> None:
    assert client_error_status(500, body) == 400


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error":"model execution failed: CUDA out of memory"}'),  # the server's fault
        (500, b"Internal Server Error"),  # not JSON
        (500, b'["Unable to parse \'x\'"]'),  # not the error document
        (503, b'{"error":"Unable to parse \'inputs\'"}'),  # only 500s are looked at
        (200, b'{"outputs": []}'),
    ],
)
def test_everything_else_passes_unchanged(status: int, body: bytes) -> None:
    assert client_error_status(status, body) == status
