"""`python -m servers.sklearn`: a scikit-learn predictor on kserve.ModelServer."""

from __future__ import annotations

import sys

from servers.server import add_batching_flags, batch_settings, serve, server_parser
from servers.sklearn.model import METHODS, SKLearnPredictor


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Serve a scikit-learn model over KServe v1/v2 REST and v2 gRPC.", loads_pickles=True
    )
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
    add_batching_flags(parser)
    args = parser.parse_args(argv)
    batching = batch_settings(parser, args)
    return serve(
        lambda: [
            SKLearnPredictor(
                args.model_name,
                args.model_dir,
                args.method,
                args.trust_type,
                batching,
                trust_remote_pickles=args.trust_remote_pickles,
            )
        ],
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
