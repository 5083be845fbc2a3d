"""`python -m servers.transformers.image`: the image transformer on kserve.ModelServer."""

from __future__ import annotations

import sys

from servers.server import grpc_options, predictor_config, serve, server_parser
from servers.transformers.image.limits import (
    DEFAULT_DECODE_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_REQUEST_PIXELS,
    RequestLimits,
)
from servers.transformers.image.model import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_TOP_K,
    ImageTransformer,
)


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Encoded images in, top-k labels out; calls --predictor_host over v1, v2 REST or gRPC."
    )
    parser.add_argument(
        "--top_k",
        type=int,
        default=DEFAULT_TOP_K,
        help="Labels returned per image (requests may ask with parameters.top_k).",
    )
    parser.add_argument(
        "--max_image_bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="Largest encoded image accepted, in bytes; larger ones get 400.",
    )
    parser.add_argument(
        "--max_image_pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="Largest image accepted, in pixels (width x height), checked before decoding.",
    )
    parser.add_argument(
        "--max_batch_size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="Most images in one request; more get 413 before any is decoded.",
    )
    parser.add_argument(
        "--max_request_pixels",
        type=int,
        default=DEFAULT_MAX_REQUEST_PIXELS,
        help="Most pixels all of a request's images may hold together, read from their "
        "headers before any is decoded; more get 413.",
    )
    parser.add_argument(
        "--decode_timeout_s",
        type=float,
        default=DEFAULT_DECODE_TIMEOUT_S,
        help="A request still decoding this many seconds after it arrived stops before its "
        "next image with 504 (REST does not tell the server when its client is gone).",
    )
    args = parser.parse_args(argv)
    for flag in ("top_k", "max_image_bytes", "max_image_pixels"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    try:
        limits = RequestLimits(args.max_batch_size, args.max_request_pixels, args.decode_timeout_s)
    except ValueError as exc:
        parser.error(f"--{exc}")
    config = predictor_config(parser, args)
    return serve(
        lambda: [
            ImageTransformer(
                args.model_name,
                args.model_dir,
                config,
                top_k=args.top_k,
                max_image_bytes=args.max_image_bytes,
                max_image_pixels=args.max_image_pixels,
                limits=limits,
                grpc_options=grpc_options(args),
            )
        ],
        args,
    )


if __name__ == "__main__":
    sys.exit(main())
