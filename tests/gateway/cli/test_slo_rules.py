"""`modelserve slo-rules`: the committed rules and PrometheusRule are what it writes (drift
check), its test files find their rule file, and an unusable SLO file is an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.slo_alerts import TEST_FILES
from tests.support import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "modelserve-slo-rules.yaml"
PROMETHEUS_RULE = DEPLOY / "modelserve-slo-prometheusrule.yaml"
REGENERATE = ("modelserve slo-rules --out deploy/prometheus/modelserve-slo-rules.yaml "
              "--prometheus-rule deploy/prometheus/modelserve-slo-prometheusrule.yaml")


def test_the_committed_rules_are_what_the_demo_slos_generate(tmp_path: Path) -> None:
    rules, manifest = tmp_path / "rules.yaml", tmp_path / "prometheusrule.yaml"
    assert main(["slo-rules", "--out", str(rules), "--prometheus-rule", str(manifest)]) == 0
    assert rules.read_text() == RULES.read_text(), f"stale: run `{REGENERATE}`"
    assert manifest.read_text() == PROMETHEUS_RULE.read_text(), f"stale: run `{REGENERATE}`"


def test_the_prometheus_rule_holds_the_same_groups() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1",
                                                         "PrometheusRule")
    assert manifest["spec"] == yaml.safe_load(RULES.read_text())


def test_rules_go_to_stdout_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slo-rules"]) == 0
    assert capsys.readouterr().out == RULES.read_text()


def test_test_files_name_their_rule_file_relative_to_them(tmp_path: Path) -> None:
    rules, tests = tmp_path / "rules" / "slo.yaml", tmp_path / "tests"
    assert main(["slo-rules", "--out", str(rules), "--tests", str(tests)]) == 0
    for name in TEST_FILES:
        doc = yaml.safe_load((tests / name).read_text())
        assert doc["rule_files"] == ["../rules/slo.yaml"]


def test_tests_need_a_rule_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slo-rules", "--tests", str(tmp_path)]) == 1
    assert "--tests needs --out FILE" in capsys.readouterr().err


def test_an_invalid_slo_file_is_named_with_its_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "slo.yaml"
    bad.write_text("services:\n  svc:\n    p50_ms: 10\n")
    out = tmp_path / "rules.yaml"
    assert main(["slo-rules", "--slo", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: invalid SLO file" in err and "services.svc.p95_ms" in err
    assert not out.exists()


def test_an_slo_the_rules_cannot_express_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "slo.yaml"
    loose.write_text(yaml.safe_dump({"services": {"svc": {
        "p50_ms": 30, "p95_ms": 60, "p99_ms": 100, "max_error_ratio": 0.5, "min_rps": 1,
    }}}))
    assert main(["slo-rules", "--slo", str(loose)]) == 1
    assert "svc: max_error_ratio 0.5 is too loose" in capsys.readouterr().err


def test_a_users_slo_file_is_named_as_given(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"services": {"svc": {
        "p50_ms": 30, "p95_ms": 60, "p99_ms": 100, "max_error_ratio": 0.01, "min_rps": 1,
    }}}))
    out = tmp_path / "rules.yaml"
    assert main(["slo-rules", "--slo", str(mine), "--out", str(out)]) == 0
    alerts = yaml.safe_load(out.read_text())["groups"][1]["rules"]
    assert f"max_error_ratio 0.01 of {mine};" in alerts[0]["annotations"]["description"]
