"""`python -m servers.transformers.tabular`: the tabular transformer on kserve.ModelServer."""

from __future__ import annotations

import sys

from servers.server import grpc_options, predictor_config, serve, server_parser
from servers.transformers.tabular.model import TabularTransformer


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Named features in, label names out; calls --predictor_host over v2 REST or gRPC."
    )
    args = parser.parse_args(argv)
    if args.predictor_protocol == "v1":
        parser.error("--predictor_protocol must be v2 or grpc-v2 (the predictor speaks tensors)")
    config = predictor_config(parser, args)
    return serve(
        lambda: [
            TabularTransformer(args.model_name, args.model_dir, config, grpc_options(args))
        ],
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
