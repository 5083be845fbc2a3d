"""`modelserve up`: the local platform behind its two doors, in one process and one event loop.

- The **data plane** (`--host`, `--port` 8080 REST, `--grpc-port` 8081): inference only,
  under the inference API keys (`MODELSERVE_GATEWAY_API_KEYS`, none: open).
- The **control plane's admin door** (`--admin-host` 127.0.0.1, `--admin-port` 8082): the
  rollout API and the dashboard, under admin tokens (`MODELSERVE_ADMIN_TOKENS`; none: one is
  generated, written to a file only the user can read, and printed in the dashboard's URL).
  The dashboard shows SLO verdicts from `--slo FILE` against the reports in `--reports DIR`
  and example requests from `--payloads DIR` (default: the demo services' SLOs and payloads,
  shipped with modelserve, and `./loadtest-reports`, where `modelserve loadtest` writes).
- Every component the platform starts listens on 127.0.0.1 and passes the launch and storage
  policy (`--models-dir` roots, `--allow-custom-containers`, `--allowed-commands`,
  `--allow-remote-storage`, `--trust-remote-pickles`), the manifests given here included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop
from pydantic import ValidationError

from gateway.cli.kube import KubeError
from gateway.cli.up_kube import add_kube_flags
from gateway.controlplane.components import PlanError
from gateway.controlplane.manifests import ManifestError
from gateway.controlplane.platform import (
    AutoscalerDefaults,
    LocalPlatform,
    ModelDirMissing,
    StartError,
)
from gateway.controlplane.policy import LaunchPolicy, PolicyRefused, read_allowed_commands
from gateway.routing import RoutingTable
from gateway.settings import AdminSettings, DashboardSettings, GatewaySettings
from gateway.slo import SLOError, load_slo_file
from servers.kserve_argv import argv_hidden

if TYPE_CHECKING:
    from gateway.controlplane.api.app import Rollouts

__all__ = ["DEFAULT_MANIFESTS", "add_up_parser", "cmd_up"]

DEFAULT_MANIFESTS = Path("inferenceservices")
STOP_GRACE_S = 5.0


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1


def _check_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _print_services(
    platform: LocalPlatform, host: str, port: int, grpc_port: int, dashboard: str, token_at: str
) -> None:
    base = _url(host, port)
    statuses = platform.status()
    width = max((len(s.name) for s in statuses), default=0)
    for status in statuses:
        print(
            f"{status.name:<{width}}  {base}/v1/models/{status.name}:predict  "
            f"(Host: {status.host})",
            flush=True,
        )
        print(
            f"{'':<{width}}  {base}/v2/models/{status.name}/infer  grpc {host}:{grpc_port}",
            flush=True,
        )
    print(f"dashboard: {dashboard}", flush=True)
    print(f"control plane: {token_at}", flush=True)
    print(
        f"modelserve ready: {len(statuses)} service(s), REST {base}, gRPC {host}:{grpc_port}"
        " (Ctrl-C to stop)",
        flush=True,
    )


class _Doors:
    """What `up` needs to open both doors: settings, sockets and the admin token."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: GatewaySettings,
        admin: AdminSettings,
        dashboard: DashboardSettings,
        sock: socket.socket,
        admin_sock: socket.socket,
    ) -> None:
        self.args = args
        self.settings = settings
        self.admin = admin
        self.dashboard = dashboard
        self.sock = sock
        self.admin_sock = admin_sock


async def _serve(
    platform: LocalPlatform,
    table: RoutingTable,
    doors: _Doors,
    stop: asyncio.Event,
    rollouts: Rollouts | None = None,
) -> int:
    # Imported here: the servers are only needed by `up`.
    with argv_hidden():
        from gateway.controlplane.api.app import create_admin_app
        from gateway.controlplane.api.server import AdminServer
        from gateway.controlplane.api.tokens import (
            AdminTokens,
            generate_token,
            remove_token_file,
            token_file,
            write_token_file,
        )
        from gateway.dataplane.server import GatewayServer
        from gateway.frontdoor import FrontDoor, FrontDoorLimits
        from servers.model_server import freeze_startup_heap

    args, settings = doors.args, doors.settings
    gateway = GatewayServer(table, settings, args.host, grpc_port=args.grpc_port)
    configured = doors.admin.token_values()
    tokens = configured or (generate_token(),)
    admin_port = doors.admin_sock.getsockname()[1]
    admin_url = _url(args.admin_host, admin_port)
    where = (
        "the tokens are MODELSERVE_ADMIN_TOKENS / _FILE"
        if configured
        else f"`modelserve up` wrote it to {token_file(admin_port)}"
    )
    keys = settings.api_key_values()
    inference_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    admin: AdminServer | None = None
    written: Path | None = None
    try:
        await gateway.start(doors.sock)  # raises RLIMIT_NOFILE for both doors
        # The admin door's own front door: loopback, a few operators and one dashboard.
        door = FrontDoor(FrontDoorLimits(max_connections=256, max_connections_per_client=128))
        admin = AdminServer(
            create_admin_app(
                table,
                gateway.metrics,
                AdminTokens(tokens, where),
                doors.admin,
                rollouts=rollouts if rollouts is not None else platform,
                dashboard=doors.dashboard,
                inference_url=_url(inference_host, gateway.http_port),
                inference_key=keys[0] if keys else None,
            ),
            args.admin_host,
            admin_port,
            **door.uvicorn_config_kwargs(),
        )
        await admin.start(doors.admin_sock)
        if configured:
            dashboard = f"{admin_url}/ui (log in with an admin token)"
            token_at = f"{admin_url} (admin tokens from MODELSERVE_ADMIN_TOKENS)"
        else:
            written = write_token_file(admin_port, admin_url, tokens[0])
            dashboard = f"{admin_url}/ui#token={tokens[0]}"
            token_at = f"{admin_url} (admin token in {written}, found there by the CLI)"
        freeze_startup_heap()  # full GC pauses over the start-up heap stall every request
        _print_services(
            platform, args.host, gateway.http_port, gateway.grpc_port or 0, dashboard, token_at
        )
        await stop.wait()
        return 0
    finally:
        if admin is not None:
            await admin.stop(STOP_GRACE_S)
        await gateway.stop(STOP_GRACE_S)
        if written is not None:
            remove_token_file(written)


