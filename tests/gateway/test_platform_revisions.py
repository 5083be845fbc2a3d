"""LocalPlatform's revisions, traffic and replicas, with tiny real component processes.

The components are `python -c` HTTP servers (`FAKE`): ready on /v2/health/ready (after
`--ready_after` seconds), answering every POST with their `--version` and port, failing at
start with `--fail`. Each test drives one platform in one `asyncio.run` through its API
(`apply`, `patch`) and reads what the data plane and `GET /v1/services` read: the routing
table's route and its InferenceService document.
"""

from __future__ import annotations

import asyncio
import copy
import io
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.kube import canary_patch, promote_patch
from gateway.controlplane.manifests import InferenceService
from gateway.controlplane.patches import JSON_PATCH, MERGE_PATCH
from gateway.controlplane.platform import AutoscalerDefaults, LocalPlatform
from gateway.routing import RoutingTable, ServiceRoute
from servers.errors import ModelNotFound, UnprocessableEntity, UnsupportedMediaType
from tests.gateway.test_supervisor import FAST, custom

FAKE = textwrap.dedent("""
    import argparse, http.server, json, sys, time
    p = argparse.ArgumentParser()
    for flag in ("--http_port", "--grpc_port"):
        p.add_argument(flag, type=int)
    p.add_argument("--version", default="")
    p.add_argument("--fail")
    p.add_argument("--ready_after", type=float, default=0.0)
    a, rest = p.parse_known_args()
    if a.fail:
        print("fatal:", a.fail, flush=True)
        sys.exit(3)
    began = time.monotonic()
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 65536  # head and body in one write (no Nagle delay on kept-alive sockets)
        def answer(self, code, body=b""):
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            ok = self.path == "/v2/health/ready" and time.monotonic() - began >= a.ready_after
            self.answer(200 if ok else 503)
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.answer(200, json.dumps({"version": a.version, "port": a.http_port}).encode())
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.http_port), H)
    server.daemon_threads = True
    server.serve_forever()
""")

NAME = "svc"
TAG_HOSTS = {"serving.kserve.io/enable-tag-routing": "true"}
OPTIONS: dict[str, Any] = {**FAST, "poll_interval": 0.05, "stop_grace": 2.0}


def rev(n: int, name: str = NAME) -> str:
    return f"{name}-predictor-{n:05d}"


