"""One status table: every error answers with the same meaning over HTTP and gRPC."""

from __future__ import annotations

import pytest
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException

from servers import errors
from servers.errors import (
    BackendConnectFailed,
    BackendTimeout,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelServeError,
    NotReady,
    PayloadTooLarge,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
    UnprocessableEntity,
    UnsupportedMediaType,
    UpstreamError,
    error_body,
    status_for_http,
)

STATUS_TABLE = [
    (ModelServeError, 500, StatusCode.INTERNAL),
    (InvalidInput, 400, StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, 401, StatusCode.UNAUTHENTICATED),
    (PermissionDenied, 403, StatusCode.PERMISSION_DENIED),
    (ModelNotFound, 404, StatusCode.NOT_FOUND),
    (Conflict, 409, StatusCode.ABORTED),
    (PayloadTooLarge, 413, StatusCode.RESOURCE_EXHAUSTED),
    (UnsupportedMediaType, 415, StatusCode.INVALID_ARGUMENT),
    (UnprocessableEntity, 422, StatusCode.FAILED_PRECONDITION),
    (TooManyRequests, 429, StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, 503, StatusCode.UNAVAILABLE),
    (BackendUnavailable, 503, StatusCode.UNAVAILABLE),
    (BackendConnectFailed, 503, StatusCode.UNAVAILABLE),
    (BackendTimeout, 504, StatusCode.DEADLINE_EXCEEDED),
    (ModelLoadError, 503, StatusCode.UNAVAILABLE),
]


@pytest.mark.parametrize(("error_type", "http_status", "grpc_code"), STATUS_TABLE)
def test_each_error_carries_its_http_status_and_grpc_code(
    error_type: type[ModelServeError], http_status: int, grpc_code: StatusCode
) -> None:
    err = error_type("something went wrong")
    assert err.http_status == http_status
    assert err.grpc_code == grpc_code
    # What KServe's gRPC interceptor reads:
    assert isinstance(err, GrpcException)
    assert err.status_code == grpc_code
    assert err.details == "something went wrong"


def test_the_table_covers_every_exported_error() -> None:
    exported = {
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, ModelServeError)
    }
    assert exported == {row[0] for row in STATUS_TABLE} | {UpstreamError}


@pytest.mark.parametrize(("error_type", "http_status", "grpc_code"), STATUS_TABLE)
def test_grpc_code_and_http_status_agree(
    error_type: type[ModelServeError], http_status: int, grpc_code: StatusCode
) -> None:
    # A proxy translating our gRPC code back to HTTP lands on the same class of status.
    if error_type in (PayloadTooLarge, UnsupportedMediaType):
        assert status_for_http(grpc_code) // 100 == http_status // 100 == 4
    else:
        assert status_for_http(grpc_code) == http_status


@pytest.mark.parametrize("error_type", [row[0] for row in STATUS_TABLE])
def test_str_of_an_error_is_its_message(error_type: type[ModelServeError]) -> None:
    err = error_type("tensor 'x': bad shape")
    assert str(err) == "tensor 'x': bad shape"
    assert err.message == "tensor 'x': bad shape"


def test_upstream_errors_pass_their_status_through() -> None:
    err = UpstreamError("predictor said no", 418, StatusCode.ABORTED)
    assert (err.http_status, err.grpc_code, err.status_code) == (
        418,
        StatusCode.ABORTED,
        StatusCode.ABORTED,
    )
    assert str(err) == "predictor said no"
    # The instance status does not leak into the class or other instances.
    assert ModelServeError.http_status == 500
    assert UpstreamError("other", 502, StatusCode.UNKNOWN).http_status == 502


@pytest.mark.parametrize(
    ("grpc_code", "http_status"),
    [
        (StatusCode.INVALID_ARGUMENT, 400),
        (StatusCode.UNAUTHENTICATED, 401),
        (StatusCode.PERMISSION_DENIED, 403),
        (StatusCode.NOT_FOUND, 404),
        (StatusCode.FAILED_PRECONDITION, 422),
        (StatusCode.RESOURCE_EXHAUSTED, 429),
        (StatusCode.UNIMPLEMENTED, 501),
        (StatusCode.UNAVAILABLE, 503),
        (StatusCode.DEADLINE_EXCEEDED, 504),
        (StatusCode.INTERNAL, 500),
        (StatusCode.UNKNOWN, 500),
        (StatusCode.DATA_LOSS, 500),
        (StatusCode.ABORTED, 409),
    ],
)
def test_status_for_http_maps_grpc_codes(grpc_code: StatusCode, http_status: int) -> None:
    assert status_for_http(grpc_code) == http_status


def test_too_many_requests_may_say_when_to_retry() -> None:
    assert TooManyRequests("queue full").retry_after_s is None
    err = TooManyRequests("rate limit exceeded", retry_after_s=3)
    assert (err.retry_after_s, err.http_status, str(err)) == (3, 429, "rate limit exceeded")


def test_error_body_is_the_kserve_error_format() -> None:
    assert error_body("no such model") == {"error": "no such model"}