async def _up(
    args: argparse.Namespace,
    doors: _Doors,
    autoscaler: AutoscalerDefaults,
    policy: LaunchPolicy,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    table = RoutingTable()
    manifests = args.files or [DEFAULT_MANIFESTS]
    kube_mode = args.kube_local or args.kube
    platform = LocalPlatform(
        manifests,
        policy.models_roots[0],
        table,
        autoscaler=autoscaler,
        policy=policy,
        # With an API server the services come from it, through the reconciler.
        services=[] if kube_mode else None,
        platform_env={
            "MODELSERVE_BIND_ADDRESS": "127.0.0.1",
            "MODELSERVE_GRPC_MAX_MESSAGE_BYTES": str(doors.settings.grpc_max_message_bytes),
        },
    )
    try:
        starting = asyncio.create_task(platform.start(), name="platform start")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():  # a signal while components start: stop them, no error
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        starting.result()
        if not kube_mode:
            return await _serve(platform, table, doors, stop)
        return await _serve_kube(args, manifests, platform, table, doors, stop)
    finally:
        print("modelserve: stopping", flush=True)
        await platform.stop()


async def _serve_kube(
    args: argparse.Namespace,
    manifests: list[Path],
    platform: LocalPlatform,
    table: RoutingTable,
    doors: _Doors,
    stop: asyncio.Event,
) -> int:
    """Serve what an API server holds: start or connect to it, then reconcile from it."""
    with argv_hidden():
        from gateway.cli.up_kube import open_kube_source
        from gateway.controlplane.kube.reconciler import KubeOwnedRollouts, Reconciler
    source = await open_kube_source(args, manifests)
    reconciler = Reconciler(platform, source.api_client, source.namespace)
    try:
        await reconciler.start()
        return await _serve(platform, table, doors, stop,
                            rollouts=KubeOwnedRollouts(platform, source.server))
    finally:
        await reconciler.stop()
        await platform.stop()  # the components first, then the API server
        await source.close()


def _policy(args: argparse.Namespace) -> LaunchPolicy:
    roots = args.models_dir or [Path(os.environ.get("MODELSERVE_MODELS_DIR", "models"))]
    allowed = read_allowed_commands(args.allowed_commands) if args.allowed_commands else ()
    return LaunchPolicy(
        models_roots=tuple(roots),
        allow_custom_containers=args.allow_custom_containers,
        allowed_commands=allowed,
        allow_remote_storage=args.allow_remote_storage,
        trust_remote_pickles=args.trust_remote_pickles,
        allowed_logger_hosts=tuple(host.lower() for host in args.allow_logger_host),
    )


def _dashboard(args: argparse.Namespace) -> DashboardSettings:
    """MODELSERVE_DASHBOARD_* with `--slo`, `--payloads` and `--reports` over them; the files
    the user names on the command line must be there (an SLO file, valid too)."""
    given = {"slo_file": args.slo, "payloads_dir": args.payloads, "reports_dir": args.reports}
    dashboard = DashboardSettings(**{k: v for k, v in given.items() if v is not None})
    if args.slo is not None:
        load_slo_file(args.slo)
    if args.payloads is not None and not args.payloads.is_dir():
        raise SLOError(f"--payloads {args.payloads}: not a directory")
    return dashboard


def _bind(host: str, port: int, flag: str) -> socket.socket:
    with argv_hidden():
        from gateway.listener import bind_socket
    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror}") from exc


