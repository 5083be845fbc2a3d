"""`modelserve slo-rules [--slo FILE] [--out FILE] [--prometheus-rule FILE] [--tests DIR]`:
Prometheus recording and alerting rules for the SLO file's services (`gateway.slo_alerts`),
as a rule file (stdout by default), a prometheus-operator PrometheusRule, and `promtool test
rules` files that breach and keep every SLO.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMMAND", "add_slo_rules_parser", "cmd_slo_rules", "slo_source"]

COMMAND = "modelserve slo-rules"
PROMETHEUS_RULE_NAME = "modelserve-slo"
PROMETHEUS_RULE_LABELS = {"app.kubernetes.io/name": "modelserve-gateway",
                          "app.kubernetes.io/part-of": "modelserve"}


def _error(message: str) -> int:
    print(f"modelserve: error: {message}", file=sys.stderr, flush=True)
    return 1


def slo_source(path: Path) -> str:
    """How the generated files name the SLO file: the demo one by its place in the source
    tree (so the committed rules do not depend on where modelserve is installed), any other
    as given."""
    from gateway.loadgen import DEMO_SLO_FILE

    if path.resolve() == DEMO_SLO_FILE.resolve():
        return "gateway/loadgen/demo/slo.yaml"
    return str(path)


def cmd_slo_rules(args: argparse.Namespace) -> int:
    from gateway.slo import SLOError, load_slo_file
    from gateway.slo_alerts import build_rules, build_tests, header, prometheus_rule, to_yaml

    if args.tests is not None and args.out is None:
        return _error("--tests needs --out FILE: the test files name the rule file they test")
    source = slo_source(args.slo)
    try:
        slos = load_slo_file(args.slo)
        rules = build_rules(slos, source)  # also what build_tests checks
    except SLOError as exc:
        return _error(str(exc))
    top = header(slos, source, COMMAND)
    written = [_write(args.out, to_yaml(rules.dump(), top))]
    if args.prometheus_rule is not None:
        doc = prometheus_rule(rules, PROMETHEUS_RULE_NAME, PROMETHEUS_RULE_LABELS)
        written.append(_write(args.prometheus_rule, to_yaml(doc, top)))
    if args.tests is not None:
        args.tests.mkdir(parents=True, exist_ok=True)
        rule_file = os.path.relpath(args.out.resolve(), args.tests.resolve())
        for name, test_file in build_tests(slos, rule_file, source).items():
            written.append(_write(args.tests / name, to_yaml(test_file.dump())))
    for path in filter(None, written):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _write(path: Path | None, text: str) -> Path | None:
    if path is None:
        sys.stdout.write(text)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def add_slo_rules_parser(commands: Any) -> None:
    """Register `slo-rules` on the `modelserve` subcommands."""
    from gateway.loadgen import DEMO_SLO_FILE

    parser = commands.add_parser(
        "slo-rules",
        help="Prometheus recording and alerting rules for the SLO file's services",
        description="Burn-rate alerts on each service's max_error_ratio (the SRE workbook's "
        "multiwindow, multi-burn-rate alerts) and alerts on its p50/p95/p99 targets, over the "
        "gateway's metrics; check them with `promtool check rules` and `promtool test rules`.",
    )
    parser.add_argument(
        "--slo", type=Path, default=DEMO_SLO_FILE, metavar="FILE",
        help="the SLO file (default: the demo services' SLOs, shipped with modelserve)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="where the rule file goes (default: standard output)",
    )
    parser.add_argument(
        "--prometheus-rule", type=Path, default=None, metavar="FILE",
        help="also write the rules as a prometheus-operator PrometheusRule manifest",
    )
    parser.add_argument(
        "--tests", type=Path, default=None, metavar="DIR",
        help="also write `promtool test rules` files for the rule file into DIR (needs --out)",
    )
    parser.set_defaults(func=cmd_slo_rules)
