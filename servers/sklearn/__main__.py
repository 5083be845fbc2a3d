"""`python -m servers.sklearn`: a scikit-learn predictor on kserve.ModelServer."""

from __future__ import annotations

import sys

from servers.batching import BatchSettings
from servers.server import serve, server_parser
from servers.sklearn.model import METHODS, SKLearnPredictor


def main(argv: list[str] | None = None) -> int:
    parser = server_parser("Serve a scikit-learn model over KServe v1/v2 REST and v2 gRPC.")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="predict",
        help="Default method; requests may ask for the other.",
    )
    parser.add_argument(
        "--trust_type",
        action="append",
        default=[],
        help="A type a .skops artifact may hold beyond scikit-learn's.",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=32,
        help="Rows merged into one model call (1: no batching).",
    )
    parser.add_argument(
        "--max_batch_latency_us",
        type=int,
        default=0,
        help="How long a batch may wait to fill once the model is free.",
    )
    parser.add_argument(
        "--max_batch_queue",
        type=int,
        default=1024,
        help="Requests that may wait for the model; more get 503.",
    )
    args = parser.parse_args(argv)
    try:
        batching = BatchSettings(
            args.max_batch_size, args.max_batch_latency_us, args.max_batch_queue
        )
    except ValueError as exc:
        parser.error(str(exc))
    return serve(
        lambda: [
            SKLearnPredictor(
                args.model_name, args.model_dir, args.method, args.trust_type, batching
            )
        ],
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
