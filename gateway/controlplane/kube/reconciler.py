"""The reconciler: InferenceServices an API server holds, served by the local platform.

As a controller-runtime informer does (the anchor: client-go's reflector, ListAndWatch): list
the InferenceServices of one namespace, then watch from the list's `resourceVersion` with
bookmarks on; every event is the desired state of one name. A watch that ends is resumed from
the last resourceVersion seen; `410 Gone` (the version was compacted away) or any error means
a fresh list after a back-off (0.5 s doubling to 10 s), and the list is diffed against what
is served, so a delete missed while the API server was away is still carried out.

Each desired state becomes the local platform's `apply` (a changed spec: a new revision; a
changed `canaryTrafficPercent`: a traffic split) or `delete`. Every CR passes the platform's
launch and storage policy: a refused spec is not run, and its status says why (Ready False,
reason `PolicyRefused` or `InvalidSpec`). The status is written through the status subresource
in the shape KServe's controller writes (`status.py`), `observedGeneration` the CR's own
generation once it is served, whenever it changes.

The watch runs in a thread (the official `kubernetes` client is synchronous) and hands events
to the event loop; the platform is only touched from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from gateway.controlplane.kube.applying import LAST_APPLIED
from gateway.controlplane.kube.crd import GROUP, PLURAL, VERSION
from gateway.controlplane.manifests import ManifestError, parse_service
from gateway.isvc_status import Condition, InferenceServiceStatus
from servers.errors import Conflict, PermissionDenied, UnprocessableEntity

__all__ = ["KubeOwnedRollouts", "Reconciler", "desired_document"]

WATCH_TIMEOUT_S = 300  # the server ends a watch after this; it is resumed at once
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STATUS_EVERY_S = 0.5
REQUEST_TIMEOUT_S = 30.0


class Served(Protocol):
    """What the reconciler needs of the local platform."""

    def document(self, name: str) -> dict[str, Any] | None: ...

    def names(self) -> list[str]: ...

    def status_document(self, name: str) -> dict[str, Any] | None: ...

    async def apply(self, data: Any, where: str = ...) -> tuple[dict[str, Any], bool]: ...

    async def delete(self, name: str) -> None: ...


def desired_document(obj: dict[str, Any]) -> dict[str, Any]:
    """What of a CR the platform runs: apiVersion, kind, spec, and metadata's name,
    namespace, labels and annotations (not kubectl's last-applied record)."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    if annotations:
        kept["annotations"] = annotations
    if meta.get("labels"):
        kept["labels"] = meta["labels"]
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept,
            "spec": obj.get("spec")}


@dataclass
class _Refusal:
    reason: str
    message: str


class KubeOwnedRollouts:
    """The control plane's rollout API while an API server owns the services: `apply`,
    `patch` and `delete` answer 409 (they would be undone by the next event; use kubectl);
    the repository extension's `load` and `unload` still scale."""

    def __init__(self, platform: Any, server: str) -> None:
        self.platform = platform
        self.server = server

    def _refuse(self) -> Conflict:
        return Conflict(f"the InferenceServices are held by the Kubernetes API at "
                        f"{self.server}: change them with kubectl (or `modelserve ... --kube`)")

    async def apply(self, data: Any, where: str = "request body") -> tuple[dict[str, Any], bool]:
        raise self._refuse()

    async def patch(self, name: str, content_type: str, body: Any) -> dict[str, Any]:
        raise self._refuse()

    async def delete(self, name: str) -> None:
        raise self._refuse()

    async def load(self, name: str) -> None:
        await self.platform.load(name)

    async def unload(self, name: str) -> None:
        await self.platform.unload(name)


