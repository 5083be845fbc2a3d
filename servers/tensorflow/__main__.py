"""`python -m servers.tensorflow`: a TensorFlow predictor on kserve.ModelServer.

In process (default): loads the SavedModel in `--model_dir` and serves it over KServe v1/v2
REST, v2 gRPC and, on the same gRPC port, TF Serving's `PredictionService`. With
`--tfserving_host HOST:PORT`: forwards the same requests to a TF Serving backend over gRPC
`Predict` (KServe's TF Serving runtime in a cluster).
"""

from __future__ import annotations

import sys
from typing import Any

from servers.model_server import GrpcService
from servers.server import add_batching_flags, batch_settings, serve, server_parser
from servers.tensorflow.signatures import DEFAULT_SIGNATURE, SignatureBackend


def main(argv: list[str] | None = None) -> int:
    parser = server_parser(
        "Serve a TensorFlow SavedModel over KServe v1/v2 REST, v2 gRPC and TF Serving's gRPC "
        "PredictionService; or forward to a TF Serving backend (--tfserving_host)."
    )
    parser.add_argument(
        "--signature_name",
        default=DEFAULT_SIGNATURE,
        help="Signature served when a request names none (and shown in v2 metadata).",
    )
    parser.add_argument(
        "--allow_nan",
        action="store_true",
        help="Pass NaN and infinity in float inputs to the model instead of answering 400.",
    )
    parser.add_argument(
        "--tfserving_host",
        default=None,
        help="HOST:PORT of a TF Serving gRPC endpoint to forward to, instead of loading the model.",
    )
    parser.add_argument(
        "--tfserving_model_name",
        default=None,
        help="The model's name on the TF Serving backend (default: --model_name).",
    )
    parser.add_argument(
        "--tfserving_timeout_s",
        type=float,
        default=30.0,
        help="Deadline of each call to the TF Serving backend.",
    )
    add_batching_flags(parser)
    args = parser.parse_args(argv)
    batching = batch_settings(parser, args)

    # TensorFlow is imported only now: `--help` and flag errors stay fast.
    from servers.tensorflow.model import TensorFlowPredictor

    def backend() -> SignatureBackend:
        if args.tfserving_host:
            from servers.tensorflow.tfserving_client import TFServingBackend

            return TFServingBackend.connect(
                args.model_name,
                args.tfserving_host,
                args.tfserving_model_name or args.model_name,
                args.tfserving_timeout_s,
            )
        from servers.tensorflow.savedmodel import SavedModelBackend

        return SavedModelBackend.load(args.model_name, args.model_dir, batching)

    def services(models: list[Any]) -> list[GrpcService]:
        from servers.tensorflow.tfserving_service import prediction_service

        return [prediction_service({m.name: m for m in models})]

    predictor = TensorFlowPredictor(args.model_name, backend, args.signature_name, args.allow_nan)
    return serve(lambda: [predictor], args, services)


if __name__ == "__main__":
    sys.exit(main())
