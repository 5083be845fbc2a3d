"""Limits and defaults that every component shares with the gateway that starts it.

Plain constants, no dependencies: the gateway imports them as its own defaults, so a message the
gateway lets through is one the component accepts too.
"""

from __future__ import annotations

__all__ = [
    "BIND_ADDRESS_ENV",
    "DEFAULT_BIND_ADDRESS",
    "DEFAULT_GRPC_MAX_MESSAGE_BYTES",
    "GRPC_MAX_MESSAGE_BYTES_ENV",
    "TRUST_REMOTE_PICKLES_ENV",
    "grpc_message_options",
]

# gRPC messages, both directions, on every hop (gateway, components' servers, their clients).
DEFAULT_GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_MAX_MESSAGE_BYTES_ENV = "MODELSERVE_GRPC_MAX_MESSAGE_BYTES"

# Loopback unless told otherwise: a component behind a gateway on the same machine must not be
# reachable around it. An image sets 0.0.0.0, where the pod's port must be reachable.
DEFAULT_BIND_ADDRESS = "127.0.0.1"
BIND_ADDRESS_ENV = "MODELSERVE_BIND_ADDRESS"

# "1" lets a model downloaded from a remote URI load from a pickle (.joblib, .pkl, .pickle).
TRUST_REMOTE_PICKLES_ENV = "MODELSERVE_TRUST_REMOTE_PICKLES"


def grpc_message_options(
    send_bytes: int, receive_bytes: int | None = None
) -> list[tuple[str, int]]:
    """gRPC channel or server options for these message limits (`receive_bytes`: the same)."""
    receive = send_bytes if receive_bytes is None else receive_bytes
    return [
        ("grpc.max_send_message_length", send_bytes),
        ("grpc.max_receive_message_length", receive),
    ]
