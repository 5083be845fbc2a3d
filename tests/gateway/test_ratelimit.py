"""Per-client rate limits: token buckets on an injected clock, REST and gRPC, run for real."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from pydantic import ValidationError

from gateway.dataplane import ratelimit
from gateway.dataplane.admission import Admission
from gateway.dataplane.grpc_proxy import _peer_host
from gateway.dataplane.ratelimit import RateLimiter
from gateway.settings import GatewaySettings
from servers.errors import TooManyRequests
from tests.gateway.conftest import SETTINGS, Gateway, LoopThread, Upstream, running_gateway

KEY_A, KEY_B = "rate-key-a", "rate-key-b"
BODY = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
MESSAGE = "rate limit exceeded (1 requests/s, bursts of 2); retry after 1 s"


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_settings(**extra: object) -> GatewaySettings:
    fields = SETTINGS.model_dump(exclude={"api_keys"})
    return GatewaySettings(**(fields | {"rate_limit_rps": 1, "rate_limit_burst": 2} | extra))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream], clock: FakeClock
) -> Iterator[Gateway]:
    """Keys A and B, 1 request/s each with bursts of 2, on the test's clock."""
    settings = limited_settings(api_keys=f"{KEY_A},{KEY_B}")
    admission = Admission.from_settings(settings, clock)
    with running_gateway(loop_thread, upstreams, settings, admission) as running:
        yield running


@pytest.fixture
def client(limited: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        yield c


def infer(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/v2/models/echo/infer", content=BODY, headers={"x-api-key": key})


def hits(gateway: Gateway) -> int:
    return gateway.a.hits.count + gateway.b.hits.count


def test_burst_then_429_with_retry_after(client: httpx.Client, limited: Gateway) -> None:
    assert [infer(client, KEY_A).status_code for _ in range(2)] == [200, 200]
    before = hits(limited)
    response = infer(client, KEY_A)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": MESSAGE}
    assert hits(limited) == before  # the component never saw it
    assert limited.sample("unknown", "v2", "429") == 1


def test_bucket_refills_as_the_clock_advances(
    client: httpx.Client, clock: FakeClock
) -> None:
    for _ in range(2):
        infer(client, KEY_A)
    assert infer(client, KEY_A).status_code == 429
    clock.now += 0.5  # half a token: still empty
    assert infer(client, KEY_A).status_code == 429
    clock.now += 0.5
    assert infer(client, KEY_A).status_code == 200
    assert infer(client, KEY_A).status_code == 429
    clock.now += 60  # refills up to the burst, no more
    assert [infer(client, KEY_A).status_code for _ in range(3)] == [200, 200, 429]


def test_each_key_has_its_own_bucket(client: httpx.Client) -> None:
    for _ in range(2):
        infer(client, KEY_A)
    assert infer(client, KEY_A).status_code == 429
    assert [infer(client, KEY_B).status_code for _ in range(3)] == [200, 200, 429]


def test_auth_comes_before_the_limit(client: httpx.Client) -> None:
    # Unauthenticated requests take no tokens from anyone.
    for _ in range(5):
        assert client.post("/v2/models/echo/infer", content=BODY).status_code == 401
    assert infer(client, KEY_A).status_code == 200


def test_grpc_limit_is_resource_exhausted_and_shares_the_key_bucket(
    client: httpx.Client, limited: Gateway
) -> None:
    infer(client, KEY_A)  # one token over REST, one left
    request = pb.ModelInferRequest(model_name="echo", id="r1")
    request.inputs.add(name="x", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x01")
    with grpc.insecure_channel(limited.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {KEY_A}"),)
        stub.ModelInfer(request, metadata=metadata)
        before = hits(limited)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=metadata)
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # health is never limited
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == MESSAGE
    assert dict(error.trailing_metadata() or ())["retry-after"] == "1"
    assert hits(limited) == before
    assert limited.sample("unknown", "grpc", "RESOURCE_EXHAUSTED") == 1


def test_health_and_metrics_are_not_limited(client: httpx.Client) -> None:
    for _ in range(5):
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_without_auth_the_limit_is_per_client_ip(
    loop_thread: LoopThread, upstreams: tuple[Upstream, Upstream], clock: FakeClock
) -> None:
    settings = limited_settings()
    admission = Admission.from_settings(settings, clock)
    with running_gateway(loop_thread, upstreams, settings, admission) as gateway:
        # 127.0.0.2 is loopback too, but another client address.
        other = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=gateway.url) as one, \
                httpx.Client(base_url=gateway.url, transport=other) as two:
            codes = [one.post("/v1/models/echo:predict", content=BODY).status_code
                     for _ in range(3)]
            assert codes == [200, 200, 429]
            assert two.post("/v1/models/echo:predict", content=BODY).status_code == 200


# --- the limiter alone ----------------------------------------------------------------------


def test_retry_after_is_whole_seconds_until_the_next_token(clock: FakeClock) -> None:
    limiter = RateLimiter(rps=0.25, burst=1, clock=clock)
    limiter.acquire("c")
    with pytest.raises(TooManyRequests) as caught:
        limiter.acquire("c")
    assert caught.value.retry_after_s == 4
    clock.now += 3.5
    with pytest.raises(TooManyRequests) as caught:
        limiter.acquire("c")
    assert caught.value.retry_after_s == 1  # 0.5 s left: rounded up, never 0
    clock.now += 0.5
    limiter.acquire("c")


def test_fast_rates_still_say_at_least_one_second(clock: FakeClock) -> None:
    limiter = RateLimiter(rps=1000, burst=1, clock=clock)
    limiter.acquire("c")
    with pytest.raises(TooManyRequests) as caught:
        limiter.acquire("c")
    assert caught.value.retry_after_s == 1


def test_full_buckets_are_forgotten(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "_PRUNE_ABOVE", 10)
    limiter = RateLimiter(rps=1, burst=1, clock=clock)
    for n in range(10):
        limiter.acquire(f"old-{n}")
    clock.now += 1  # every old bucket is full again
    limiter.acquire("new-0")
    assert len(limiter) == 1
    with pytest.raises(TooManyRequests):
        limiter.acquire("new-0")  # a pruned-away client's limit is not reset by pruning


def test_limiter_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="rps > 0"):
        RateLimiter(rps=0, burst=1)


# --- settings -------------------------------------------------------------------------------


def test_rate_limit_is_off_by_default() -> None:
    settings = GatewaySettings()
    assert settings.rate_limit_rps == 0
    assert Admission.from_settings(settings).enabled is False


def test_rate_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSERVE_GATEWAY_RATE_LIMIT_RPS", "2.5")
    assert GatewaySettings().burst == 3  # default burst: the rate rounded up
    monkeypatch.setenv("MODELSERVE_GATEWAY_RATE_LIMIT_BURST", "10")
    settings = GatewaySettings()
    assert (settings.rate_limit_rps, settings.burst) == (2.5, 10)
    admission = Admission.from_settings(settings)
    assert admission.limiter is not None and admission.auth is None


@pytest.mark.parametrize(
    "bad",
    [{"rate_limit_rps": -1}, {"rate_limit_rps": 1, "rate_limit_burst": 0},
     {"rate_limit_burst": 5}],  # a burst with no rate would be silently ignored
)
def test_bad_rate_limits_fail_at_start(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:127.0.0.1:5678", "127.0.0.1"), ("ipv6:[::1]:5678", "::1"),
     ("ipv6:%5B::1%5D:5678", "::1"), ("unix:/tmp/sock", "/tmp/sock")],
)
def test_grpc_peers_are_limited_by_address_not_port(peer: str, host: str) -> None:
    assert _peer_host(peer) == host
