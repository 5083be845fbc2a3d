"""`modelserve`: run InferenceServices locally, build the demo models, send predictions, validate,
roll out canaries on a cluster.

Arguments are parsed in `main()` only. `predict`, `loadtest`, `apply` and, without `--kube`,
`canary`, `promote`, `rollback` and `status` talk to a running platform at `--url` (default
`$MODELSERVE_URL` or http://127.0.0.1:8080); with `--kube` the last four go through the
Kubernetes API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import uvloop
from pydantic import ValidationError

from gateway.controlplane.components import PlanError
from gateway.controlplane.manifests import ManifestError
from gateway.controlplane.platform import (
    AutoscalerDefaults,
    LocalPlatform,
    ModelDirMissing,
    StartError,
)
from gateway.routing import RoutingTable
from gateway.settings import GatewaySettings
from servers.kserve_argv import argv_hidden

__all__ = ["main"]

DEFAULT_MANIFESTS = Path("inferenceservices")
STOP_GRACE_S = 5.0


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1


# --- up -----------------------------------------------------------------------------------


def _check_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))


def _print_services(platform: LocalPlatform, host: str, port: int, grpc_port: int) -> None:
    base = f"http://{host}:{port}"
    statuses = platform.status()
    width = max(len(s.name) for s in statuses)
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
    print(f"dashboard: {base}/ui", flush=True)
    print(
        f"modelserve ready: {len(statuses)} service(s), REST {base}, gRPC {host}:{grpc_port}"
        " (Ctrl-C to stop)",
        flush=True,
    )


async def _serve_gateway(
    platform: LocalPlatform,
    table: RoutingTable,
    sock: socket.socket,
    args: argparse.Namespace,
    settings: GatewaySettings,
    stop: asyncio.Event,
) -> int:
    # Imported here: the data plane is only needed by `up`.
    with argv_hidden():
        from gateway.dataplane.server import GatewayServer
        from servers.model_server import freeze_startup_heap

    gateway = GatewayServer(
        table, settings, args.host, grpc_port=args.grpc_port, rollouts=platform
    )
    try:
        await gateway.start(sock)
        freeze_startup_heap()  # full GC pauses over the start-up heap stall every request
        _print_services(platform, args.host, gateway.http_port, gateway.grpc_port or 0)
        await stop.wait()
        return 0
    finally:
        await gateway.stop(STOP_GRACE_S)


async def _up(
    args: argparse.Namespace,
    settings: GatewaySettings,
    autoscaler: AutoscalerDefaults,
    sock: socket.socket,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    table = RoutingTable()
    platform = LocalPlatform(
        args.files or [DEFAULT_MANIFESTS], args.models_dir, table, autoscaler=autoscaler
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
        return await _serve_gateway(platform, table, sock, args, settings, stop)
    finally:
        print("modelserve: stopping", flush=True)
        await platform.stop()


def cmd_up(args: argparse.Namespace) -> int:
    if args.models_dir is None:
        args.models_dir = Path(os.environ.get("MODELSERVE_MODELS_DIR", "models"))
    try:
        # Before any component starts: a bad key file or limit stops `up` at once.
        settings = GatewaySettings()
    except ValidationError as exc:
        return _error(f"gateway settings (MODELSERVE_GATEWAY_*): {exc}")
    try:
        autoscaler = AutoscalerDefaults()
    except ValidationError as exc:
        return _error(f"autoscaler settings (MODELSERVE_AUTOSCALER_*): {exc}")
    try:
        with argv_hidden():
            from gateway.dataplane.server import bind_socket
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        return _error(f"cannot listen on {args.host}:{args.port} (--port): {exc.strerror}")
    try:
        _check_free(args.host, args.grpc_port)
    except OSError as exc:
        sock.close()
        return _error(
            f"cannot listen on {args.host}:{args.grpc_port} (--grpc-port): {exc.strerror}"
        )
    try:
        # uvloop (a uvicorn[standard] dependency): 10-25 % less gateway CPU per request
        # measured once the proxy itself was lean (py-spy; README "Benchmark").
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_up(args, settings, autoscaler, sock))
    except (ManifestError, PlanError, ModelDirMissing, StartError, OSError) as exc:
        return _error(str(exc))
    finally:
        sock.close()


# --- build-models ---------------------------------------------------------------------------


def cmd_build_models(args: argparse.Namespace) -> int:
    with argv_hidden():
        from servers.demo_models import build_all

    args.out.mkdir(parents=True, exist_ok=True)
    for path in build_all(args.out):
        print(f"wrote {path}")
    return 0


# --- predict --------------------------------------------------------------------------------


def _read_data(value: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise ValueError(f"--data {value}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--data is not JSON: {exc}") from exc


def _predict_http(args: argparse.Namespace, body: Any) -> int:
    base = args.url.rstrip("/")
    path = (
        f"/v1/models/{args.name}:predict"
        if args.protocol == "v1"
        else f"/v2/models/{args.name}/infer"
    )
    try:
        headers = {"x-api-key": args.api_key} if args.api_key else {}
        response = httpx.post(base + path, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        return _error(f"{base}{path}: {exc}")
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text
    if response.status_code >= 400:
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
        return _error(f"{response.status_code}: {message}")
    print(json.dumps(payload, indent=2))
    return 0


def _predict_grpc(args: argparse.Namespace, body: Any) -> int:
    import grpc

    with argv_hidden():
        from gateway.predict_client import grpc_infer
        from servers.errors import InvalidInput

    try:
        doc = grpc_infer(args.grpc_url, args.name, body, args.timeout, args.api_key)
    except InvalidInput as exc:
        return _error(f"--protocol grpc: {exc}")
    except grpc.RpcError as exc:
        return _error(f"{exc.code().name}: {exc.details()}")
    print(json.dumps(doc, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        body = _read_data(args.data)
        if args.protocol == "grpc":
            return _predict_grpc(args, body)
    except ValueError as exc:
        return _error(str(exc))
    return _predict_http(args, body)


# --- validate -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from gateway.controlplane.schema import load_crd_schema, validate_paths

    try:
        schema = load_crd_schema(args.crd) if args.crd else None
        problems, warnings = validate_paths(args.paths or [DEFAULT_MANIFESTS], schema, args.strict)
    except (ValueError, ManifestError) as exc:
        return _error(str(exc))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("ok: no problems found")
    return 0


# --- loadtest -------------------------------------------------------------------------------


def cmd_loadtest(args: argparse.Namespace) -> int:
    from gateway.loadtest import run_loadtest

    return run_loadtest(args)


def _add_loadtest(commands: Any) -> None:
    from gateway.loadtest import LOADTESTS, MAX_DURATION_S, parse_duration, parse_protocols

    loadtest = commands.add_parser(
        "loadtest", help="headless Locust against a running platform, checked against SLOs"
    )
    loadtest.add_argument("name", help="the InferenceService to load")
    loadtest.add_argument("--slo", type=Path, default=LOADTESTS / "slo.yaml", help="SLO file")
    loadtest.add_argument("--users", type=_positive_int, default=8, help="concurrent users")
    loadtest.add_argument(
        "--spawn-rate",
        type=_positive_float,
        default=None,
        help="users started per second (default: all at once)",
    )
    loadtest.add_argument(
        "--duration",
        type=parse_duration,
        default=parse_duration("30s"),
        help=f"run time, e.g. 30s, 2m (at most {MAX_DURATION_S // 60}m)",
    )
    loadtest.add_argument(
        "--shape",
        choices=("step", "ramp"),
        default=None,
        help="step: users in four steps; ramp: linear to --users (default: all at once)",
    )
    loadtest.add_argument(
        "--protocols",
        type=parse_protocols,
        default=None,
        help="comma-separated v1,v2,v2-binary,grpc (default: all the service has payloads for)",
    )
    loadtest.add_argument(
        "--url", default=os.environ.get("MODELSERVE_URL", "http://127.0.0.1:8080")
    )
    loadtest.add_argument(
        "--grpc-url", default=os.environ.get("MODELSERVE_GRPC_URL", "127.0.0.1:8081")
    )
    loadtest.add_argument(
        "--reports",
        type=Path,
        default=LOADTESTS / "reports",
        help="where the CSV and HTML reports go",
    )
    loadtest.set_defaults(func=cmd_loadtest)


def _positive_int(text: str) -> int:
    value = _positive_float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(value)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


# --- canary / promote / rollback / status ----------------------------------------------------

def cmd_rollout(args: argparse.Namespace) -> int:
    if not args.kube:
        if args.command == "status":
            return cmd_local_status(args)
        from gateway.platform_client import run_rollout

        return run_rollout(args)
    from gateway.kube import run_command

    return run_command(args)


def cmd_apply(args: argparse.Namespace) -> int:
    from gateway.platform_client import run_apply

    return run_apply(args)


def cmd_local_status(args: argparse.Namespace) -> int:
    """`status` against the running platform: `GET /v1/services[/NAME]`, printed as for a
    cluster's InferenceServices."""
    from gateway.kube import summarize

    path = f"/v1/services/{args.name}" if args.name else "/v1/services"
    headers = {"x-api-key": args.api_key} if args.api_key else {}
    try:
        response = httpx.get(args.url.rstrip("/") + path, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return _error(f"cannot reach the platform at {args.url}: {exc}")
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if response.status_code != 200:
        return _error(f"{response.status_code}: {doc.get('error', response.text)}")
    docs = [doc] if args.name else doc.get("services", [])
    if not docs:
        print("no InferenceServices")
    for item in docs:
        print("\n".join(summarize(item, args.component)))
    return 0


def _add_rollout(commands: Any) -> None:
    from gateway.kube import COMPONENTS, parse_percent

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kube",
        action="store_true",
        help="through the Kubernetes API instead of the local platform at --url",
    )
    common.add_argument(
        "--namespace", help="default: the kubeconfig context's namespace, then default"
    )
    common.add_argument(
        "--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, then in-cluster config"
    )
    common.add_argument(
        "--component",
        choices=COMPONENTS,
        default=None,
        help="default: predictor with --kube, the component taking the traffic locally",
    )
    platform = argparse.ArgumentParser(add_help=False)
    platform.add_argument(
        "--url",
        default=os.environ.get("MODELSERVE_URL", "http://127.0.0.1:8080"),
        help="the local platform, without --kube (default $MODELSERVE_URL)",
    )
    platform.add_argument(
        "--api-key",
        default=os.environ.get("MODELSERVE_API_KEY"),
        help="the gateway's API key, when auth is on (default $MODELSERVE_API_KEY)",
    )
    helps = {
        "canary": "send --percent of the traffic to the latest revision",
        "promote": "the latest revision takes all traffic (removes canaryTrafficPercent)",
        "rollback": "all traffic back to the previous revision (canaryTrafficPercent 0)",
        "status": "URL, traffic per revision and conditions of one or all InferenceServices",
    }
    for command, text in helps.items():
        description = f"{text}: on the local platform at --url, or with --kube on a cluster."
        sub = commands.add_parser(
            command, parents=[common, platform], help=text, description=description
        )
        sub.add_argument("name", nargs="?" if command == "status" else None)
        if command == "canary":
            sub.add_argument("--percent", type=parse_percent, required=True, help="0 to 100")
        sub.set_defaults(func=cmd_rollout)
    apply = commands.add_parser(
        "apply",
        parents=[platform],
        help="create or update InferenceServices on the local platform (as kubectl apply)",
        description="POST each InferenceService in FILES to the platform at --url: a changed "
        "spec makes a new revision; canaryTrafficPercent splits the traffic.",
    )
    apply.add_argument("files", nargs="+", type=Path, help="manifest files or directories")
    apply.set_defaults(func=cmd_apply)


