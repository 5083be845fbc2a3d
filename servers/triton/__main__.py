"""`python -m servers.triton`: a predictor on kserve.ModelServer forwarding to a Triton server.

    python -m servers.triton --model_name=triton-digits --triton_host=127.0.0.1:8001 \\
        [--triton_model_name=digits] [--triton_protocol=grpc|http] [--http_port ... --grpc_port ...]

`--triton_host` is Triton's gRPC endpoint with `--triton_protocol=grpc` (default), its HTTP
one with `http`. Triton itself runs apart (`python -m servers.triton.tritonserver`, or
Triton's own image in a cluster).
"""

from __future__ import annotations

import sys

from servers.server import serve, server_parser
from servers.triton.client import PROTOCOLS
from servers.triton.model import TritonPredictor


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Serve a model of a Triton server over KServe v1/v2 REST and v2 gRPC, forwarding "
        "every request to Triton."
    )
    parser.add_argument("--triton_host", required=True,
                        help="HOST:PORT of Triton's gRPC (or, with --triton_protocol=http, "
                        "HTTP) endpoint.")
    parser.add_argument("--triton_model_name", default=None,
                        help="The model's name on Triton (default: --model_name).")
    parser.add_argument("--triton_protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--triton_timeout_s", type=float, default=30.0,
                        help="Deadline of each call to Triton (then 504).")
    parser.add_argument("--triton_startup_timeout_s", type=float, default=60.0,
                        help="How long to wait at start for Triton to serve the model.")
    args = parser.parse_args(argv)

    predictor = TritonPredictor(
        args.model_name,
        args.triton_host,
        args.triton_model_name,
        protocol=args.triton_protocol,
        timeout_s=args.triton_timeout_s,
        startup_timeout_s=args.triton_startup_timeout_s,
    )
    return serve(lambda: [predictor], args, None)


if __name__ == "__main__":
    sys.exit(main())
