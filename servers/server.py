"""Start a kserve.ModelServer with our routes, error mapping and flags.

Every `python -m servers.<backend>` goes through `server_parser` and `serve`, so all of them
take KServe's usual flags (`--model_name --http_port --grpc_port --workers --predictor_host
--predictor_protocol ...`) plus ours, and answer errors the same way. The environment
(`servers.settings`) gives the defaults of the listen address (`--bind_address`), of KServe's
gRPC message limits (`--grpc_max_send_message_length`, `--grpc_max_receive_message_length`)
and, for servers that load pickles, of `--trust_remote_pickles`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from kserve import model_server as kserve_model_server

from servers.batching import BatchSettings
from servers.errors import ModelServeError
from servers.limits import (
    BIND_ADDRESS_ENV,
    GRPC_MAX_MESSAGE_BYTES_ENV,
    TRUST_REMOTE_PICKLES_ENV,
    grpc_message_options,
)
from servers.model_server import GrpcService, ModelServer
from servers.settings import bind_address, component_settings
from servers.telemetry import TelemetryError, configure_tracing

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "add_batching_flags",
    "add_booster_flags",
    "batch_settings",
    "grpc_options",
    "predictor_config",
    "serve",
    "server_parser",
]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def server_parser(description: str, *, loads_pickles: bool = False) -> argparse.ArgumentParser:
    """KServe's model-server flags plus modelserve's shared ones, with the environment's
    defaults (`loads_pickles`: also `--trust_remote_pickles`)."""
    parser = argparse.ArgumentParser(description=description, parents=[kserve_model_server.parser])
    settings = component_settings(parser)
    parser.add_argument(
        "--bind_address",
        type=bind_address,
        default=settings.bind_address,
        help=f"IP address REST and gRPC listen on (default: ${BIND_ADDRESS_ENV}, else "
        "127.0.0.1).",
    )
    # KServe's own flags stay (a ServingRuntime may pass them); only their default changes.
    parser.set_defaults(
        grpc_max_send_message_length=settings.grpc_max_message_bytes,
        grpc_max_receive_message_length=settings.grpc_max_message_bytes,
    )
    parser.epilog = f"gRPC message limits default to ${GRPC_MAX_MESSAGE_BYTES_ENV} (64 MiB)."
    if loads_pickles:
        parser.add_argument(
            "--trust_remote_pickles",
            action="store_true",
            default=settings.trust_remote_pickles,
            help="Load .joblib/.pkl/.pickle models downloaded from remote URIs: loading a "
            f"pickle runs its code (default: ${TRUST_REMOTE_PICKLES_ENV}=1; .skops is safe).",
        )
    parser.add_argument(
        "--model_dir",
        "--storage_uri",
        dest="model_dir",
        default="/mnt/models",
        help="Model directory, file:// path or a URI KServe's storage can download.",
    )
    parser.add_argument(
        "--log_requests",
        action="store_true",
        help="Log every request (uvicorn access log and KServe's timing lines).",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="Largest request body accepted; larger ones get 413.",
    )
    return parser


def add_batching_flags(parser: argparse.ArgumentParser) -> None:
    """The adaptive batching flags of a predictor (see `servers.batching`)."""
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


def add_booster_flags(parser: argparse.ArgumentParser, library: str) -> None:
    """The flags of a gradient-boosted trees predictor (XGBoost, LightGBM): the default
    method, threads per prediction, NaN as the missing value, and adaptive batching."""
    from servers.tabular_predictor import METHODS

    parser.add_argument("--method", choices=METHODS, default="predict",
                        help="Default method; requests may ask for the other.")
    parser.add_argument("--nthread", type=_positive, default=1,
                        help="Threads per prediction (KServe's runtime passes 1).")
    parser.add_argument("--allow_missing", action="store_true",
                        help=f"Let NaN through as {library}'s missing value (refused by default).")
    add_batching_flags(parser)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BatchSettings:
    """The BatchSettings the batching flags ask for (a usage error when they are invalid)."""
    try:
        return BatchSettings(args.max_batch_size, args.max_batch_latency_us, args.max_batch_queue)
    except ValueError as exc:
        parser.error(str(exc))


def grpc_options(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The gRPC message limits the flags give, as channel options (a transformer's client to
    its predictor uses the same ones as its server)."""
    return grpc_message_options(
        args.grpc_max_send_message_length, args.grpc_max_receive_message_length
    )


def predictor_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """A transformer's `kserve.PredictorConfig` from KServe's predictor flags (a usage error
    without `--predictor_host`)."""
    from kserve.predictor_config import PredictorConfig

    if not args.predictor_host:
        parser.error("--predictor_host is required")
    return PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol=args.predictor_protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
        predictor_health_check=args.enable_predictor_health_check,
    )


def serve(
    build: Callable[[], list[Any]],
    args: argparse.Namespace,
    grpc_services: Callable[[list[Any]], list[GrpcService]] | None = None,
) -> int:
    """Build and load the models, then run the KServe ModelServer until stopped.

    `grpc_services`, given the loaded models, returns more gRPC services for the gRPC port.
    Traces are configured first (`servers/telemetry.py`: off unless OTEL_* ask), named after
    the model when OTEL_SERVICE_NAME does not name the process.
    """
    try:
        configure_tracing(args.model_name)
    except TelemetryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        models = build()
        for model in models:
            model.load()
    except (ModelServeError, OSError, TypeError, ValueError) as exc:
        print(f"error: could not load the model: {exc}", file=sys.stderr)
        return 1
    if args.workers > 1:
        _share_metrics_between_workers()
    server = ModelServer(
        max_body_bytes=args.max_body_bytes,
        log_requests=args.log_requests,
        bind_address=args.bind_address,
        grpc_options=grpc_options(args),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=False,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        grpc_services=grpc_services(models) if grpc_services else (),
    )
    server.start(models)
    return 0


def _share_metrics_between_workers() -> None:
    """Give the REST workers (spawned later, so they inherit it) one metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = tempfile.mkdtemp(prefix="modelserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