def manifest(version: str = "1", *args: str, name: str = NAME, canary: int | None = None,
             annotations: dict[str, str] | None = None, **predictor: Any) -> dict[str, Any]:
    """An InferenceService document running FAKE; `version` tells revisions' answers apart."""
    spec: dict[str, Any] = {"containers": [{
        "name": "kserve-container", "command": ["python", "-c", FAKE],
        "args": ["--http_port=8080", f"--version={version}", *args],
    }], **predictor}
    if canary is not None:
        spec["canaryTrafficPercent"] = canary
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "default",
                     "annotations": dict(TAG_HOSTS if annotations is None else annotations)},
        "spec": {"predictor": spec},
    }


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as the platform stores it (the typed model's JSON, defaults filled in)."""
    result: dict[str, Any] = InferenceService.model_validate(doc).model_dump(
        mode="json", exclude_none=True)
    return result


class Running:
    """A started platform, its table and helpers to read what clients would see."""

    def __init__(self, platform: LocalPlatform, table: RoutingTable, out: io.StringIO) -> None:
        self.platform, self.table, self.out = platform, table, out

    def route(self, name: str = NAME) -> ServiceRoute:
        route = self.table.get(name)
        assert route is not None
        return route

    def doc(self, name: str = NAME) -> dict[str, Any]:
        return self.route(name).status(self.table.stats)

    def traffic(self, name: str = NAME) -> dict[str, int]:
        return {t.revision: t.percent for t in self.route(name).traffic}

    def tags(self, name: str = NAME) -> dict[str, str | None]:
        return {t.revision: t.tag for t in self.route(name).traffic}

    def revisions(self, name: str = NAME) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.doc(name)["status"]["modelserve"]["revisions"]}

    def predictor(self, name: str = NAME) -> dict[str, Any]:
        component: dict[str, Any] = self.doc(name)["status"]["components"]["predictor"]
        return component

    def conditions(self, name: str = NAME) -> dict[str, dict[str, str]]:
        return {c["type"]: c for c in self.doc(name)["status"]["conditions"]}

    def ready_backends(self, revision: str, name: str = NAME) -> list[str]:
        return [b.http_url for b in self.route(name).backends
                if b.revision == revision and b.ready]

    def served_by(self, host: str | None = None, name: str = NAME) -> str:
        """The revision of the replica a request would be sent to now."""
        route, tag = (self.table.resolve_host(host) if host else (self.route(name), None)) \
            or (None, None)
        assert route is not None
        choice = self.table.pick(route, tag)
        assert choice is not None and choice.backend is not None
        return choice.backend.revision

    async def until(self, condition: Callable[[], bool], limit: float = 20.0,
                    what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not condition():
            assert loop.time() < deadline, f"not reached: {what}\n{self.out.getvalue()[-3000:]}"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def platform(tmp: Path, *docs: dict[str, Any],
                   autoscaler: AutoscalerDefaults | None = None) -> AsyncIterator[Running]:
    table, out = RoutingTable(), io.StringIO()
    services = [InferenceService.model_validate(d) for d in docs or (manifest(),)]
    local = LocalPlatform([], tmp, table, output=out, services=services, autoscaler=autoscaler,
                          policy=custom(tmp), **OPTIONS)
    await local.start()
    try:
        yield Running(local, table, out)
    finally:
        await local.stop()
        assert not [s.pid for s in local.supervisors() if s.pid is not None]


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(90):
            await coro

    asyncio.run(bounded())


# --- revisions and traffic ------------------------------------------------------------------


def test_a_changed_spec_rolls_out_a_new_revision_once_it_is_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            assert p.traffic() == {rev(1): 100}
            first = p.predictor()
            assert first["latestReadyRevision"] == rev(1) == first["latestCreatedRevision"]
            assert first["latestRolledoutRevision"] == rev(1)
            assert "previousRolledoutRevision" not in first
            assert all(c["status"] == "True" for c in p.conditions().values())
            assert p.doc()["metadata"]["generation"] == 1

            doc, created = await p.platform.apply(manifest("2", "--ready_after=0.6"))
            assert not created
            component = doc["status"]["components"]["predictor"]
            assert component["latestCreatedRevision"] == rev(2)
            assert component["latestReadyRevision"] == rev(1)
            assert [(t["revisionName"], t["percent"]) for t in component["traffic"]] == [
                (rev(1), 100)
            ]
            conditions = {c["type"]: c for c in doc["status"]["conditions"]}
            assert conditions["Ready"]["status"] == "True"
            assert conditions["LatestDeploymentReady"] == {
                "type": "LatestDeploymentReady", "status": "False", "reason": "RevisionStarting",
                "message": f"revision {rev(2)} is starting",
            }
            assert doc["metadata"]["generation"] == 2 == doc["status"]["observedGeneration"]

            # While 00002 starts (its process runs, not ready yet) 00001 keeps everything.
            await p.until(lambda: p.revisions()[rev(2)]["replicas"] == 1, what="00002 spawned")
            await asyncio.sleep(0.2)
            assert p.traffic() == {rev(1): 100}
            assert p.served_by() == rev(1)
            assert not p.ready_backends(rev(2))

            await p.until(lambda: p.traffic() == {rev(2): 100}, what="00002 takes all")
            assert p.served_by() == rev(2)
            component = p.predictor()
            assert component["latestReadyRevision"] == rev(2)
            assert component["latestRolledoutRevision"] == rev(2)
            assert component["previousRolledoutRevision"] == rev(1)
            old = p.revisions()[rev(1)]
            assert old["retired"] and old["desiredReplicas"] == 0 and old["percent"] == 0
            await p.until(lambda: p.revisions()[rev(1)]["replicas"] == 0
                          and not p.revisions()[rev(1)]["replicaDetails"], what="00001 drained")
            assert not p.ready_backends(rev(1))
            assert f"revision {rev(1)} has no traffic: stopping it" in p.out.getvalue()
            old_procs = [s for s in p.platform.supervisors() if s.plan.revision == rev(1)]
            assert all(s.pid is None for s in old_procs)
            assert all(c["status"] == "True" for c in p.conditions().values())

    run(scenario())


def test_canary_split_rollback_and_promote(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            await p.platform.apply(manifest("2", canary=30))
            await p.until(lambda: len(p.traffic()) == 2, what="canary split")
            assert p.traffic() == {rev(2): 30, rev(1): 70}
            assert p.tags() == {rev(2): "latest", rev(1): "prev"}
            traffic = p.predictor()["traffic"]
            assert traffic == [
                {"revisionName": rev(2), "percent": 30, "latestRevision": True, "tag": "latest",
                 "url": "http://latest-svc.default.example.com"},
                {"revisionName": rev(1), "percent": 70, "latestRevision": False, "tag": "prev",
                 "url": "http://prev-svc.default.example.com"},
            ]
            # The rolled-out revision stays rolled out while the canary runs.
            assert p.predictor()["latestRolledoutRevision"] == rev(1)
            assert p.served_by("latest-svc.default.example.com:8080") == rev(2)
            assert p.served_by("prev-svc.default.example.com") == rev(1)
            counts = {rev(1): 0, rev(2): 0}
            for _ in range(1000):
                counts[p.served_by()] += 1
            assert abs(counts[rev(2)] / 1000 - 0.30) < 0.06
            assert not p.revisions()[rev(1)]["retired"]

            # Rollback: canaryTrafficPercent 0 moves traffic, makes no revision.
            doc = await p.platform.patch(NAME, MERGE_PATCH, canary_patch(0))
            assert [(t["revisionName"], t["percent"])
                    for t in doc["status"]["components"]["predictor"]["traffic"]] == [
                (rev(2), 0), (rev(1), 100)]
            assert p.traffic() == {rev(2): 0, rev(1): 100}
            assert len(p.revisions()) == 2
            assert p.predictor()["latestCreatedRevision"] == rev(2)
            assert p.served_by() == rev(1)
            assert p.served_by("latest-svc.default.example.com") == rev(2)  # still reachable
            assert doc["spec"]["predictor"]["canaryTrafficPercent"] == 0
            assert doc["metadata"]["generation"] == 3

            doc = await p.platform.patch(NAME, MERGE_PATCH, canary_patch(50))
            assert p.traffic() == {rev(2): 50, rev(1): 50}

            # Promote: the JSON patch removes the field; the latest takes everything.
            doc = await p.platform.patch(NAME, JSON_PATCH, promote_patch())
            assert "canaryTrafficPercent" not in doc["spec"]["predictor"]
            assert p.traffic() == {rev(2): 100}
            assert p.tags() == {rev(2): "latest"}
            component = p.predictor()
            assert component["latestRolledoutRevision"] == rev(2)
            assert component["previousRolledoutRevision"] == rev(1)
            assert p.revisions()[rev(1)]["retired"]
            assert p.table.resolve_host("prev-svc.default.example.com") is None
            assert len(p.revisions()) == 2  # no revision for a traffic-only change
            await p.until(lambda: not p.revisions()[rev(1)]["replicaDetails"], what="drained")

            # Nothing left to promote: the JSON patch does not apply.
            with pytest.raises(UnprocessableEntity, match="missing path"):
                await p.platform.patch(NAME, JSON_PATCH, promote_patch())

            # A canary of the next revision splits against 00002, the one rolled out now.
            await p.platform.apply(manifest("3", canary=20))
            await p.until(lambda: len(p.traffic()) == 2, what="second canary")
            assert p.traffic() == {rev(3): 20, rev(2): 80}
            assert p.tags() == {rev(3): "latest", rev(2): "prev"}

    run(scenario())


def test_changes_that_make_no_revision(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            same = manifest()
            doc, created = await p.platform.apply(same)
            assert not created
            assert doc["metadata"]["generation"] == 1  # nothing changed at all
            await p.platform.apply(manifest(canary=40))  # only the traffic field
            await p.platform.patch(NAME, MERGE_PATCH, canary_patch(10))
            await p.platform.patch(NAME, JSON_PATCH, promote_patch())
            await asyncio.sleep(0.2)
            assert list(p.revisions()) == [rev(1)]
            assert p.traffic() == {rev(1): 100}  # a canary with nothing to split against
            assert p.doc()["metadata"]["generation"] == 4
            assert len(p.platform.supervisors()) == 1

            # An annotation is part of the revision template (as in Knative): a new revision.
            await p.platform.apply(manifest(annotations={}))
            await p.until(lambda: p.traffic() == {rev(2): 100}, what="annotation revision")
            assert p.table.resolve_host("latest-svc.default.example.com") is None

    run(scenario())


def test_a_revision_that_fails_to_start_leaves_traffic_on_the_old_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            await p.platform.apply(manifest("2", "--fail=no model at /mnt/models"))
            await p.until(lambda: p.revisions()[rev(2)]["message"] != "", what="failure seen")
            assert p.traffic() == {rev(1): 100}
            assert p.served_by() == rev(1)
            failed = p.revisions()[rev(2)]
            assert "exited with code 3" in failed["message"]
            assert "fatal: no model at /mnt/models" in failed["message"]  # its last output
            assert failed["replicas"] == 0 and not failed["ready"]
            conditions = p.conditions()
            assert conditions["Ready"]["status"] == "True"
            latest = conditions["LatestDeploymentReady"]
            assert latest["status"] == "False" and latest["reason"] == "RevisionFailed"
            assert latest["message"] == failed["message"]
            component = p.predictor()
            assert component["latestCreatedRevision"] == rev(2)
            assert component["latestReadyRevision"] == rev(1)
            assert f"replica 1 of {rev(2)} failed to start" in p.out.getvalue()

            # The next good revision rolls out over the failed one.
            await p.platform.apply(manifest("3"))
            await p.until(lambda: p.traffic() == {rev(3): 100}, what="00003 rolls out")
            component = p.predictor()
            assert component["previousRolledoutRevision"] == rev(1)
            assert p.conditions()["LatestDeploymentReady"]["status"] == "True"
            assert p.revisions()[rev(1)]["retired"] and p.revisions()[rev(2)]["retired"]

    run(scenario())


def test_a_canary_that_fails_keeps_the_rolled_out_revision(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            await p.platform.apply(manifest("2", "--fail=boom", canary=50))
            await p.until(lambda: p.revisions()[rev(2)]["message"] != "", what="failure")
            assert p.traffic() == {rev(1): 100}
            assert not p.revisions()[rev(1)]["retired"]

    run(scenario())


def test_bad_requests_raise_the_api_errors_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            before = p.doc()
            with pytest.raises(ModelNotFound, match="no InferenceService named 'nope'"):
                await p.platform.patch("nope", MERGE_PATCH, canary_patch(10))
            with pytest.raises(UnsupportedMediaType, match="content type"):
                await p.platform.patch(NAME, "application/strategic-merge-patch+json",
                                       canary_patch(10))
            with pytest.raises(UnprocessableEntity, match="does not apply"):
                await p.platform.patch(NAME, JSON_PATCH, [{"op": "bogus", "path": "/spec"}])
            with pytest.raises(UnprocessableEntity, match="does not apply"):
                await p.platform.patch(NAME, MERGE_PATCH, ["not an object"])
            with pytest.raises(UnprocessableEntity, match="metadata.name"):
                await p.platform.patch(NAME, MERGE_PATCH, {"metadata": {"name": "other"}})
            with pytest.raises(UnprocessableEntity, match="canaryTrafficPercent"):
                await p.platform.patch(NAME, MERGE_PATCH,
                                       {"spec": {"predictor": {"canaryTrafficPercent": 150}}})
            with pytest.raises(UnprocessableEntity, match="minReplicas"):
                await p.platform.patch(NAME, MERGE_PATCH,
                                       {"spec": {"predictor": {"minReplicas": -1}}})
            with pytest.raises(UnprocessableEntity, match="autoscaling.knative.dev/class"):
                await p.platform.apply(manifest("2", annotations={
                    "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}))
            with pytest.raises(UnprocessableEntity, match="namespace"):
                other_ns = manifest("2")
                other_ns["metadata"]["namespace"] = "team"
                await p.platform.apply(other_ns)
            with pytest.raises(UnprocessableEntity):
                await p.platform.apply(["not", "a", "document"])
            with pytest.raises(UnprocessableEntity):
                await p.platform.apply({"kind": "InferenceService", "metadata": {"name": "x"}})
            no_command = manifest("2")
            del no_command["spec"]["predictor"]["containers"][0]["command"]
            with pytest.raises(UnprocessableEntity, match="command"):
                await p.platform.apply(no_command)
            await asyncio.sleep(0.1)
            assert p.doc() == before
            assert list(p.revisions()) == [rev(1)]
            assert len(p.platform.supervisors()) == 1
            assert p.platform.document(NAME) == normalized(manifest())

    run(scenario())


def test_apply_creates_a_new_service(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            doc, created = await p.platform.apply(manifest("x", name="fresh", annotations={}))
            assert created
            assert doc["metadata"]["name"] == "fresh"
            assert doc["status"]["components"]["predictor"]["latestCreatedRevision"] == \
                rev(1, "fresh")
            assert p.route("fresh").traffic == ()  # nothing ready yet: no traffic, 503s
            assert not p.route("fresh").ready
            await p.until(lambda: p.traffic("fresh") == {rev(1, "fresh"): 100}, what="fresh")
            assert p.route("fresh").ready and p.route(NAME).ready
            assert p.served_by(name="fresh") == rev(1, "fresh")

    run(scenario())


def test_document_shape(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            doc = p.doc()
            assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
            assert doc["kind"] == "InferenceService"
            assert doc["metadata"]["name"] == NAME and doc["metadata"]["namespace"] == "default"
            assert doc["spec"] == normalized(manifest())["spec"]
            status = doc["status"]
            assert status["url"] == "http://svc.default.example.com"
            assert status["address"] == {"url": "http://svc.default.example.com"}
            assert [c["type"] for c in status["conditions"]] == [
                "Ready", "LatestDeploymentReady", "RoutesReady"]
            [revision] = status["modelserve"]["revisions"]
            details = revision.pop("replicaDetails")
            assert revision == {
                "name": rev(1), "component": "predictor", "percent": 100, "ready": True,
                "replicas": 1, "readyReplicas": 1, "desiredReplicas": 1, "panic": False,
                "inFlight": 0, "retired": False, "message": "",
            }
            [replica] = details
            assert replica["number"] == 1 and replica["ready"] and not replica["draining"]
            assert replica["url"] == p.route().backends[0].http_url
            [process] = replica["processes"]
            assert process["component"] == "predictor" and process["state"] == "ready"
            assert isinstance(process["pid"], int)
            # In flight is read live from the stats.
            p.table.stats.started(rev(1), replica["url"])
            assert p.revisions()[rev(1)]["inFlight"] == 1
            p.table.stats.finished(rev(1), replica["url"])

    run(scenario())


# --- replicas and the autoscaler ------------------------------------------------------------

FAST_KPA = AutoscalerDefaults(enabled=True, stable_window_s=2, tick_s=0.2, bucket_s=0.2,
                              scale_to_zero_grace_period_s=0, drain_timeout_s=5)


def test_scale_to_zero_and_wake_on_demand(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path, manifest(minReplicas=0), autoscaler=FAST_KPA) as p:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await p.until(lambda: p.revisions()[rev(1)]["replicas"] == 0, what="to zero")
            assert loop.time() - start > 1.5  # not before a stable window of idleness
            await p.until(lambda: not p.revisions()[rev(1)]["replicaDetails"], what="stopped")
            assert all(s.pid is None for s in p.platform.supervisors())
            route = p.route()
            assert route.ready  # at zero, not down: the activator holds requests
            assert [t.activate for t in route.traffic] == [True]
            choice = p.table.pick(route)
            assert choice is not None and choice.backend is None
            assert p.revisions()[rev(1)]["desiredReplicas"] == 0
            assert "scale to zero" in p.out.getvalue()

            # A held request wakes the revision at once (no waiting for a stable window).
            woke = loop.time()
            p.table.stats.started(rev(1))
            await p.until(lambda: bool(p.ready_backends(rev(1))), what="woken")
            assert loop.time() - woke < 5
            assert f"activator: request for {rev(1)} at zero" in p.out.getvalue()
            assert not p.route().traffic[0].activate  # a replica is ready: no hold needed
            # While the request is in flight it stays up (longer than a stable window).
            await asyncio.sleep(2.5)
            assert p.ready_backends(rev(1))
            p.table.stats.finished(rev(1))
            await p.until(lambda: p.revisions()[rev(1)]["replicas"] == 0, what="zero again")

    run(scenario())


def test_min_replicas_start_and_stay(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path, manifest(minReplicas=2), autoscaler=FAST_KPA) as p:
            await p.until(lambda: len(p.ready_backends(rev(1))) == 2, what="2 replicas")
            assert len(set(p.ready_backends(rev(1)))) == 2
            await asyncio.sleep(2.5)  # idle beyond a stable window: min holds
            assert len(p.ready_backends(rev(1))) == 2
            assert p.revisions()[rev(1)]["desiredReplicas"] == 2

    run(scenario())


def test_scale_up_to_max_on_concurrency_and_back_down(tmp_path: Path) -> None:
    target_one = {"autoscaling.knative.dev/target": "1"}  # per-replica target 0.7
    async def scenario() -> None:
        doc = manifest(annotations=target_one, minReplicas=1, maxReplicas=3)
        async with platform(tmp_path, doc, autoscaler=FAST_KPA) as p:
            [url] = p.ready_backends(rev(1))
            for _ in range(4):
                p.table.stats.started(rev(1), url)  # 4 in flight: ceil(4 / 0.7) = 6 > max 3
            await p.until(lambda: len(p.ready_backends(rev(1))) == 3, what="up to 3")
            assert p.revisions()[rev(1)]["desiredReplicas"] == 3
            await asyncio.sleep(0.5)
            assert len(p.revisions()[rev(1)]["replicaDetails"]) == 3  # never above max
            for _ in range(4):
                p.table.stats.finished(rev(1), url)
            await p.until(lambda: len(p.ready_backends(rev(1))) == 1, what="down to 1")
            await p.until(lambda: len(p.revisions()[rev(1)]["replicaDetails"]) == 1,
                          what="drained")
            # The newest went: the first replica is the one still serving.
            assert [d["number"] for d in p.revisions()[rev(1)]["replicaDetails"]] == [1]
            assert p.ready_backends(rev(1)) == [url]
            assert "autoscaler: " in p.out.getvalue()

    run(scenario())


def test_min_replicas_of_an_applied_revision_without_the_autoscaler(tmp_path: Path) -> None:
    """With the autoscaler off every revision keeps its initial replicas, max(1, minReplicas),
    whether it was started with the platform or applied later."""
    async def scenario() -> None:
        async with platform(tmp_path, manifest(minReplicas=2)) as p:
            await p.until(lambda: len(p.ready_backends(rev(1))) == 2, what="2 at start")
            await p.platform.apply(manifest("2", minReplicas=2))
            await p.until(lambda: p.traffic() == {rev(2): 100}, what="00002 rolled out")
            await p.until(lambda: len(p.ready_backends(rev(2))) == 2, limit=5,
                          what="2 replicas of the applied revision")

    run(scenario())


def test_patch_result_equals_a_kubectl_apply_of_the_same_document(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with platform(tmp_path) as p:
            by_patch = await p.platform.patch(NAME, MERGE_PATCH, canary_patch(25))
            applied = copy.deepcopy(manifest(canary=25))
            doc, _ = await p.platform.apply(applied)
            assert doc["spec"] == by_patch["spec"]
            assert doc["metadata"]["generation"] == by_patch["metadata"]["generation"]

    run(scenario())
