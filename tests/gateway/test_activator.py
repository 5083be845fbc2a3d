"""`dispatch`: the activator's bounded wait, retries on another replica of the same revision only
when no byte of an answer came, and the in-flight counts — with the real `HttpForwarder` and
real sockets (tiny `asyncio.start_server` upstreams), all in one event loop per test."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pytest

from gateway.dataplane.proxy import HttpForwarder, UpstreamResponse
from gateway.dataplane.resolve import (
    NO_REVISION,
    Attempt,
    BackendConnectFailed,
    dispatch,
    find_route,
)
from gateway.routing import Backend, RoutingTable, ServiceRoute, Traffic
from gateway.settings import GatewaySettings
from servers.errors import BackendUnavailable, ModelNotFound, NotReady
from tests.support import free_port

T = TypeVar("T")
A, B = "svc-predictor-00001", "svc-predictor-00002"
SETTINGS = GatewaySettings(request_timeout_s=2.0, connect_timeout_s=1.0,
                           activator_timeout_s=5.0, activator_queue=50)


@dataclass
class Upstream:
    """A listening socket that answers every request as `mode` says, counting them."""

    tag: str
    mode: str = "ok"  # ok | garbage | partial | close (read the request, close, no byte)
    hits: int = 0
    server: asyncio.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", head, re.I)
                if length:
                    await reader.readexactly(int(length.group(1)))
                self.hits += 1
                if self.mode == "garbage":
                    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
                    await writer.drain()
                    break
                if self.mode == "partial":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"upstr")
                    await writer.drain()
                    break
                if self.mode == "close":
                    break
                body = orjson.dumps({"upstream": self.tag})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused


def be(revision: str, url: str, ready: bool = True) -> Backend:
    return Backend(revision, url, None, ready)


@dataclass
class Env:
    table: RoutingTable
    forwarder: HttpForwarder
    settings: GatewaySettings = SETTINGS
    upstreams: list[Upstream] = field(default_factory=list)

    async def upstream(self, tag: str, mode: str = "ok") -> Upstream:
        up = await Upstream(tag, mode).start()
        self.upstreams.append(up)
        return up

    def send(self, backend: Backend) -> Awaitable[UpstreamResponse]:
        return self.forwarder.forward(backend.http_url, "POST", b"/v1/models/svc:predict",
                                      [(b"content-type", b"application/json")], b"{}")

    async def call(self, tag: str | None = None, attempt: Attempt | None = None,
                   prepare: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
        route = self.table.get("svc")
        assert route is not None
        answer = await dispatch(self.table, route, tag, self.settings, self.send,
                                attempt or Attempt(), prepare)
        assert answer.status == 200
        result: dict[str, Any] = orjson.loads(answer.content)
        return result


def run(scenario: Callable[[Env], Coroutine[Any, Any, None]],
        settings: GatewaySettings = SETTINGS) -> None:
    async def main() -> None:
        env = Env(RoutingTable(), HttpForwarder(settings), settings)
        try:
            async with asyncio.timeout(20):
                await scenario(env)
        finally:
            await env.forwarder.aclose()  # first, so the upstreams' handlers see EOF
            await asyncio.sleep(0.01)
            for up in env.upstreams:
                await up.stop()

    asyncio.run(main())


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


def at_zero(revision: str = A, **kw: Any) -> ServiceRoute:
    """A service scaled to zero: its revision can be woken, no replica runs."""
    return ServiceRoute("svc", traffic=(Traffic(revision, 100, "latest", latest=True,
                                                activate=True),), **kw)


def serving(*backends: Backend, revision: str = A) -> ServiceRoute:
    return ServiceRoute("svc", backends=backends,
                        traffic=(Traffic(revision, 100, "latest", latest=True),))


# --- the activator --------------------------------------------------------------------------


def test_a_held_request_is_served_once_a_replica_is_ready() -> None:
    async def scenario(env: Env) -> None:
        up = await env.upstream("a")
        env.table.update(at_zero())
        attempt = Attempt()
        task = asyncio.create_task(env.call(attempt=attempt))
        stats = env.table.stats
        await until(lambda: stats.waiting(A) == 1)
        assert stats.in_flight(A) == 1  # the autoscaler sees the demand
        assert attempt.revision == A
        # A replica that is starting, not ready: still held.
        env.table.update(ServiceRoute("svc", backends=(be(A, up.url, ready=False),),
                                      traffic=at_zero().traffic))
        await asyncio.sleep(0.05)
        assert not task.done() and stats.waiting(A) == 1
        assert up.hits == 0
        env.table.update(serving(be(A, up.url)))
        assert await asyncio.wait_for(task, 2) == {"upstream": "a"}
        assert up.hits == 1 and attempt.revision == A and attempt.retries == 0
        assert stats.waiting(A) == 0 and stats.in_flight(A) == 0
        assert stats.backend_in_flight(up.url) == 0

    run(scenario)


def test_a_held_request_stays_with_its_revision_while_it_keeps_traffic() -> None:
    async def scenario(env: Env) -> None:
        a, b = await env.upstream("a"), await env.upstream("b")
        # A canary at zero (A) beside a serving revision (B): held requests for A wait for A.
        split = (Traffic(A, 50, "latest", latest=True, activate=True), Traffic(B, 50, "prev"))
        env.table.update(ServiceRoute("svc", backends=(be(B, b.url),), traffic=split))
        env.table._rng.seed(1)
        tasks = [asyncio.create_task(env.call()) for _ in range(20)]
        await until(lambda: sum(t.done() for t in tasks) + env.table.stats.waiting(A) == 20)
        held = env.table.stats.waiting(A)
        assert held > 0
        # Something unrelated changes (B gets a second replica): the held ones stay held.
        env.table.update(ServiceRoute("svc", backends=(be(B, b.url), be(B, b.url + "/")),
                                      traffic=split))
        await asyncio.sleep(0.05)
        assert env.table.stats.waiting(A) == held and a.hits == 0
        env.table.update(ServiceRoute("svc", backends=(be(A, a.url), be(B, b.url)),
                                      traffic=split))
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert answers.count({"upstream": "a"}) == held == a.hits

    run(scenario)


def test_many_held_requests_are_all_released() -> None:
    async def scenario(env: Env) -> None:
        up = await env.upstream("a")
        env.table.update(at_zero())
        tasks = [asyncio.create_task(env.call()) for _ in range(20)]
        await until(lambda: env.table.stats.waiting(A) == 20)
        env.table.update(serving(be(A, up.url)))
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert answers == [{"upstream": "a"}] * 20
        assert env.table.stats.in_flight(A) == 0

    run(scenario)


def test_a_full_queue_answers_not_ready_at_once() -> None:
    settings = SETTINGS.model_copy(update={"activator_queue": 2})

    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        held = [asyncio.create_task(env.call()) for _ in range(2)]
        await until(lambda: env.table.stats.waiting(A) == 2)
        attempt = Attempt()
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(NotReady, match=f"revision '{A}' is starting.*queue is full.*2 req"):
            await env.call(attempt=attempt)
        assert loop.time() - start < 0.5
        assert attempt.revision == A
        assert env.table.stats.waiting(A) == 2  # the refused one was never counted
        up = await env.upstream("a")
        env.table.update(serving(be(A, up.url)))
        assert await asyncio.gather(*held) == [{"upstream": "a"}] * 2

    run(scenario, settings)


def test_the_wait_times_out_naming_the_revision() -> None:
    settings = SETTINGS.model_copy(update={"activator_timeout_s": 0.3})

    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempt = Attempt()
        with pytest.raises(NotReady, match=f"no replica of revision '{A}' became ready within "
                                           r"0\.3 s") as caught:
            await env.call(attempt=attempt)
        assert 0.25 < loop.time() - start < 2
        assert caught.value.http_status == 503
        assert attempt.revision == A
        stats = env.table.stats
        assert stats.waiting(A) == 0 and stats.in_flight(A) == 0

    run(scenario, settings)


def test_updates_that_bring_no_replica_keep_the_request_waiting_until_the_timeout() -> None:
    settings = SETTINGS.model_copy(update={"activator_timeout_s": 0.4})

    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        task = asyncio.create_task(env.call())
        for _ in range(5):
            await asyncio.sleep(0.03)
            env.table.update(at_zero(message="scaling"))  # other changes: wait on
        with pytest.raises(NotReady, match="became ready within"):
            await task

    run(scenario, settings)


def test_a_route_that_loses_its_traffic_fails_the_held_requests() -> None:
    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        task = asyncio.create_task(env.call())
        await until(lambda: env.table.stats.waiting(A) == 1)
        env.table.update(ServiceRoute("svc", message="revision failed: no model",
                                      traffic=(Traffic(A, 100, latest=True),)))
        with pytest.raises(NotReady, match="revision failed: no model"):
            await asyncio.wait_for(task, 2)
        assert env.table.stats.waiting(A) == 0

    run(scenario)


def test_a_deleted_service_fails_the_held_requests() -> None:
    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        task = asyncio.create_task(env.call())
        await until(lambda: env.table.stats.waiting(A) == 1)
        env.table.remove("svc")
        with pytest.raises(ModelNotFound, match="deleted"):
            await asyncio.wait_for(task, 2)
        assert env.table.stats.in_flight(A) == 0

    run(scenario)


def test_a_held_request_for_a_tag_waits_for_that_revision() -> None:
    async def scenario(env: Env) -> None:
        up_a, up_b = await env.upstream("a"), await env.upstream("b")
        split = (Traffic(B, 20, "latest", latest=True, activate=True), Traffic(A, 80, "prev"))
        env.table.update(ServiceRoute("svc", backends=(be(A, up_a.url),), traffic=split,
                                      tag_routing=True))
        task = asyncio.create_task(env.call(tag="latest"))
        await until(lambda: env.table.stats.waiting(B) == 1)
        assert await env.call(tag="prev") == {"upstream": "a"}  # the other tag is served
        env.table.update(ServiceRoute("svc", backends=(be(B, up_b.url), be(A, up_a.url)),
                                      traffic=split, tag_routing=True))
        assert await asyncio.wait_for(task, 2) == {"upstream": "b"}

    run(scenario)


def test_a_route_updated_while_the_body_is_read_is_not_missed() -> None:
    """`prepare` (REST reads the body there) runs after the pick and may await: a replica that
    becomes ready meanwhile must still release the request, not leave it waiting for the
    *next* table change (here there is none, so it would wait for the activator timeout)."""
    settings = SETTINGS.model_copy(update={"activator_timeout_s": 1.0})

    async def scenario(env: Env) -> None:
        up = await env.upstream("a")
        env.table.update(at_zero())

        async def read_body() -> None:
            await asyncio.sleep(0.01)  # the body's bytes arrive...
            env.table.update(serving(be(A, up.url)))  # ... as the replica becomes ready

        assert await env.call(prepare=read_body) == {"upstream": "a"}

    run(scenario, settings)


def test_prepare_errors_name_the_revision_and_hold_nothing() -> None:
    async def scenario(env: Env) -> None:
        env.table.update(at_zero())
        attempt = Attempt()

        async def bad_body() -> None:
            raise ValueError("body too large")

        with pytest.raises(ValueError, match="too large"):
            await env.call(attempt=attempt, prepare=bad_body)
        assert attempt.revision == A
        assert env.table.stats.waiting(A) == 0

    run(scenario)


# --- retries --------------------------------------------------------------------------------


def busy(env: Env, url: str, n: int = 5) -> None:
    """Make `url` look loaded, so that least-in-flight picks the other replica first."""
    for _ in range(n):
        env.table.stats.started(A, url)


def test_a_refused_replica_is_retried_on_another_of_the_same_revision() -> None:
    async def scenario(env: Env) -> None:
        good, other = await env.upstream("a2"), await env.upstream("b")
        dead = dead_url()
        env.table.update(ServiceRoute(
            "svc", backends=(be(A, dead), be(A, good.url), be(B, other.url)),
            traffic=(Traffic(A, 100, "latest", latest=True), Traffic(B, 0, "prev")),
        ))
        busy(env, good.url)  # the dead replica goes first
        attempt = Attempt()
        assert await env.call(attempt=attempt) == {"upstream": "a2"}
        assert attempt.revision == A and attempt.retries == 1
        assert other.hits == 0
        stats = env.table.stats
        assert stats.backend_in_flight(dead) == 0
        assert stats.backend_in_flight(good.url) == 5  # only what `busy` added
        assert stats.in_flight(A) == 5

    run(scenario)


def test_a_replica_that_closes_before_any_byte_is_retried() -> None:
    async def scenario(env: Env) -> None:
        closing, good = await env.upstream("closing", "close"), await env.upstream("a2")
        env.table.update(serving(be(A, closing.url), be(A, good.url)))
        busy(env, good.url)
        attempt = Attempt()
        assert await env.call(attempt=attempt) == {"upstream": "a2"}
        assert attempt.retries == 1
        # The forwarder itself retries a connection closed before any byte once (a stale
        # kept-alive socket), so the closing replica saw the request twice.
        assert closing.hits == 2 and good.hits == 1

    run(scenario)


def test_every_replica_refusing_fails_with_the_last_error() -> None:
    async def scenario(env: Env) -> None:
        dead1, dead2 = dead_url(), dead_url()
        env.table.update(serving(be(A, dead1), be(A, dead2)))
        attempt = Attempt()
        with pytest.raises(BackendConnectFailed) as caught:
            await env.call(attempt=attempt)
        assert caught.value.http_status == 503
        assert attempt.retries == 1 and attempt.revision == A
        assert env.table.stats.in_flight(A) == 0

    run(scenario)


@pytest.mark.parametrize("mode, message", [
    ("garbage", "invalid HTTP answer"),
    ("partial", "unavailable"),
])
def test_a_replica_that_answered_something_is_not_retried(mode: str, message: str) -> None:
    async def scenario(env: Env) -> None:
        broken, good = await env.upstream("broken", mode), await env.upstream("a2")
        env.table.update(serving(be(A, broken.url), be(A, good.url)))
        busy(env, good.url)
        attempt = Attempt()
        with pytest.raises(BackendUnavailable, match=message) as caught:
            await env.call(attempt=attempt)
        assert not isinstance(caught.value, BackendConnectFailed)
        assert caught.value.http_status == 503
        assert broken.hits == 1 and good.hits == 0  # bytes came: the failure is the answer
        assert attempt.retries == 0 and attempt.revision == A
        assert env.table.stats.backend_in_flight(broken.url) == 0

    run(scenario)


def test_a_revision_whose_only_replica_refuses_fails_without_using_the_other() -> None:
    async def scenario(env: Env) -> None:
        other = await env.upstream("b")
        dead = dead_url()
        split = (Traffic(A, 50, "latest", latest=True), Traffic(B, 50, "prev"))
        env.table.update(ServiceRoute("svc", backends=(be(A, dead), be(B, other.url)),
                                      traffic=split, tag_routing=True))
        attempt = Attempt()
        with pytest.raises(BackendConnectFailed):
            await env.call(tag="latest", attempt=attempt)
        assert other.hits == 0 and attempt.revision == A

        # By percent: each request either reaches B or fails as A, never A's answered by B.
        outcomes = []
        for _ in range(40):
            attempt = Attempt()
            answer: dict[str, Any] | None = None
            try:
                answer = await env.call(attempt=attempt)
            except BackendConnectFailed:
                pass
            outcomes.append((attempt.revision, answer))
        for revision, answer in outcomes:
            assert (revision, answer) in ((A, None), (B, {"upstream": "b"}))
        assert {r for r, _ in outcomes} == {A, B}
        assert other.hits == sum(1 for r, _ in outcomes if r == B)

    run(scenario)


def test_a_retry_uses_the_current_route() -> None:
    """A replica added while the first send was failing is a candidate for the retry."""
    async def scenario(env: Env) -> None:
        good = await env.upstream("new")
        dead = dead_url()
        env.table.update(serving(be(A, dead)))
        sends: list[str] = []
        original = env.send

        def send(backend: Backend) -> Awaitable[UpstreamResponse]:
            sends.append(backend.http_url)
            if len(sends) == 1:
                env.table.update(serving(be(A, dead), be(A, good.url)))
            return original(backend)

        env.send = send  # type: ignore[method-assign]
        attempt = Attempt()
        assert await env.call(attempt=attempt) == {"upstream": "new"}
        assert sends == [dead, good.url] and attempt.retries == 1

    run(scenario)


# --- find_route -----------------------------------------------------------------------------


def test_find_route_by_tag_host_then_by_name() -> None:
    table = RoutingTable()
    route = ServiceRoute("svc", tag_routing=True, traffic=(
        Traffic(B, 10, "latest", latest=True), Traffic(A, 90, "prev")))
    other = ServiceRoute("other", backends=(be(A, "http://127.0.0.1:1"),))
    table.update(route)
    table.update(other)
    assert find_route(table, "svc", "latest-svc.default.example.com:8080") == (route, "latest")
    assert find_route(table, "svc", "prev-svc.default.example.com") == (route, "prev")
    assert find_route(table, "svc", "svc.default.example.com") == (route, None)
    # A host names the service, and the path must name its model: another model is refused
    # (never sent to svc's backend); an unknown host falls back to the name.
    with pytest.raises(ModelNotFound, match="model 'other' is not served at host"):
        find_route(table, "other", "svc.default.example.com")
    assert find_route(table, "other", "127.0.0.1:8080") == (other, None)
    assert find_route(table, "other", None) == (other, None)
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        find_route(table, "nope", "localhost")


def test_no_revision_at_all_is_not_ready_before_any_send() -> None:
    async def scenario(env: Env) -> None:
        env.table.update(ServiceRoute("svc", message="svc-predictor-00001 is pulling its model",
                                      backends=(be(A, dead_url(), ready=False),)))
        attempt = Attempt()
        with pytest.raises(NotReady, match="pulling its model"):
            await env.call(attempt=attempt)
        assert attempt.revision == NO_REVISION
        with pytest.raises(NotReady, match="no ready revision tagged 'prev'"):
            await env.call(tag="prev")

    run(scenario)
