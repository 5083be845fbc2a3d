"""`python -m servers.lightgbm`: a LightGBM predictor on kserve.ModelServer."""

from __future__ import annotations

import sys

from servers.lightgbm.model import LightGBMPredictor
from servers.server import add_booster_flags, batch_settings, serve, server_parser


def main(argv: list[str] | None = None) -> int:
    parser = server_parser("Serve a LightGBM model (model.txt) over KServe v1/v2 REST and v2 gRPC.")
    add_booster_flags(parser, "LightGBM")
    args = parser.parse_args(argv)
    batching = batch_settings(parser, args)
    return serve(
        lambda: [
            LightGBMPredictor(
                args.model_name, args.model_dir, args.method, batching,
                nthread=args.nthread, allow_missing=args.allow_missing,
            )
        ],
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
