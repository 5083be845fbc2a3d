"""Supervised component processes: readiness, restarts after kill -9, clean stops, failures.

The components here are tiny real processes (`python -c` with http.server answering
/v2/health/ready), launched through the same manifests, plans and supervisors as the real ones.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.controlplane.components import plan_service
from gateway.controlplane.manifests import InferenceService
from gateway.controlplane.platform import LocalPlatform, ModelDirMissing, StartError
from gateway.controlplane.policy import LaunchPolicy
from gateway.controlplane.supervisor import StartupError, Supervisor
from gateway.routing import RoutingTable, ServiceRoute

FAKE = textwrap.dedent("""
    import argparse, http.server, signal, subprocess, sys
    p = argparse.ArgumentParser()
    for flag in ("--http_port", "--grpc_port"):
        p.add_argument(flag, type=int)
    p.add_argument("--fail")
    p.add_argument("--never_ready", action="store_true")
    p.add_argument("--child", action="store_true")
    p.add_argument("--ignore_term", action="store_true")
    a, rest = p.parse_known_args()
    print("fake component args", rest, flush=True)
    if a.fail:
        print("fatal:", a.fail, flush=True)
        sys.exit(3)
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.child:  # a worker, as kserve forks them: must die with the group
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/v2/health/ready" and not a.never_ready
            self.send_response(200 if ok else 503)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", a.http_port), H).serve_forever()
""")

FAST: dict[str, Any] = {
    "backoff_initial": 0.1, "backoff_max": 0.4, "stop_grace": 5.0, "ready_timeout": 30.0,
}


def custom(root: Path) -> LaunchPolicy:
    """The launch policy that lets the fake components (`python -c`) run, over `root`."""
    return LaunchPolicy(models_roots=(root,), allow_custom_containers=True)


def fake_service(name: str = "fake", args: tuple[str, ...] = (),
                 transformer_args: tuple[str, ...] | None = None,
                 env: dict[str, str] | None = None) -> InferenceService:
    def component(extra: tuple[str, ...]) -> dict[str, Any]:
        return {"containers": [{
            "name": "kserve-container", "command": ["python", "-c", FAKE],
            "args": ["--http_port=8080", *extra],
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        }]}

    spec = {"predictor": component(args)}
    if transformer_args is not None:
        spec["transformer"] = component(transformer_args)
    return InferenceService.model_validate({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name}, "spec": spec})


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is still in the process group."""
    return bool(_group_members(pgid))


async def until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait for `condition` (bounded, so a broken build fails instead of hanging)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_start_ready_then_stop_leaves_no_process_in_the_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        [plan] = plan_service(fake_service(args=("--child",)), tmp_path, policy=custom(tmp_path))
        out = io.StringIO()
        supervisor = Supervisor(plan, output=out, **FAST)
        await supervisor.start()
        assert supervisor.ready
        pgid = supervisor.pid
        assert pgid is not None and os.getpgid(pgid) == pgid  # its own process group
        await until(lambda: len(_group_members(pgid)) >= 2)  # the worker too
        await supervisor.stop()
        assert not group_alive(pgid)
        assert supervisor.pid is None and supervisor.state.value == "stopped"
        assert "[fake-predictor] fake component args" in out.getvalue()

    asyncio.run(scenario())


