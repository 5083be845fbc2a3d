"""Revisions, canary rollouts, autoscaling and replica failure on a real `modelserve up`.

The services are the sklearn demo predictor under other names, applied with the same
manifests a cluster takes; the autoscaler's cluster-wide windows (Knative's config-autoscaler)
are shortened through `MODELSERVE_AUTOSCALER_*` so a ramp takes seconds. Load is bounded and
goes to 127.0.0.1 only. Durations are printed (cold start, time to scale), never asserted.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import Platform, iris_manifest, run_platform

REVISION = "x-modelserve-revision"
BODY = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
FAST_AUTOSCALER = {
    "MODELSERVE_AUTOSCALER_STABLE_WINDOW_S": "6",
    "MODELSERVE_AUTOSCALER_TICK_S": "0.5",
    "MODELSERVE_AUTOSCALER_SCALE_TO_ZERO_GRACE_PERIOD_S": "1",
}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    docs = {
        "canary-iris": iris_manifest(
            "canary-iris", replicas=(1, 1),
            annotations={"serving.kserve.io/enable-tag-routing": "true"},
        ),
        # Each batch waits 250 ms for company: requests stay in flight long enough for a light
        # client to build the concurrency that scales a revision.
        "scaler-iris": iris_manifest(
            "scaler-iris", replicas=(0, 3),
            args=("--max_batch_size=1000", "--max_batch_latency_us=250000"),
            annotations={"autoscaling.knative.dev/target": "2"},
        ),
        "pair-iris": iris_manifest("pair-iris", replicas=(2, 2)),
    }
    return docs


@pytest.fixture(scope="module")
def rollout_platform(
    models_root: Path, logs: Path, tmp_path_factory: pytest.TempPathFactory,
    manifests: dict[str, dict[str, Any]],
) -> Iterator[Platform]:
    folder = tmp_path_factory.mktemp("rollout-manifests")
    files = []
    for name, doc in manifests.items():
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(path)
    with run_platform(models_root, logs, files, env=FAST_AUTOSCALER) as running:
        yield running


def status(platform: Platform, name: str) -> dict[str, Any]:
    response = httpx.get(f"{platform.admin_url}/v1/services/{name}",
                         headers=platform.admin_headers, timeout=10)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def revisions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in doc["status"]["modelserve"]["revisions"]}


def traffic(doc: dict[str, Any]) -> dict[str, int]:
    [component] = doc["status"]["components"].values()
    return {t["revisionName"]: t["percent"] for t in component["traffic"]}


def wait_for(condition: Callable[[], bool], limit: float, what: str) -> float:
    """Poll `condition` until it holds (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit, f"not reached within {limit} s: {what}"
        time.sleep(0.2)
    return time.monotonic() - start


def patch(platform: Platform, name: str, body: Any, content_type: str) -> dict[str, Any]:
    response = httpx.patch(f"{platform.admin_url}/v1/services/{name}", content=json.dumps(body),
                           headers={**platform.admin_headers, "content-type": content_type},
                           timeout=10)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def split_of(client: httpx.Client, name: str, count: int) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        response = client.post(f"/v1/models/{name}:predict", json=BODY)
        assert response.status_code == 200, response.text
        seen[response.headers[REVISION]] += 1
    return seen


class Background:
    """Requests sent continuously from a thread while a test changes things; counts answers."""

    def __init__(self, url: str, name: str, connections: int = 4) -> None:
        self.url, self.name, self.connections = url, name, connections
        self.codes: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(connections)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    code = str(client.post(f"/v1/models/{self.name}:predict", json=BODY)
                               .status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                self.codes[code] += 1

    def __enter__(self) -> Background:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    @property
    def failures(self) -> int:
        return sum(n for code, n in self.codes.items() if code != "200")

    @property
    def total(self) -> int:
        return sum(self.codes.values())


def test_canary_split_rollback_and_promote_without_a_failed_request(
    rollout_platform: Platform, manifests: dict[str, dict[str, Any]]
) -> None:
    url, name = rollout_platform.url, "canary-iris"
    first = status(rollout_platform, name)
    [v1] = traffic(first)
    v2_doc = copy.deepcopy(manifests[name])
    v2_doc["spec"]["predictor"]["containers"][0]["args"].append("--max_batch_size=16")
    v2_doc["spec"]["predictor"]["canaryTrafficPercent"] = 20
    with (
        Background(url, name) as load,
        httpx.Client(base_url=url, timeout=30) as client,
        rollout_platform.admin() as admin,
    ):
        applied = admin.post("/v1/services", json=v2_doc)
        assert applied.status_code == 200, applied.text
        v2 = applied.json()["status"]["components"]["predictor"]["latestCreatedRevision"]
        assert v2 != v1 and v2.endswith("-00002")
        # Until the new revision is ready, the old one keeps every request.
        wait_for(lambda: traffic(status(rollout_platform, name)) == {v2: 20, v1: 80}, 90,
                 "the canary split")

        seen = split_of(client, name, 2000)
        assert set(seen) == {v1, v2}
        # The split is random per request: v2's count is binomial(2000, 0.2), sd 17.9. Within
        # 5 sd (6e-7 of fair runs fail; ±0.03 was 3.35 sd and failed once, 468) a misroute of
        # 20 % -> 25 % still shows.
        sd = (2000 * 0.2 * 0.8) ** 0.5
        assert abs(seen[v2] - 400) <= 5 * sd, seen

        # Tag routing: each tagged host reaches one revision.
        for tag, revision in (("latest", v2), ("prev", v1)):
            host = f"{tag}-{name}.default.example.com"
            tagged = {client.post(f"/v1/models/{name}:predict", json=BODY,
                                  headers={"host": host}).headers[REVISION] for _ in range(20)}
            assert tagged == {revision}

        rolled_back = patch(rollout_platform, name,
                            {"spec": {"predictor": {"canaryTrafficPercent": 0}}}, MERGE)
        assert traffic(rolled_back) == {v2: 0, v1: 100}
        assert split_of(client, name, 200) == {v1: 200}

        patch(rollout_platform, name, {"spec": {"predictor": {"canaryTrafficPercent": 20}}},
              MERGE)
        promoted = patch(rollout_platform, name,
                         [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}],
                         JSON_PATCH)
        assert traffic(promoted) == {v2: 100}
        component = promoted["status"]["components"]["predictor"]
        assert component["latestRolledoutRevision"] == v2
        assert component["previousRolledoutRevision"] == v1
        assert split_of(client, name, 200) == {v2: 200}
        # The revision no traffic names is drained and stopped.
        wait_for(lambda: revisions(status(rollout_platform, name))[v1]["replicas"] == 0, 30,
                 "the old revision stopped")
    assert load.total > 100
    assert load.failures == 0, load.codes
    # Patching only canaryTrafficPercent made no new revision.
    assert set(revisions(status(rollout_platform, name))) == {v1, v2}


def test_promote_without_a_canary_is_422_and_bad_patches_say_why(
    rollout_platform: Platform,
) -> None:
    url = f"{rollout_platform.admin_url}/v1/services"
    token = rollout_platform.admin_headers

    def send(method: str, path: str, content: bytes, content_type: str) -> httpx.Response:
        headers = {**token, "content-type": content_type}
        return httpx.request(method, url + path, content=content, headers=headers, timeout=10)

    remove = b'[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]'
    missing = send("PATCH", "/pair-iris", remove, JSON_PATCH)
    assert missing.status_code == 422
    assert "canaryTrafficPercent" in missing.json()["error"]
    strategic = send("PATCH", "/pair-iris", b"{}", "application/strategic-merge-patch+json")
    assert strategic.status_code == 415
    assert send("PATCH", "/nope", b"{}", MERGE).status_code == 404
    over = send("PATCH", "/pair-iris", b'{"spec":{"predictor":{"canaryTrafficPercent":101}}}',
                MERGE)
    assert over.status_code == 422
    assert "canaryTrafficPercent" in over.json()["error"]
    broken = send("POST", "", b"{not json", "application/json")
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    bad_field = send("POST", "", json.dumps({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "x"}, "spec": {"predictor": {"minReplicas": "two"}},
    }).encode(), "application/json")
    assert bad_field.status_code == 422
    assert "spec.predictor.minReplicas" in bad_field.json()["error"]
    # The data plane takes no rollout at all.
    on_data_plane = httpx.patch(f"{rollout_platform.url}/v1/services/pair-iris", content=remove,
                                headers={"content-type": JSON_PATCH}, timeout=10)
    assert on_data_plane.status_code == 404
    # Nothing of the above changed the service.
    assert len(revisions(status(rollout_platform, "pair-iris"))) == 1