# --- main -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run InferenceServices locally behind the gateway")
    up.add_argument(
        "files",
        nargs="*",
        type=Path,
        help=f"manifest files or directories (default: {DEFAULT_MANIFESTS}/)",
    )
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8080, help="gateway REST port (0: any free)")
    up.add_argument("--grpc-port", type=int, default=8081, help="gateway gRPC port (0: any free)")
    up.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where pvc://<claim>/<path> is read from (default: $MODELSERVE_MODELS_DIR or models)",
    )
    up.set_defaults(func=cmd_up)

    build = commands.add_parser("build-models", help="train and export the demo models")
    build.add_argument("--out", type=Path, default=Path("models"))
    build.set_defaults(func=cmd_build_models)

    predict = commands.add_parser("predict", help="send one prediction request")
    predict.add_argument("name", help="the InferenceService (model) name")
    predict.add_argument("--data", required=True, help="request JSON, or @FILE")
    predict.add_argument("--protocol", choices=("v1", "v2", "grpc"), default="v1")
    predict.add_argument("--url", default=os.environ.get("MODELSERVE_URL", "http://127.0.0.1:8080"))
    predict.add_argument(
        "--grpc-url", default=os.environ.get("MODELSERVE_GRPC_URL", "127.0.0.1:8081")
    )
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds")
    predict.add_argument(
        "--api-key",
        default=os.environ.get("MODELSERVE_API_KEY"),
        help="the gateway's API key, when auth is on (default $MODELSERVE_API_KEY)",
    )
    predict.set_defaults(func=cmd_predict)

    validate = commands.add_parser("validate", help="check InferenceService manifests")
    validate.add_argument(
        "paths", nargs="*", type=Path, help=f"files or directories (default: {DEFAULT_MANIFESTS}/)"
    )
    validate.add_argument(
        "--crd", type=Path, help="the InferenceService CustomResourceDefinition YAML to check with"
    )
    validate.add_argument(
        "--strict",
        action="store_true",
        help="also report fields the schema does not know (needs --crd)",
    )
    validate.set_defaults(func=cmd_validate)

    _add_loadtest(commands)
    _add_rollout(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "strict", False) and not args.crd:
        parser.error("--strict needs --crd")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
