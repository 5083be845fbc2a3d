"""`modelserve`: run InferenceServices locally, build the demo models, send predictions, validate,
roll out canaries locally or on a cluster.

Arguments are parsed in `main()` only. `predict` and `loadtest` talk to the data plane at
`--url` (default `$MODELSERVE_URL` or http://127.0.0.1:8080); `apply`, `delete` and, without
`--kube`, `canary`, `promote`, `rollback` and `status` to the control plane at `--admin-url`
(default `$MODELSERVE_ADMIN_URL` or http://127.0.0.1:8082) with an admin token found by
themselves; with `--kube` the rollout commands go through the Kubernetes API. `logsink` runs a
sink for payload logging (`gateway.logsink`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.cli.logsink import add_logsink_parser
from gateway.cli.slo_rules import add_slo_rules_parser
from gateway.cli.up import DEFAULT_MANIFESTS, add_up_parser
from gateway.controlplane.manifests import ManifestError
from servers.kserve_argv import argv_hidden

__all__ = ["main"]

DEFAULT_ADMIN_URL = os.environ.get("MODELSERVE_ADMIN_URL", "http://127.0.0.1:8082")


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1


# --- build-models ---------------------------------------------------------------------------


def cmd_build_models(args: argparse.Namespace) -> int:
    with argv_hidden():
        from demos import build_all

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
        from gateway.cli.predict_client import grpc_infer
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
    from gateway.cli.loadtest import run_loadtest

    return run_loadtest(args)


def _add_loadtest(commands: Any) -> None:
    from gateway.cli.loadtest import MAX_DURATION_S, parse_duration
    from gateway.loadgen import DEFAULT_REPORTS, DEMO_PAYLOADS, DEMO_SLO_FILE
    from gateway.loadgen.payloads import parse_protocols

    loadtest = commands.add_parser(
        "loadtest", help="headless Locust against a running platform, checked against SLOs"
    )
    loadtest.add_argument("name", help="the InferenceService to load")
    loadtest.add_argument(
        "--slo",
        type=Path,
        default=DEMO_SLO_FILE,
        metavar="FILE",
        help="the SLO file (default: the demo services' SLOs, shipped with modelserve)",
    )
    loadtest.add_argument(
        "--payloads",
        type=Path,
        default=DEMO_PAYLOADS,
        metavar="DIR",
        help="the requests to send, <NAME>.<v1|v2|tfserving>.json "
        "(default: the demo services' payloads, shipped with modelserve)",
    )
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
        default=DEFAULT_REPORTS,
        metavar="DIR",
        help=f"where the CSV and HTML reports go (default: ./{DEFAULT_REPORTS}, where the "
        "dashboard of a `modelserve up` started here looks)",
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
        from gateway.cli.platform_client import run_delete, run_rollout

        return run_delete(args) if args.command == "delete" else run_rollout(args)
    from gateway.cli.kube import run_command

    return run_command(args)


def cmd_apply(args: argparse.Namespace) -> int:
    from gateway.cli.platform_client import run_apply

    return run_apply(args)


def cmd_local_status(args: argparse.Namespace) -> int:
    """`status` against the running platform: `GET /v1/services[/NAME]` on the admin port,
    printed as for a cluster's InferenceServices."""
    from gateway.cli.kube import summarize
    from gateway.cli.platform_client import PlatformClient, PlatformError, admin_token

    client = PlatformClient(args.admin_url, admin_token(args.admin_url, args.token))
    try:
        doc = client.get(args.name) if args.name else client.list()
    except PlatformError as exc:
        return _error(str(exc))
    docs = [doc] if args.name else doc.get("services", [])
    if not docs:
        print("no InferenceServices")
    for item in docs:
        print("\n".join(summarize(item, args.component)))
    return 0


def _add_rollout(commands: Any) -> None:
    from gateway.cli.kube import COMPONENTS, parse_percent

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kube",
        action="store_true",
        help="through the Kubernetes API instead of the local platform at --admin-url",
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
        "--admin-url",
        default=DEFAULT_ADMIN_URL,
        help="the local platform's control plane, without --kube (default $MODELSERVE_ADMIN_URL "
        "or http://127.0.0.1:8082)",
    )
    platform.add_argument(
        "--token",
        default=None,
        help="an admin token (default $MODELSERVE_ADMIN_TOKEN, else the one `modelserve up` "
        "wrote for --admin-url's port)",
    )
    helps = {
        "canary": "send --percent of the traffic to the latest revision",
        "promote": "the latest revision takes all traffic (removes canaryTrafficPercent)",
        "rollback": "all traffic back to the previous revision (canaryTrafficPercent 0) "
        "while a canary is in progress",
        "status": "URL, traffic per revision and conditions of one or all InferenceServices",
        "delete": "delete an InferenceService and stop its revisions (as kubectl delete)",
    }
    for command, text in helps.items():
        description = f"{text}: on the local platform at --admin-url, or with --kube on a cluster."
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
        description="POST each InferenceService in FILES to the control plane at --admin-url: "
        "a changed spec makes a new revision; canaryTrafficPercent splits the traffic.",
    )
    apply.add_argument("files", nargs="+", type=Path, help="manifest files or directories")
    apply.set_defaults(func=cmd_apply)


# --- main -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    add_up_parser(commands)

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
    add_logsink_parser(commands)
    add_slo_rules_parser(commands)
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
