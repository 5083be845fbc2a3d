"""Protobuf wire encoding by hand, for the few Triton messages our servers and the gateway
answer but cannot import: Triton's `inference.*` protos clash with KServe's (kserve#3099).

Field numbers come from Triton's `grpc_service.proto` and `model_config.proto` (tritonclient).
"""

from __future__ import annotations

__all__ = ["bytes_field", "int_field", "key", "packed_field", "varint"]


def varint(value: int) -> bytes:
    """`value` as a base-128 varint; a negative int64 as its ten-byte two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    """A field's tag: its number and wire type (0 varint, 2 length-delimited)."""
    return varint(field << 3 | wire)


def bytes_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, embedded message)."""
    return key(field, 2) + varint(len(payload)) + payload


def int_field(field: int, value: int) -> bytes:
    """A varint field; nothing for 0, proto3's default."""
    return key(field, 0) + varint(value) if value else b""


def packed_field(field: int, values: list[int]) -> bytes:
    """A packed repeated varint field; nothing when empty."""
    return bytes_field(field, b"".join(varint(v) for v in values)) if values else b""
