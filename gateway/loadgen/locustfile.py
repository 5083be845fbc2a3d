"""Locust load test for one modelserve service over the protocols it speaks.

Usually run by `modelserve loadtest NAME`. Directly (the file is `gateway.loadgen.LOCUSTFILE`):

    locust -f "$(python -c 'import gateway.loadgen as g; print(g.LOCUSTFILE)')" --headless \\
        -u 8 -r 8 -t 30s --host http://127.0.0.1:8080 --service sklearn-iris \\
        --protocols v1,grpc --grpc-target 127.0.0.1:8081 [--shape step|ramp] \\
        [--payloads DIR] [--slo FILE]

`--protocols` picks the users (v1, v2, v2-binary: REST; grpc: v2 gRPC; tfserving: TF Serving's
gRPC Predict, same `--grpc-target`); by default every protocol the service has a payload for in
`--payloads DIR` (default: the demo services' payloads shipped in this package; tfserving needs
`<service>.tfserving.json`). Each option also reads an environment variable (LOADTEST_SERVICE,
LOADTEST_PROTOCOLS, LOADTEST_PAYLOADS, ...). With `--slo FILE` the run's totals are checked
against the service's SLOs when Locust quits, and a violation makes the exit status 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gevent
from locust import User, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import Runner

from gateway.loadgen import DEMO_PAYLOADS, shapes
from gateway.loadgen.bodies import tfserving_body
from gateway.loadgen.grpc_user import GrpcV2User, TFServingUser, import_stubs
from gateway.loadgen.payloads import available_protocols, parse_protocols
from gateway.loadgen.users import V1User, V2BinaryUser, V2User
from gateway.slo import Measured, evaluate, format_table, load_slo_file

USERS: dict[str, type[User]] = {
    "v1": V1User,
    "v2": V2User,
    "v2-binary": V2BinaryUser,
    "grpc": GrpcV2User,
    "tfserving": TFServingUser,
}
logger = logging.getLogger("gateway.loadgen")


@events.init_command_line_parser.add_listener
def _add_options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("modelserve")
    group.add_argument("--service", env_var="LOADTEST_SERVICE", default="sklearn-iris",
                       help="the InferenceService to load")
    group.add_argument("--protocols", env_var="LOADTEST_PROTOCOLS", default="",
                       help="comma-separated: v1,v2,v2-binary,grpc,tfserving "
                            "(default: all with payloads)")
    group.add_argument("--grpc-target", env_var="LOADTEST_GRPC_TARGET", default="127.0.0.1:8081",
                       help="HOST:PORT of the gRPC endpoint (v2 and TF Serving)")
    group.add_argument("--payloads", env_var="LOADTEST_PAYLOADS", default=str(DEMO_PAYLOADS),
                       help="directory of <service>.<v1|v2|tfserving>.json payload files "
                            "(default: the demo services')")
    group.add_argument("--shape", env_var="LOADTEST_SHAPE", default="",
                       choices=["", *shapes.SHAPES],
                       help="step: users in steps; ramp: linear to -u over -t (default: constant)")
    group.add_argument("--slo", env_var="LOADTEST_SLO", default="",
                       help="SLO file to check the totals against when Locust quits")


def _selected(service: str, protocols: str, payloads: Path) -> list[type[User]]:
    available = available_protocols(service, payloads)
    wanted = parse_protocols(protocols) if protocols else available
    missing = [p for p in wanted if p not in available]
    if not available or missing:
        lacking = ", ".join(missing or wanted) or "any protocol"
        raise ValueError(f"service {service!r} has no payload for {lacking} in {payloads}")
    return [USERS[p] for p in wanted]


@events.init.add_listener
def _configure(environment: Environment, runner: Runner | None = None, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    payloads = Path(options.payloads)
    selected = _selected(options.service, options.protocols, payloads)
    environment.user_classes[:] = selected
    if GrpcV2User in selected:
        import_stubs()  # ~2 s of imports: before the users start, not inside the measured run
    if TFServingUser in selected:
        tfserving_body(options.service, payloads)  # a bad payload fails here, not in each user
    # gevent's clock is cached since the hub started; after the slow imports above it is
    # seconds behind, and Locust's `-t` timer (gevent.spawn_later) would end the run early.
    gevent.get_hub().loop.update_now()
    if options.shape:
        shape = shapes.SHAPES[options.shape]()
        shape.runner = runner
        environment.shape_class = shape


@events.quitting.add_listener
def _check_slos(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not options.slo:
        return
    slo = load_slo_file(Path(options.slo)).for_service(options.service)
    total = environment.stats.total
    measured = Measured(
        requests=total.num_requests,
        failures=total.num_failures,
        p50_ms=float(total.get_response_time_percentile(0.50) or 0),
        p95_ms=float(total.get_response_time_percentile(0.95) or 0),
        p99_ms=float(total.get_response_time_percentile(0.99) or 0),
        rps=float(total.total_rps),
    )
    checks = evaluate(slo, measured)
    logger.info("SLOs for %s:\n%s", options.service, format_table(options.service, checks))
    if not all(check.passed for check in checks):
        environment.process_exit_code = 1
