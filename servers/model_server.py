"""`ModelServer`: kserve.ModelServer whose REST app carries our routes in every worker.

With `--workers N` KServe spawns N uvicorn processes, each importing KServe's app afresh, so
routes added in the parent would be lost there. Our REST server installs them in
`create_application`, which every worker runs, before KServe registers its own routes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import kserve
from grpc import aio
from kserve import model_server as kserve_model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess
from kserve.protocol.rest.server import RESTServer

from servers.grpc_extensions import triton_extensions_service
from servers.grpc_servicer import InferenceServicer
from servers.payload_logger import PayloadLogger, PayloadLoggerSettings
from servers.rest import install_routes
from servers.telemetry import without_fastapi_telemetry
from servers.tracing import grpc_interceptors, install_tracing

__all__ = ["GrpcService", "ModelServer", "freeze_startup_heap"]

# Adds one more gRPC service (e.g. TF Serving's PredictionService) to the server.
GrpcService = Callable[[aio.Server], None]


class _RESTServer(RESTServer):
    """KServe's REST server, with our inference routes and error mapping installed first."""

    max_body_bytes: int
    log_requests: bool
    # The process's payload logger; None in a `--workers N` worker, which builds its own.
    payload_logger: PayloadLogger | None = None

    def create_application(self) -> None:
        if not self.log_requests:
            # Two log lines per request cost more than a small model's predict.
            for name in ("kserve.trace", "uvicorn.access"):
                logging.getLogger(name).setLevel(logging.WARNING)
        payload_logger = self.payload_logger or payload_logger_from_env()
        install_routes(
            kserve_model_server.app, self.dataplane, self.max_body_bytes, payload_logger
        )
        without_fastapi_telemetry(kserve_model_server.app)  # our spans, not FastAPI's too
        install_tracing(kserve_model_server.app)  # outermost; nothing while traces are off
        super().create_application()
        freeze_startup_heap()

    def _add_middlewares(self, app: Any) -> None:
        if self.log_requests or self.access_log_format:
            super()._add_middlewares(app)
        # Else none: KServe's TimingMiddleware only feeds the `kserve.trace` lines silenced
        # above, yet reads getrusage twice and wraps every send of every request (py-spy:
        # ~15 % of the tabular transformer's CPU per request).


class _GRPCServer(GRPCServer):
    """KServe's gRPC server on our address and message limits, serving more services than v2
    inference on the same port.

    KServe builds, binds (on [::]) and starts its aio.Server in one method: ours does the same
    with the same interceptors, adding the services before the start.
    """

    def __init__(
        self,
        *args: Any,
        address: str,
        options: Sequence[tuple[str, int]],
        services: Sequence[GrpcService],
        log_requests: bool = False,
        payload_logger: PayloadLogger | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._log_requests = log_requests
        self._payload_logger = payload_logger
        self._address = address
        self._options = list(options)
        self._services = services

    async def start(self, max_workers: int) -> None:
        # KServe's LoggingInterceptor writes a line per call (and is one more await per call):
        # only when requests are logged.
        logging_interceptor = (LoggingInterceptor(),) if self._log_requests else ()
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(
                *grpc_interceptors(), *logging_interceptor, ExceptionToStatusInterceptor()
            ),
            options=self._options,
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(
                self._data_plane,
                self._model_repository_extension,
                payload_logger=self._payload_logger,
            ),
            self._server,
        )
        triton_extensions_service(self._data_plane)(self._server)  # not in KServe's proto
        for add_service in self._services:
            add_service(self._server)
        self._server.add_insecure_port(_listen_address(self._address, self._port))
        await self._server.start()
        await self._server.wait_for_termination()


def payload_logger_from_env() -> PayloadLogger | None:
    """The payload logger the control plane configured (`servers.payload_logger`), if any."""
    settings = PayloadLoggerSettings.from_env()
    return PayloadLogger(settings) if settings is not None else None


def _listen_address(host: str, port: int) -> str:
    """gRPC's HOST:PORT, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ModelServer(kserve.ModelServer):
    """kserve.ModelServer with modelserve's REST routes, body limit and error mapping, listening
    on `bind_address` (REST and gRPC; KServe's own binds 0.0.0.0 and [::]) with the gRPC
    message limits of `grpc_options`."""

    def __init__(
        self,
        *,
        bind_address: str,
        grpc_options: Sequence[tuple[str, int]],
        max_body_bytes: int,
        log_requests: bool,
        grpc_services: Sequence[GrpcService] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bind_address = bind_address
        self.grpc_options = grpc_options
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self.grpc_services = grpc_services
        self.payload_logger = payload_logger_from_env()

    def _configure(self, rest: _RESTServer) -> None:
        rest.config.host = self.bind_address  # read when the socket is bound, after this
        rest.max_body_bytes = self.max_body_bytes
        rest.log_requests = self.log_requests

    def _rest_kwargs(self) -> dict[str, Any]:
        return {
            "access_log_format": self.access_log_format,
            "workers": self.workers,
            "grace_period": self.grace_period,
            "event_loop": self.event_loop,
            "timeout_keep_alive": self.timeout_keep_alive,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }

    def start(self, models: list[Any]) -> None:
        """Register the models and serve REST (1..N workers) and gRPC until stopped."""
        self._register_and_check_atleast_one_model_is_ready(models)
        args = (
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
        )
        if self.workers > 1:
            self._rest_multiprocess_server = RESTServerMultiProcess(*args, **self._rest_kwargs())
            rest = self._rest_multiprocess_server._rest_server
            rest.__class__ = _RESTServer  # the workers unpickle and run this server
            self._configure(rest)
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = _RESTServer(*args, **self._rest_kwargs())
            self._configure(self._rest_server)
            self._rest_server.payload_logger = self.payload_logger
            self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = _GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},  # KServe reads its options from these; ours come in `options`
                grace_period=self.grace_period,
                address=self.bind_address,
                options=self.grpc_options,
                services=self.grpc_services,
                log_requests=self.log_requests,
                payload_logger=self.payload_logger,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        freeze_startup_heap()
        asyncio.run(self._serve())


def freeze_startup_heap() -> None:
    """Move everything allocated so far (kserve, pandas, the model...) out of the GC's reach.

    Without it, a full collection walks that whole heap: measured here, ~100 ms pauses every
    ~0.4 s under load, 3 % of requests at 64 connections, p99 97 ms instead of 14 ms.
    """
    gc.collect()
    gc.freeze()
