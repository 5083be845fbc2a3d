"""Payload files, `<dir>/<service>.<v1|v2|tfserving>.json`, and the protocols they feed.

The binary and gRPC users encode the v2 JSON request; TF Serving's gRPC Predict (`tfserving`)
has its own, a PredictRequest in protobuf's JSON mapping (see bodies.py). The directory is the
user's (`--payloads DIR`) or the demo services' one shipped with this package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.loadgen import DEMO_PAYLOADS

__all__ = ["PROTOCOL_PAYLOADS", "available_protocols", "parse_protocols", "payload_path"]

# Which payload file each protocol sends.
PROTOCOL_PAYLOADS = {
    "v1": "v1", "v2": "v2", "v2-binary": "v2", "grpc": "v2", "tfserving": "tfserving",
}


def payload_path(service: str, protocol: str, payloads: Path = DEMO_PAYLOADS) -> Path:
    """`<payloads>/<service>.<v1|v2|tfserving>.json` for a protocol."""
    return payloads / f"{service}.{PROTOCOL_PAYLOADS[protocol]}.json"


def available_protocols(service: str, payloads: Path = DEMO_PAYLOADS) -> list[str]:
    """The protocols a service has a payload file for, in PROTOCOL_PAYLOADS order."""
    return [p for p in PROTOCOL_PAYLOADS if payload_path(service, p, payloads).is_file()]


def parse_protocols(text: str) -> list[str]:
    """`v1,v2,v2-binary,grpc,tfserving` → a list; unknown names are a usage error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROTOCOL_PAYLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown protocol(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(PROTOCOL_PAYLOADS)}"
        )
    return list(dict.fromkeys(names))
