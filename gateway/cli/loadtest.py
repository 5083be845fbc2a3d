"""`modelserve loadtest`: headless Locust against a running platform, then the SLO verdict.

Locust runs as a subprocess (`python -m locust -f <gateway/loadgen/locustfile.py> --headless
...`) with the user's payload directory (`--payloads`, default: the demo services' ones shipped
in `gateway.loadgen`) and writes `<reports>/<name>_stats.csv` (and the other CSVs) plus
`<reports>/<name>.html`; the "Aggregated" row of the stats CSV is checked against the service's
SLOs (`--slo FILE`, default: the demo services'). Exit status: 0 all SLOs met, 1 an SLO violated
(or Locust failed), 2 usage or config error (Locust not installed included).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.loadgen import LOCUSTFILE
from gateway.loadgen.payloads import available_protocols
from gateway.slo import Measured, SLOError, evaluate, format_table, load_slo_file

__all__ = ["MAX_DURATION_S", "parse_duration", "run_loadtest"]

MAX_DURATION_S = 600
# Locust needs a few seconds to start and to write its reports after the run.
OVERRUN_S = 60
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s?)?$")


def parse_duration(text: str) -> int:
    """`30s`, `2m`, `1m30s`, `45` (seconds) → seconds, 1 to MAX_DURATION_S."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 2m, 1m30s)")
    parts = {key: int(value) if value else 0 for key, value in match.groupdict().items()}
    seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if not 1 <= seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"duration {text!r} must be between 1 s and {MAX_DURATION_S // 60} min"
        )
    return seconds


@dataclass(frozen=True)
class LoadPlan:
    """One Locust run, resolved from the command line."""

    service: str
    protocols: list[str]
    users: int
    spawn_rate: float
    duration_s: int
    shape: str | None
    url: str
    grpc_target: str
    payloads: Path
    reports: Path

    def command(self) -> list[str]:
        prefix = self.reports / self.service
        command = [
            sys.executable, "-m", "locust",
            "-f", str(LOCUSTFILE),
            "--headless", "--only-summary",
            "-u", str(self.users), "-r", str(self.spawn_rate), "-t", f"{self.duration_s}s",
            "--host", self.url,
            "--csv", str(prefix), "--html", f"{prefix}.html",
            # Failures are judged by the error-ratio SLO, not by Locust's exit status.
            "--exit-code-on-error", "0",
            "--service", self.service,
            "--protocols", ",".join(self.protocols),
            "--grpc-target", self.grpc_target,
            "--payloads", str(self.payloads.resolve()),
        ]
        if self.shape:
            command += ["--shape", self.shape]
        return command


def _plan(args: argparse.Namespace) -> LoadPlan:
    if not args.payloads.is_dir():
        raise SLOError(f"--payloads {args.payloads}: not a directory")
    available = available_protocols(args.name, args.payloads)
    if not available:
        raise SLOError(
            f"no payloads for service {args.name!r} in {args.payloads} "
            f"(<service>.<v1|v2|tfserving>.json)"
        )
    protocols = args.protocols or available
    missing = [p for p in protocols if p not in available]
    if missing:
        raise SLOError(
            f"service {args.name!r} has no payload for {', '.join(missing)} "
            f"(it has: {', '.join(available)})"
        )
    return LoadPlan(
        service=args.name, protocols=protocols, users=args.users,
        spawn_rate=args.spawn_rate or float(args.users), duration_s=args.duration,
        shape=args.shape, url=args.url, grpc_target=args.grpc_url, payloads=args.payloads,
        reports=args.reports,
    )


# The request name each protocol's Locust user reports, before the service name.
_REQUEST_NAMES = {
    "v1": "v1", "v2": "v2", "v2-binary": "v2-binary", "grpc": "ModelInfer", "tfserving": "Predict",
}


def _silent_protocols(stats_csv: Path, protocols: list[str]) -> list[str]:
    """The protocols with no row in Locust's stats: their users never sent a request."""
    with stats_csv.open(newline="") as handle:
        names = {row.get("Name", "").split(" ", 1)[0] for row in csv.DictReader(handle)}
    return [p for p in protocols if _REQUEST_NAMES.get(p, p) not in names]


def _run_locust(plan: LoadPlan) -> int | None:
    """Run Locust; its exit status, or None when it overran its time."""
    plan.reports.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(plan.command(), timeout=plan.duration_s + OVERRUN_S)
    except subprocess.TimeoutExpired:
        return None
    return done.returncode


def run_loadtest(args: argparse.Namespace) -> int:
    """The `modelserve loadtest` command."""
    try:
        slo = load_slo_file(args.slo).for_service(args.name)
        plan = _plan(args)
    except SLOError as exc:
        print(f"modelserve: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if importlib.util.find_spec("locust") is None:
        # Locust is not a dependency of the platform (its images do not carry it).
        print("modelserve: error: loadtest runs Locust, which is not installed here: "
              "pip install locust", file=sys.stderr, flush=True)
        return 2
    print(
        f"loadtest {plan.service}: {plan.users} users ({plan.shape or 'constant'}), "
        f"{plan.duration_s}s, protocols {','.join(plan.protocols)}, {plan.url}",
        flush=True,
    )
    status = _run_locust(plan)
    if status != 0:
        reason = "overran its time limit" if status is None else f"exited with {status}"
        print(f"modelserve: error: locust {reason}", file=sys.stderr, flush=True)
        return 1
    try:
        measured = Measured.from_stats_csv(plan.reports / f"{plan.service}_stats.csv")
    except SLOError as exc:
        print(f"modelserve: error: {exc}", file=sys.stderr, flush=True)
        return 1
    silent = _silent_protocols(plan.reports / f"{plan.service}_stats.csv", plan.protocols)
    if silent:
        # A user whose on_start failed sends nothing and fails nothing: the run would pass.
        print(f"modelserve: error: no requests were sent for {', '.join(silent)} (see Locust's "
              "output above for why)", file=sys.stderr, flush=True)
        return 1
    checks = evaluate(slo, measured)
    print(f"{measured.requests} requests, {measured.failures} failed", flush=True)
    print(format_table(plan.service, checks), flush=True)
    print(f"report: {plan.reports / plan.service}.html, {plan.reports / plan.service}_stats.csv")
    return 0 if all(check.passed for check in checks) else 1