def cmd_up(args: argparse.Namespace) -> int:
    """`modelserve up`: 0 after Ctrl-C / SIGTERM, 1 when it could not start."""
    try:
        # Before any component starts: a bad key file, token or limit stops `up` at once.
        settings = GatewaySettings()
    except ValidationError as exc:
        return _error(f"gateway settings (MODELSERVE_GATEWAY_*): {exc}")
    try:
        admin = AdminSettings()
    except ValidationError as exc:
        return _error(f"admin settings (MODELSERVE_ADMIN_*): {exc}")
    try:
        autoscaler = AutoscalerDefaults()
    except ValidationError as exc:
        return _error(f"autoscaler settings (MODELSERVE_AUTOSCALER_*): {exc}")
    try:
        dashboard = _dashboard(args)
    except ValidationError as exc:
        return _error(f"dashboard settings (MODELSERVE_DASHBOARD_*): {exc}")
    except SLOError as exc:
        return _error(str(exc))
    try:
        policy = _policy(args)
    except (ValueError, ValidationError) as exc:
        return _error(str(exc))
    with argv_hidden():
        from gateway.dataplane.tracing import GATEWAY_SERVICE_NAME
        from servers.telemetry import TelemetryError, configure_tracing, shutdown_tracing
    try:
        configure_tracing(GATEWAY_SERVICE_NAME)  # off unless OTEL_EXPORTER_OTLP_* ask
    except TelemetryError as exc:
        return _error(str(exc))
    sockets: list[socket.socket] = []
    try:
        sockets.append(_bind(args.host, args.port, "--port"))
        sockets.append(_bind(args.admin_host, args.admin_port, "--admin-port"))
        try:
            _check_free(args.host, args.grpc_port)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {args.host}:{args.grpc_port} (--grpc-port): {exc.strerror}"
            ) from exc
        doors = _Doors(args, settings, admin, dashboard, *sockets)
        # uvloop (a uvicorn[standard] dependency): 10-25 % less gateway CPU per request
        # measured once the proxy itself was lean (py-spy; README "Benchmark").
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_up(args, doors, autoscaler, policy))
    except (ManifestError, PlanError, PolicyRefused, ModelDirMissing, StartError,
            OSError, TimeoutError, ValueError, KubeError) as exc:
        return _error(str(exc))
    finally:
        for sock in sockets:
            sock.close()
        shutdown_tracing()  # the gateway's last spans go out before `up` exits


def add_up_parser(commands: argparse._SubParsersAction) -> None:
    """The `up` subcommand and its flags."""
    up = commands.add_parser("up", help="run InferenceServices locally behind the gateway")
    up.add_argument(
        "files",
        nargs="*",
        type=Path,
        help=f"manifest files or directories (default: {DEFAULT_MANIFESTS}/)",
    )
    up.add_argument("--host", default="127.0.0.1", help="the data plane's address")
    up.add_argument("--port", type=int, default=8080, help="gateway REST port (0: any free)")
    up.add_argument("--grpc-port", type=int, default=8081, help="gateway gRPC port (0: any free)")
    up.add_argument(
        "--admin-host",
        default="127.0.0.1",
        help="the control plane's address (rollout API, dashboard); keep it on loopback",
    )
    up.add_argument(
        "--admin-port", type=int, default=8082, help="the control plane's port (0: any free)"
    )
    up.add_argument(
        "--models-dir",
        type=Path,
        action="append",
        default=None,
        help="a models root (repeatable): pvc://<claim>/<path> is read from the first, local "
        "paths and file:// must be inside one (default: $MODELSERVE_MODELS_DIR or models)",
    )
    up.add_argument(
        "--allow-custom-containers",
        action="store_true",
        help="let specs run any command, not only the shipped runtimes and entry points",
    )
    up.add_argument(
        "--allowed-commands",
        type=Path,
        default=None,
        metavar="FILE",
        help="allow the commands listed in FILE (one per line, shell words, a prefix match)",
    )
    up.add_argument(
        "--allow-remote-storage",
        action="store_true",
        help="let specs download models from http(s), s3, gs, ... storage URIs",
    )
    up.add_argument(
        "--trust-remote-pickles",
        action="store_true",
        help="let components load pickle formats (.joblib, .pkl) from remote storage",
    )
    up.add_argument(
        "--allow-logger-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let payload loggers send events to HOST (repeatable; loopback is always allowed)",
    )
    _add_dashboard_flags(up)
    add_kube_flags(up)
    up.set_defaults(func=cmd_up)


def _add_dashboard_flags(up: argparse.ArgumentParser) -> None:
    dashboard = up.add_argument_group("dashboard (default: $MODELSERVE_DASHBOARD_*, else the demo "
                                      "services' SLOs and payloads and ./loadtest-reports)")
    dashboard.add_argument(
        "--slo", type=Path, default=None, metavar="FILE", help="the SLO file the verdicts use"
    )
    dashboard.add_argument(
        "--payloads",
        type=Path,
        default=None,
        metavar="DIR",
        help="example requests, <NAME>.<v1|v2>.json",
    )
    dashboard.add_argument(
        "--reports",
        type=Path,
        default=None,
        metavar="DIR",
        help="where `modelserve loadtest` wrote its reports (<NAME>_stats.csv)",
    )