class Reconciler:
    """Serves the InferenceServices of `namespace` that the API server behind `api_client`
    holds, on `platform`."""

    def __init__(self, platform: Served, api_client: Any, namespace: str, *,
                 output: TextIO | None = None) -> None:
        self.platform = platform
        self.api_client = api_client
        self.namespace = namespace
        self.output = output if output is not None else sys.stdout
        self._desired: dict[str, dict[str, Any]] = {}
        self._generation: dict[str, int] = {}  # of the CR's spec that is served or refused
        self._refused: dict[str, _Refusal] = {}
        self._written: dict[str, str] = {}
        self._failing: dict[str, str] = {}
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()
        self.relists = 0

    # --- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching; returns once the first list has been applied."""
        loop = asyncio.get_running_loop()

        def put(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: `up` is stopping
                loop.call_soon_threadsafe(self._queue.put_nowait, item)

        self._thread = threading.Thread(target=self._watch, args=(put,), name="isvc watch",
                                        daemon=True)
        self._thread.start()
        self._tasks = [asyncio.create_task(self._work(), name="reconcile"),
                       asyncio.create_task(self._write_statuses(), name="isvc status")]
        await self._synced.wait()

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The thread notices the stop flag when its watch request returns (<= 1 s).

    # --- the watch (a thread) --------------------------------------------------------------

    def _watch(self, put: Callable[[tuple[str, Any]], None]) -> None:
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        api: Any = client.CustomObjectsApi(self.api_client)
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = api.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL,
                        _request_timeout=REQUEST_TIMEOUT_S)
                    version = listed["metadata"]["resourceVersion"]
                    put(("list", listed.get("items", [])))
                    failures = 0
                stream = watch.Watch()
                for event in stream.stream(
                    api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                    resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=1 if self._stop.is_set() else WATCH_TIMEOUT_S,
                    _request_timeout=WATCH_TIMEOUT_S + 30,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        return
                    obj = event["object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        put((event["type"], obj))
                failures = 0
            except ApiException as exc:
                if self._stop.is_set():
                    return
                if exc.status != 410:
                    put(("log", f"watch: {exc.status} {exc.reason}: re-listing"))
                version = None  # 410 Gone: our version was compacted away
                failures += 1
            except Exception as exc:  # the API server is away: keep trying
                if self._stop.is_set():
                    return
                put(("log", f"watch: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}"))
                version = None
                failures += 1
            if failures:
                self._stop.wait(BACKOFF_S[min(failures - 1, len(BACKOFF_S) - 1)])

    # --- the work (the event loop) ---------------------------------------------------------

    async def _work(self) -> None:
        while True:
            kind, payload = await self._queue.get()
            try:
                if kind == "log":
                    self._write(payload)
                elif kind == "list":
                    await self._resync(payload)
                elif kind == "DELETED":
                    await self._forget(payload["metadata"]["name"])
                else:
                    name = payload["metadata"]["name"]
                    self._desired[name] = payload
                    await self._reconcile(name)
            except Exception as exc:  # one bad event must not stop the controller
                self._write(f"reconcile: {type(exc).__name__}: {exc}")

    async def _resync(self, items: list[dict[str, Any]]) -> None:
        self.relists += 1
        listed = {item["metadata"]["name"]: item for item in items}
        for name in [n for n in self.platform.names() if n not in listed]:
            await self._forget(name)
        self._desired = listed
        for name in listed:
            await self._reconcile(name)
        self._synced.set()

    async def _forget(self, name: str) -> None:
        self._desired.pop(name, None)
        self._refused.pop(name, None)
        self._generation.pop(name, None)
        self._written.pop(name, None)
        if self.platform.document(name) is not None:
            await self.platform.delete(name)
            self._write(f"InferenceService {self.namespace}/{name} deleted: stopped")

    async def _reconcile(self, name: str) -> None:
        obj = self._desired[name]
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        doc = desired_document(obj)
        where = f"InferenceService {self.namespace}/{name}"
        try:
            wanted = parse_service(doc, where).model_dump(mode="json", exclude_none=True)
        except ManifestError as exc:
            self._refuse(name, generation, "InvalidSpec", str(exc))
            return
        if self.platform.document(name) == wanted:
            self._served(name, generation)
            return
        try:
            _, created = await self.platform.apply(doc, where=where)
        except PermissionDenied as exc:
            self._refuse(name, generation, "PolicyRefused", str(exc))
            return
        except UnprocessableEntity as exc:
            self._refuse(name, generation, "InvalidSpec", str(exc))
            return
        self._write(f"{where} {'created' if created else 'configured'} "
                    f"(generation {generation})")
        self._served(name, generation)

    def _served(self, name: str, generation: int) -> None:
        self._refused.pop(name, None)
        self._generation[name] = generation

    def _refuse(self, name: str, generation: int, reason: str, message: str) -> None:
        if self._refused.get(name) != _Refusal(reason, message):
            self._write(f"InferenceService {self.namespace}/{name} refused ({reason}): "
                        f"{message.splitlines()[0]}")
        self._refused[name] = _Refusal(reason, message)
        self._generation[name] = generation

    # --- status ----------------------------------------------------------------------------

    def status(self, name: str) -> InferenceServiceStatus:
        """The status the reconciler writes for `name` now: the platform's, with a refusal as
        the Ready condition, and the CR's generation once it is served or refused."""
        served = self.platform.status_document(name)
        status = InferenceServiceStatus.model_validate((served or {}).get("status") or {})
        refusal = self._refused.get(name)
        if refusal is not None:
            status = status.with_condition(
                Condition.of("Ready", False, refusal.reason, refusal.message))
        return status.model_copy(update={"observedGeneration": self._generation.get(name)})

    async def _write_statuses(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api: Any = client.CustomObjectsApi(self.api_client)
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            for name in list(self._desired):
                status = self.status(name).document()
                text = json.dumps(status, sort_keys=True)
                if self._written.get(name) == text:
                    continue
                patch = [{"op": "add", "path": "/status", "value": status}]
                try:
                    await asyncio.to_thread(
                        api.patch_namespaced_custom_object_status, GROUP, VERSION,
                        self.namespace, PLURAL, name, patch,
                        _content_type="application/json-patch+json",
                        _request_timeout=REQUEST_TIMEOUT_S)
                except ApiException as exc:
                    if exc.status != 404:  # 404: deleted meanwhile, the watch will say
                        self._status_failed(name, f"{exc.status} {exc.reason}")
                    continue
                except Exception as exc:  # the API server is away: try again next round
                    self._status_failed(name, type(exc).__name__)
                    continue
                self._written[name] = text
                self._failing.pop(name, None)

    def _status_failed(self, name: str, why: str) -> None:
        # Said once per cause, not every round while the API server is away.
        if self._failing.get(name) != why:
            self._failing[name] = why
            self._write(f"status of {name} not written ({why}): retrying")

    def _write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.output.write(f"[reconciler] {line}\n")
            self.output.flush()
