"""One error hierarchy for every server and the gateway.

Each error type carries its HTTP status and gRPC code, so REST and gRPC answer the same failure
the same way (stock KServe does not: its `InferenceError` is 500 over REST and INVALID_ARGUMENT
over gRPC). The errors subclass grpc-interceptor's `GrpcException`, which is what KServe's gRPC
exception interceptor turns into a status with our code and message; REST handlers use
`http_status` and answer `{"error": message}`, the v1/v2 error format.
"""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

__all__ = [
    "BackendConnectFailed",
    "BackendUnavailable",
    "BackendTimeout",
    "Conflict",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "ModelServeError",
    "NotReady",
    "PayloadTooLarge",
    "PermissionDenied",
    "TooManyRequests",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UnprocessableEntity",
    "UpstreamError",
    "error_body",
    "grpc_code_for_http",
    "status_for_http",
]


class ModelServeError(GrpcException):
    """Base of every error a client can be told about, with its status in both protocols."""

    http_status: int = 500
    grpc_code: StatusCode = StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(details=message, status_code=self.grpc_code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ModelServeError):
    """The request is malformed: bad JSON, wrong shape, datatype or value."""

    http_status = 400
    grpc_code = StatusCode.INVALID_ARGUMENT


class Unauthenticated(ModelServeError):
    """The request carries no credentials (REST answers add `WWW-Authenticate: Bearer`)."""

    http_status = 401
    grpc_code = StatusCode.UNAUTHENTICATED


class PermissionDenied(ModelServeError):
    """The request's credentials are not accepted."""

    http_status = 403
    grpc_code = StatusCode.PERMISSION_DENIED


class ModelNotFound(ModelServeError):
    """No model or service with that name."""

    http_status = 404
    grpc_code = StatusCode.NOT_FOUND


class Conflict(ModelServeError):
    """The request conflicts with who owns the resource (e.g. an API server holds it)."""

    http_status = 409
    grpc_code = StatusCode.ABORTED  # gRPC's own HTTP mapping: ABORTED is 409


class PayloadTooLarge(ModelServeError):
    """The request body exceeds the configured limit."""

    http_status = 413
    grpc_code = StatusCode.RESOURCE_EXHAUSTED


class UnsupportedMediaType(ModelServeError):
    """The request's content type cannot be decoded."""

    http_status = 415
    grpc_code = StatusCode.INVALID_ARGUMENT


class UnprocessableEntity(ModelServeError):
    """Well-formed, but the model cannot act on it (e.g. predict_proba on a model without it)."""

    http_status = 422
    grpc_code = StatusCode.FAILED_PRECONDITION


class TooManyRequests(ModelServeError):
    """A limit on concurrent or queued requests, or on a client's request rate, was reached.

    `retry_after_s`, when known, is how many whole seconds (at least 1) the client should wait:
    REST answers send it as `Retry-After`, gRPC ones as `retry-after` trailing metadata.
    """

    http_status = 429
    grpc_code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ModelServeError):
    """The model or a component behind it is not ready yet."""

    http_status = 503
    grpc_code = StatusCode.UNAVAILABLE


class BackendUnavailable(ModelServeError):
    """A component the request must pass through is down or refused the connection."""

    http_status = 503
    grpc_code = StatusCode.UNAVAILABLE


class BackendConnectFailed(BackendUnavailable):
    """No byte of an answer came: the connection was refused, not accepted in time, or lost
    before the backend answered, so the request may go to another replica unchanged."""


class BackendTimeout(ModelServeError):
    """A component did not answer within the request timeout."""

    http_status = 504
    grpc_code = StatusCode.DEADLINE_EXCEEDED


class ModelLoadError(ModelServeError):
    """The model artifact could not be found or loaded (a start-up failure, not a request one)."""

    http_status = 503
    grpc_code = StatusCode.UNAVAILABLE


class UpstreamError(ModelServeError):
    """An error a component behind us answered with: its status passes through unchanged."""

    def __init__(self, message: str, http_status: int, grpc_code: StatusCode) -> None:
        self.http_status = http_status
        self.grpc_code = grpc_code
        super().__init__(message)


def error_body(message: str) -> dict[str, str]:
    """The error body of KServe's v1 and v2 REST protocols."""
    return {"error": message}


_GRPC_TO_HTTP: dict[StatusCode, int] = {
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.NOT_FOUND: 404,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 422,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.ABORTED: 409,
}


def status_for_http(code: StatusCode) -> int:
    """The HTTP status that answers a gRPC status (for proxies that translate between them)."""
    return _GRPC_TO_HTTP.get(code, 500)


# The inverse, for proxies answering gRPC clients with what an HTTP backend said (429 and 413
# both read as RESOURCE_EXHAUSTED, so 413 is added explicitly).
_HTTP_TO_GRPC: dict[int, StatusCode] = {
    **{status: code for code, status in _GRPC_TO_HTTP.items()},
    413: StatusCode.RESOURCE_EXHAUSTED,
}


def grpc_code_for_http(status: int) -> StatusCode:
    """The gRPC status that answers an HTTP error status (4xx INVALID_ARGUMENT, 5xx UNAVAILABLE
    where no closer code exists)."""
    default = StatusCode.UNAVAILABLE if status >= 500 else StatusCode.INVALID_ARGUMENT
    return _HTTP_TO_GRPC.get(status, default)