async def _ramp(
    url: str, name: str, users: int, seconds: float,
    until: Callable[[], bool] = lambda: True, longest: float = 0,
) -> collections.Counter[str]:
    """`users` clients in a loop for `seconds`, and on until `until()` holds (at most
    `longest` s in all): the load must outlast a cold start, whose length depends on how
    loaded the machine is, not on the autoscaler."""
    codes: collections.Counter[str] = collections.Counter()
    start = time.monotonic()
    deadline, last = start + seconds, start + max(seconds, longest)

    def going() -> bool:
        now = time.monotonic()
        return now < deadline or (now < last and not until())

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def user() -> None:
            while going():
                response = await client.post(f"/v1/models/{name}:predict", json=BODY)
                codes[str(response.status_code)] += 1

        await asyncio.gather(*(user() for _ in range(users)))
    return codes


def test_autoscaler_scales_up_in_panic_down_to_zero_and_back_from_zero(
    rollout_platform: Platform,
) -> None:
    name = "scaler-iris"
    [revision] = traffic(status(rollout_platform, name))
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(revisions(status(rollout_platform, name))[revision])
            time.sleep(0.25)

    def scaled_in_panic() -> bool:
        # What the assertions below look for; the revision may start at zero replicas, and
        # a cold start on a loaded machine can outlast a fixed 10 s of load (the flake:
        # "the KPA never entered panic mode"), so the load goes on until it is seen.
        samples = list(seen)
        return any(s["panic"] for s in samples) and any(s["readyReplicas"] >= 2 for s in samples)

    watcher = threading.Thread(target=watch)
    start = time.monotonic()
    watcher.start()
    try:
        codes = asyncio.run(_ramp(rollout_platform.url, name, users=12, seconds=10,
                                  until=scaled_in_panic, longest=90))
    finally:
        done.set()
        watcher.join()
    assert set(codes) == {"200"}, codes
    panicked = [s for s in seen if s["panic"]]
    assert panicked, "the KPA never entered panic mode under 12 concurrent users at target 2"
    assert max(s["desiredReplicas"] for s in seen) == 3  # bounded by maxReplicas
    assert max(s["readyReplicas"] for s in seen) >= 2
    ready = [s["readyReplicas"] for s in seen][::4]
    print(f"\nscale-up: {len(panicked)} panic samples, ready replicas {ready} (every second), "
          f"{time.monotonic() - start:.1f} s")

    # No load: back to zero after a stable window idle and the grace period (minReplicas 0).
    took = wait_for(lambda: revisions(status(rollout_platform, name))[revision]["replicas"] == 0,
                    90, "scale to zero")
    doc = status(rollout_platform, name)
    assert doc["status"]["conditions"][0]["status"] == "True"  # at zero, still Ready
    print(f"scaled to zero {took:.1f} s after the load stopped")

    # A request at zero waits in the activator for a new replica, then is answered.
    began = time.monotonic()
    response = httpx.post(f"{rollout_platform.url}/v1/models/{name}:predict", json=BODY,
                          timeout=60)
    cold = time.monotonic() - began
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [0, 2]}
    assert response.headers[REVISION] == revision
    assert revisions(status(rollout_platform, name))[revision]["readyReplicas"] == 1
    print(f"cold start through the activator: {cold * 1000:.0f} ms")


def test_killing_a_replica_under_load_fails_at_most_a_tenth_of_a_percent(
    rollout_platform: Platform,
) -> None:
    name = "pair-iris"
    [revision] = traffic(status(rollout_platform, name))
    wait_for(lambda: revisions(status(rollout_platform, name))[revision]["readyReplicas"] == 2,
             90, "two ready replicas")
    details = revisions(status(rollout_platform, name))[revision]["replicaDetails"]
    victim = details[0]["processes"][0]["pid"]
    with Background(rollout_platform.url, name, connections=6) as load:
        wait_for(lambda: load.total >= 500, 60, "load running")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: load.total >= 2500, 120, "load after the kill")
    assert load.failures <= load.total * 0.001, load.codes
    # The killed replica is restarted, as a kubelet restarts a crashed container.
    wait_for(lambda: revisions(status(rollout_platform, name))[revision]["readyReplicas"] == 2,
             60, "the replica restarted")
    restarts = [p["restarts"]
                for d in revisions(status(rollout_platform, name))[revision]["replicaDetails"]
                for p in d["processes"]]
    assert sorted(restarts) == [0, 1]
    print(f"\nkilled replica pid {victim}: {load.failures} of {load.total} requests failed")
