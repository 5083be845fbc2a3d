"""The gateway's gRPC data plane: v2 `inference.GRPCInferenceService` and TF Serving's
`tensorflow.serving.PredictionService`, proxied as raw bytes.

The v2 server-level calls (`ServerLive`, `ServerReady`, `ServerMetadata`) are answered here,
and so is Triton's `ModelStatistics` (the replicas' counters summed, gateway/dataplane/
statistics.py). The model-level calls are read only as far as the model name
(gateway/dataplane/grpc_wire.py) and forwarded, bytes unchanged, to the backend's
`grpc_target` over one cached channel per target: v2 `ModelReady`, `ModelMetadata`,
`ModelInfer`, Triton's `ModelConfig`; TF Serving's `Predict`, `GetModelMetadata`, `Classify`,
`Regress`, `MultiInference`. `ModelStreamInfer` sends each request of the stream as a
`ModelInfer` and answers in order (gateway/dataplane/grpc_stream.py). Backend status codes
and details pass through unchanged; the gateway's own failures map from the shared error types
in one place (`_abort`).
Every call gets initial metadata `x-modelserve-revision`; an unknown model is NOT_FOUND in
each protocol's words (TF Serving's `Servable not found for request: Latest(<name>)`). The
forwarded calls (and each stream) also get back their `x-request-id`, the client's or one made
here, which the component receives too; with traces on, each forwarded call has its span
(gateway/dataplane/tracing.py).

The model-level calls pass the gateway's `Admission` (API key in `authorization` or `x-api-key`
metadata, rate limit) before routing, as REST requests do; the server-level calls are health
and stay open. With auth on, the key's metadata is not forwarded to the component.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeAlias
from urllib.parse import unquote

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from gateway.dataplane.admission import Admission
from gateway.dataplane.auth import API_KEY_HEADER
from gateway.dataplane.grpc_stream import answer_in_order, stream_error, stream_response
from gateway.dataplane.grpc_wire import (
    read_bool,
    read_model_name,
    read_model_spec,
    read_strings,
)
from gateway.dataplane.metrics import GatewayMetrics
from gateway.dataplane.proxy import HttpForwarder
from gateway.dataplane.repository import (
    encode_index_response,
    refuse_control_action,
    repository_index,
)
from gateway.dataplane.resolve import (
    NO_REVISION,
    UNKNOWN_SERVICE,
    Attempt,
    BackendConnectFailed,
    NotAReplicaFailure,
    dispatch,
    find_route,
)
from gateway.dataplane.serverinfo import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from gateway.dataplane.statistics import service_statistics
from gateway.dataplane.tracing import (
    REQUEST_ID,
    TRACE_METADATA,
    RequestIds,
    end_grpc_span,
    start_grpc_span,
)
from gateway.routing import Backend, RoutingTable, ServiceRoute
from gateway.settings import GatewaySettings
from servers.errors import (
    BackendTimeout,
    BackendUnavailable,
    ModelNotFound,
    ModelServeError,
    TooManyRequests,
    UpstreamError,
    status_for_http,
)
from servers.protocol.statistics_wire import encode_statistics_response
from servers.telemetry import TRACING
from servers.tensorflow.signatures import servable_not_found

__all__ = ["SERVICE", "TFSERVING_SERVICE", "GrpcProxy"]

SERVICE = "inference.GRPCInferenceService"
TFSERVING_SERVICE = "tensorflow.serving.PredictionService"
REVISION_KEY = "x-modelserve-revision"
GRPC_MAX_IDLE_MS = 5 * 60 * 1000  # an idle client connection is closed after this
# `ModelConfig` is Triton's (its grpc_service.proto, not KServe's); its request's field 1 is the
# model name too, so it is forwarded as the others are.
_FORWARDED_CALLS = ("ModelReady", "ModelMetadata", "ModelInfer", "ModelConfig")
_INFER_PATH = f"/{SERVICE}/ModelInfer"
_TFSERVING_CALLS = ("Predict", "GetModelMetadata", "Classify", "Regress", "MultiInference")
# Metadata gRPC itself manages; everything else the client sent goes to the backend.
_DROPPED_METADATA = ("user-agent", "grpc-", ":")

Context: TypeAlias = "aio.ServicerContext[bytes, bytes]"
# A call's invocation metadata: grpc.aio decodes it from the core's array on each
# `invocation_metadata()`, so a call reads it once.
Metadata: TypeAlias = "tuple[tuple[str, str | bytes], ...]"
Handler = Callable[[bytes, Context], Awaitable[bytes]]


async def _abort(context: Context, exc: ModelServeError) -> NoReturn:
    """The one mapping from the shared error types to a gRPC status."""
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, TooManyRequests) and exc.retry_after_s is not None:
        trailing = (("retry-after", str(exc.retry_after_s)),)
    await context.abort(exc.grpc_code, exc.message, trailing)
    raise AssertionError("unreachable: context.abort raises")


class GrpcProxy:
    """A `grpc.aio` server in front of every service's gRPC endpoint.

    Shares `GatewayMetrics` with the REST app (protocol label `grpc`, code label the status
    name, e.g. `OK`, `NOT_FOUND`); start it inside the event loop the REST app runs in.
    """

    def __init__(
        self,
        table: RoutingTable,
        settings: GatewaySettings,
        metrics: GatewayMetrics | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.admission = admission or Admission.from_settings(settings)
        limit = settings.grpc_max_message_bytes
        self._options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
        # The listener's own share of the front door (gateway/frontdoor.py is HTTP/1.1 only):
        # a connection that does not finish HTTP/2's handshake within the header timeout is
        # closed (grpc core's default waits 120 s), and one idle for 5 min is let go.
        self._server_options = [
            *self._options,
            ("grpc.server_handshake_timeout_ms", round(settings.header_timeout_s * 1000)),
            ("grpc.max_connection_idle_ms", GRPC_MAX_IDLE_MS),
        ]
        self._server: aio.Server | None = None
        self._http: HttpForwarder | None = None
        self._channels: dict[str, aio.Channel] = {}
        self._stubs: dict[tuple[str, str], aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self.tracer = TRACING.tracer  # None while traces are off (servers/telemetry.py)
        self.request_ids = RequestIds()

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0 picks a free port) and return the bound port."""
        server = aio.server(options=self._server_options)
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "ServerLive": _unary(self._server_live),
            "ServerReady": _unary(self._server_ready),
            "ServerMetadata": _unary(self._server_metadata),
            "ModelStatistics": _unary(self._model_statistics),
            "RepositoryIndex": _unary(self._repository_index),
            "RepositoryModelLoad": _unary(self._control_action),
            "RepositoryModelUnload": _unary(self._control_action),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(self._stream_infer),
        }
        for method in _FORWARDED_CALLS:
            handlers[method] = _unary(self._forwarder(SERVICE, method, self._v2_route))
        tfserving: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}
        for method in _TFSERVING_CALLS:
            locate = self._multi_inference_route if method == "MultiInference" else self._tf_route
            tfserving[method] = _unary(self._forwarder(TFSERVING_SERVICE, method, locate))
        server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(SERVICE, handlers),
            grpc.method_handlers_generic_handler(TFSERVING_SERVICE, tfserving),
        ))
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"gRPC proxy cannot listen on {host}:{port}")
        await server.start()
        self._server = server
        self._http = HttpForwarder(self.settings)  # the statistics are read over REST
        return bound

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let running ones finish for `grace` s, close backend channels."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()

    async def _server_live(self, request: bytes, context: Context) -> bytes:
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        return pb.ServerLiveResponse(live=True).SerializeToString()

    async def _server_ready(self, request: bytes, context: Context) -> bytes:
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        ready = all(route.ready for route in self.table.routes())
        return pb.ServerReadyResponse(ready=ready).SerializeToString()

    async def _server_metadata(self, request: bytes, context: Context) -> bytes:
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        metadata = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )
        return metadata.SerializeToString()

    async def _stream_infer(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        """`ModelStreamInfer`: each request admitted, routed and sent as a `ModelInfer`
        (gateway/dataplane/grpc_stream.py), answered in order."""
        # One for the stream, sent on with each request.
        request_id = _sent_id(_metadata(context)) or self.request_ids.new()
        await context.send_initial_metadata(
            ((REVISION_KEY, NO_REVISION), (REQUEST_ID, request_id))
        )

        async def answer(request: bytes) -> bytes:
            try:
                response = await self._send_counted(
                    _INFER_PATH, request, context, self._v2_route, announce=False,
                    request_id=request_id,
                )
            except ModelServeError as exc:
                return stream_error(request, exc.message)
            return stream_response(response)

        async for response in answer_in_order(requests, answer):
            yield response

    async def _model_statistics(self, request: bytes, context: Context) -> bytes:
        """`ModelStatistics`: the REST answer's counters (gateway/dataplane/statistics.py),
        in Triton's protobuf."""
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        assert self._http is not None, "the proxy is not started"
        try:
            if self.admission.enabled:
                self._admit(context)
            fields = read_strings(request, (1, 2))
            doc = await service_statistics(self.table, self._http, fields.get(1, ""),
                                           fields.get(2))
        except ModelServeError as exc:
            await _abort(context, exc)
        return encode_statistics_response(doc)

    async def _repository_index(self, request: bytes, context: Context) -> bytes:
        """`RepositoryIndex`: every service and its state (gateway/dataplane/repository.py)."""
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        try:
            if self.admission.enabled:
                self._admit(context)
            ready_only = read_bool(request, 2)  # RepositoryIndexRequest.ready
        except ModelServeError as exc:
            await _abort(context, exc)
        return encode_index_response(repository_index(self.table, ready_only))

    async def _control_action(self, request: bytes, context: Context) -> bytes:
        """Load and unload are the control plane's: PERMISSION_DENIED, saying where."""
        await context.send_initial_metadata(((REVISION_KEY, NO_REVISION),))
        await _abort(context, refuse_control_action())

    def _forwarder(
        self, service: str, method: str, locate: Callable[[bytes], ServiceRoute]
    ) -> Handler:
        path = f"/{service}/{method}"

        async def forward(request: bytes, context: Context) -> bytes:
            return await self._forward(path, request, context, locate)

        return forward

    def _v2_route(self, request: bytes) -> ServiceRoute:
        return find_route(self.table, read_model_name(request))[0]

    def _tf_route(self, request: bytes, first_task: bool = False) -> ServiceRoute:
        name, version = read_model_spec(request, first_task)
        try:
            return find_route(self.table, name)[0]
        except ModelNotFound:
            raise servable_not_found(name, version) from None

    def _multi_inference_route(self, request: bytes) -> ServiceRoute:
        return self._tf_route(request, first_task=True)

    async def _forward(
        self,
        path: str,
        request: bytes,
        context: Context,
        locate: Callable[[bytes], ServiceRoute],
    ) -> bytes:
        try:
            return await self._send_counted(path, request, context, locate, announce=True)
        except ModelServeError as exc:
            await _abort(context, exc)

    async def _send_counted(
        self,
        path: str,
        request: bytes,
        context: Context,
        locate: Callable[[bytes], ServiceRoute],
        announce: bool,
        request_id: str | None = None,
    ) -> bytes:
        """Admit, route and send one request and count it; raises the ModelServeError that
        answers it. With `announce`, the call's initial metadata names the revision and the
        request id (`request_id`, else the client's or a new one)."""
        start = time.perf_counter()
        route: ServiceRoute | None = None
        attempt = Attempt()
        dropped: tuple[str, ...] = _DROPPED_METADATA
        announced = not announce
        extra: tuple[tuple[str, str], ...] = ()  # metadata added to the client's
        metadata = _metadata(context)
        sent = _sent_id(metadata)
        if request_id is None:
            request_id = sent or self.request_ids.new()
        if request_id != sent:
            extra = ((REQUEST_ID, request_id),)
        span = None
        if self.tracer is not None:
            span, carried = start_grpc_span(self.tracer, path, metadata, request_id)
            extra += carried

        async def send(backend: Backend) -> bytes:
            nonlocal announced
            if not announced:  # once: a retry goes to another replica of the same revision
                await context.send_initial_metadata(
                    ((REVISION_KEY, backend.revision), (REQUEST_ID, request_id))
                )
                announced = True
            if backend.grpc_target is None:
                raise _NoGrpc(f"revision '{backend.revision}' serves no gRPC")
            return await self._call(
                backend.grpc_target, path, request, context, metadata, dropped, extra
            )

        code = grpc.StatusCode.OK
        try:
            if self.admission.enabled:
                dropped = self._admit(context, metadata)
            if span is not None:
                dropped += TRACE_METADATA  # ours replace the client's
            route = locate(request)
            self.metrics.started(route.name)
            response = await dispatch(
                self.table, route, None, self.settings, send, attempt
            )
        except ModelServeError as exc:
            # Counted before the status goes out: a client that saw it finds it counted.
            code = exc.grpc_code
            self._count(route, attempt.revision, code, start)
            if not announced:
                await context.send_initial_metadata(
                    ((REVISION_KEY, attempt.revision), (REQUEST_ID, request_id))
                )
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            self._count(route, attempt.revision, code, start)
            raise
        except Exception:
            code = grpc.StatusCode.UNKNOWN
            self._count(route, attempt.revision, code, start)
            raise
        finally:
            if span is not None:
                service = route.name if route is not None else UNKNOWN_SERVICE
                end_grpc_span(span, service, attempt.revision, code)
        self._count(route, attempt.revision, code, start)
        return response

    def _admit(self, context: Context, metadata: Metadata | None = None) -> tuple[str, ...]:
        """Pass the admission or raise; returns the metadata prefixes not to forward.
        `metadata`: the call's, if already read."""
        sent = dict(_metadata(context) if metadata is None else metadata)
        api_key, authorization = sent.get(API_KEY_HEADER), sent.get("authorization")
        consumed = self.admission.admit(
            _as_str(api_key), _as_str(authorization), _peer_host(context.peer())
        )
        if self.admission.auth is None:
            return _DROPPED_METADATA
        # The key is the gateway's: the component never sees it.
        return _DROPPED_METADATA + (
            (API_KEY_HEADER, "authorization") if consumed else (API_KEY_HEADER,)
        )

    def _count(
        self, route: ServiceRoute | None, revision: str, code: grpc.StatusCode, start: float
    ) -> None:
        seconds = time.perf_counter() - start
        if route is None:
            self.metrics.observe(UNKNOWN_SERVICE, NO_REVISION, "grpc", code.name, seconds)
        else:
            self.metrics.finished(route.name, revision, "grpc", code.name, seconds)

    async def _call(
        self,
        target: str,
        path: str,
        request: bytes,
        context: Context,
        sent: Metadata,
        dropped: tuple[str, ...],
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        timeout = self.settings.request_timeout_s
        remaining = context.time_remaining()
        client_deadline = remaining is not None and remaining < timeout
        if remaining is not None:
            timeout = min(timeout, remaining)
        metadata = (*((key, value) for key, value in sent if not key.startswith(dropped)), *extra)
        try:
            response: bytes = await self._stub(target, path)(
                request, timeout=timeout, metadata=metadata
            )
            return response
        except aio.AioRpcError as exc:
            raise _upstream_error(exc, target, timeout, client_deadline) from exc

    def _stub(self, target: str, path: str) -> aio.UnaryUnaryMultiCallable[bytes, bytes]:
        stub = self._stubs.get((target, path))
        if stub is None:
            channel = self._channels.get(target)
            if channel is None:
                channel = aio.insecure_channel(target, options=self._options)
                self._channels[target] = channel
            stub = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            self._stubs[(target, path)] = stub
        return stub


class _NoGrpc(NotAReplicaFailure, BackendUnavailable):
    """The chosen revision serves no gRPC: no fault of its replica's (never ejects it)."""


class _ClientDeadline(NotAReplicaFailure, BackendTimeout):
    """The client's own deadline, shorter than the gateway's, ran out: a client sending
    tight deadlines must not get healthy replicas ejected."""


def _upstream_error(
    exc: aio.AioRpcError, target: str, timeout: float, client_deadline: bool = False
) -> ModelServeError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        timed_out = _ClientDeadline if client_deadline else BackendTimeout
        return timed_out(f"backend {target} did not answer within {timeout:.3g} s")
    if code == grpc.StatusCode.UNAVAILABLE:
        details = exc.details() or ""
        # gRPC's words when no connection could be made: the call never reached the backend.
        failed = "failed to connect" in details.lower() or "connection refused" in details.lower()
        error = BackendConnectFailed if failed else BackendUnavailable
        return error(f"backend {target} unavailable: {details}")
    return UpstreamError(exc.details() or code.name, status_for_http(code), code)


def _metadata(context: Context) -> Metadata:
    """The call's invocation metadata (decoded anew by each `invocation_metadata()`)."""
    return tuple(context.invocation_metadata() or ())


def _sent_id(metadata: Metadata) -> str | None:
    """The `x-request-id` the client sent (a text value), None when it sent none."""
    for key, value in metadata:
        if key == REQUEST_ID and isinstance(value, str) and value:
            return value
    return None


def _as_str(value: str | bytes | None) -> str | None:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _peer_host(peer: str) -> str:
    """The address of a gRPC peer: `ipv4:1.2.3.4:5678` -> `1.2.3.4`, `ipv6:[::1]:5` -> `::1`.

    gRPC percent-encodes the IPv6 brackets (`ipv6:%5B::1%5D:5`).
    """
    kind, _, address = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        address = address.rsplit(":", 1)[0].strip("[]")
    return address or peer


def _unary(handler: Handler) -> grpc.RpcMethodHandler[bytes, bytes]:
    # No (de)serializers: the handler gets and returns the raw message bytes.
    return grpc.unary_unary_rpc_method_handler(handler)
