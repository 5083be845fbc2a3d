"""`python -m servers.transformers.tabular`: the tabular transformer on kserve.ModelServer."""

from __future__ import annotations

import sys

from kserve.predictor_config import PredictorConfig

from servers.server import serve, server_parser
from servers.transformers.tabular.model import TabularTransformer


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Named features in, label names out; calls --predictor_host over v2 REST or gRPC."
    )
    args = parser.parse_args(argv)
    if not args.predictor_host:
        parser.error("--predictor_host is required")
    if args.predictor_protocol == "v1":
        parser.error("--predictor_protocol must be v2 or grpc-v2 (the predictor speaks tensors)")
    config = PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
    )
    return serve(lambda: [TabularTransformer(args.model_name, args.model_dir, config)], args)


if __name__ == "__main__":
    sys.exit(main())