def _group_members(pgid: int) -> list[int]:
    """Live members of a process group (zombies excluded: they are dead, awaiting a reaper)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def test_kill_9_marks_route_not_ready_then_ready_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        table = RoutingTable()
        history: list[ServiceRoute] = []
        platform = LocalPlatform([], tmp_path, table, output=io.StringIO(), policy=custom(tmp_path),
                                 services=[fake_service("svc")], **FAST)
        await platform.start()
        route = table.get("svc")
        assert route is not None and route.ready
        [backend] = route.backends
        assert backend.revision == "svc-predictor-00001"
        [supervisor] = platform.supervisors()
        assert backend.http_url == supervisor.plan.http_url
        first_pid = supervisor.pid
        assert first_pid is not None

        original = supervisor.on_change

        def record(s: Supervisor) -> None:
            original(s)
            history.append(table.get("svc"))  # type: ignore[arg-type]

        supervisor.on_change = record
        os.kill(first_pid, signal.SIGKILL)
        await until(lambda: any(r.ready for r in history))
        down = [r for r in history if not r.ready]
        assert down, "the route never went not-ready"
        assert "predictor exited with code -9, restarting in" in down[0].message
        assert supervisor.pid not in (None, first_pid)
        assert supervisor.restarts == 1
        assert table.get("svc").ready  # type: ignore[union-attr]
        [status] = platform.status()
        assert status.ready and status.components[0].restarts == 1
        await platform.stop()
        assert not group_alive(first_pid)
        assert supervisor.pid is None

    asyncio.run(scenario())


def test_transformer_service_routes_to_transformer_and_follows_predictor(
    tmp_path: Path
) -> None:
    async def scenario() -> None:
        table = RoutingTable()
        isvc = fake_service("chain", transformer_args=("--predictor_protocol=grpc-v2",))
        platform = LocalPlatform([], tmp_path, table, output=io.StringIO(), policy=custom(tmp_path),
                                 services=[isvc], **FAST)
        await platform.start()
        predictor, transformer = platform.supervisors()
        assert f"--predictor_host={predictor.plan.grpc_target}" in transformer.plan.argv
        route = table.get("chain")
        assert route is not None and route.ready
        assert route.backends[0].revision == "chain-transformer-00001"
        assert route.backends[0].http_url == transformer.plan.http_url
        assert route.backends[0].grpc_target == transformer.plan.grpc_target

        pid = predictor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The transformer stays up, but the service is not ready without its predictor.
        await until(lambda: not table.get("chain").ready)  # type: ignore[union-attr]
        assert "predictor exited" in table.get("chain").message  # type: ignore[union-attr]
        await until(lambda: table.get("chain").ready)  # type: ignore[union-attr]
        await platform.stop()

    asyncio.run(scenario())


def test_startup_failure_reports_the_components_output(tmp_path: Path) -> None:
    async def scenario() -> None:
        table = RoutingTable()
        platform = LocalPlatform([], tmp_path, table, output=io.StringIO(), policy=custom(tmp_path),
                                 services=[fake_service("bad", args=("--fail=no model here",))],
                                 **FAST)
        with pytest.raises(StartError) as caught:
            await platform.start()
        message = str(caught.value)
        assert "bad-predictor exited with code 3" in message
        assert "fatal: no model here" in message
        assert not table.get("bad").ready  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_never_ready_fails_after_the_deadline_and_is_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        [plan] = plan_service(fake_service(args=("--never_ready",)), tmp_path,
                              policy=custom(tmp_path))
        supervisor = Supervisor(plan, output=io.StringIO(), **{**FAST, "ready_timeout": 1.0})
        with pytest.raises(StartupError, match="not ready at .*/v2/health/ready") as caught:
            await supervisor.start()
        assert "fake component args" in str(caught.value)
        assert supervisor.pid is None

    asyncio.run(scenario())


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    async def scenario() -> None:
        [plan] = plan_service(fake_service(args=("--ignore_term",)), tmp_path,
                              policy=custom(tmp_path))
        supervisor = Supervisor(plan, output=io.StringIO(), **{**FAST, "stop_grace": 0.5})
        await supervisor.start()
        pid = supervisor.pid
        assert pid is not None
        await supervisor.stop()
        assert not group_alive(pid)

    asyncio.run(scenario())


def test_missing_model_dir_is_named_before_anything_starts(tmp_path: Path) -> None:
    isvc = fake_service(args=("--model_dir=/mnt/models",),
                        env={"STORAGE_URI": "pvc://claim/absent"})
    platform = LocalPlatform([], tmp_path, RoutingTable(), services=[isvc],
                             policy=custom(tmp_path))
    with pytest.raises(ModelDirMissing, match="absent.*modelserve build-models"):
        asyncio.run(platform.start())


PARENT = textwrap.dedent("""
    import asyncio, io, sys
    from pathlib import Path
    from gateway.controlplane.components import plan_service
    from gateway.controlplane.supervisor import Supervisor
    from tests.gateway.test_supervisor import custom, fake_service

    async def main():
        root = Path(sys.argv[1])
        [plan] = plan_service(fake_service(), root, policy=custom(root))
        supervisor = Supervisor(plan, output=io.StringIO())
        await supervisor.start()
        print(supervisor.pid, flush=True)
        await asyncio.sleep(300)

    asyncio.run(main())
""")


def test_components_die_when_the_platform_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)],
                              stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait()

        async def gone() -> None:
            await until(lambda: not group_alive(child))

        asyncio.run(gone())
    finally:
        parent.kill()
        parent.wait()
