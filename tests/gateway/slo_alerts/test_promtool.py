"""The committed SLO rules through the real `promtool` (Prometheus 2.42, Debian's package):
`check rules`, and `test rules` with series generated from the SLO file that breach and keep
each SLO of every service; mutated rules must fail those tests.

`make test` installs promtool first (tools/promtool.sh, cached under ~/.cache) and names it in
MODELSERVE_PROMTOOL; without one anywhere this module is skipped, saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.loadgen import DEMO_SLO_FILE
from gateway.slo import SLOFile, load_slo_file
from gateway.slo_alerts import TEST_FILES, build_rules, build_tests, header, to_yaml
from tests.support import ROOT

RULES = ROOT / "deploy" / "prometheus" / "modelserve-slo-rules.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "prometheus" / "modelserve-slo-prometheusrule.yaml"
SOURCE = "gateway/loadgen/demo/slo.yaml"
_CACHED = Path.home() / ".cache" / "modelserve-promtool" / "bin" / "promtool"


@pytest.fixture(scope="module")
def promtool() -> str:
    named = os.environ.get("MODELSERVE_PROMTOOL")
    if named:
        assert Path(named).is_file(), f"MODELSERVE_PROMTOOL={named} does not exist"
        return named
    found = str(_CACHED) if _CACHED.is_file() else shutil.which("promtool")
    if found is None:
        pytest.skip(f"promtool is not installed: `make promtool` (or `make test`) installs it, "
                    f"or run {ROOT / 'tools' / 'promtool.sh'}")
    return found


def _promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _write_tests(folder: Path, rules: Path, slos: SLOFile | None = None) -> list[Path]:
    tests = build_tests(slos or load_slo_file(DEMO_SLO_FILE), str(rules), SOURCE)
    paths = []
    for name, test_file in tests.items():
        path = folder / name
        path.write_text(to_yaml(test_file.dump()))
        paths.append(path)
    return paths


def _rule_count(path: Path) -> int:
    return sum(len(group["rules"]) for group in yaml.safe_load(path.read_text())["groups"])


def test_check_rules_accepts_the_committed_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {_rule_count(RULES)} rules found" in result.stdout


def test_check_rules_accepts_the_prometheus_rules_groups(promtool: str, tmp_path: Path) -> None:
    spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
    path = tmp_path / "from-prometheusrule.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = _promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {_rule_count(RULES)} rules found" in result.stdout


def test_every_slo_fires_when_breached_and_stays_quiet_when_kept(
    promtool: str, tmp_path: Path
) -> None:
    paths = _write_tests(tmp_path, RULES)
    assert [p.name for p in paths] == list(TEST_FILES)
    result = _promtool(promtool, "test", "rules", *paths)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(paths) and "FAILED" not in output, output


@pytest.mark.parametrize(("before", "after", "failing"), [
    # A page that waits for a faster burn than the SLO allows misses the fast burn.
    ("> (14.4 * 0.01)", "> (24.4 * 0.01)", "alertname: ModelServeErrorBudgetFastBurn"),
    # Counting client errors against the budget fires on the client-errors-only traffic.
    ('code=~"5..|', 'code=~"4..|5..|', "client errors only"),
    # The p99 alert reading p95 misses the 2% of slow requests.
    ('quantile="0.99"}\n', 'quantile="0.95"}\n', "alertname: ModelServeLatencyHigh"),
], ids=["burn-rate", "client-errors", "quantile"])
def test_the_unit_tests_catch_rules_that_miss_an_slo(
    promtool: str, tmp_path: Path, before: str, after: str, failing: str
) -> None:
    # One service is enough to show it, and five times quicker for promtool.
    demo = load_slo_file(DEMO_SLO_FILE)
    name, slo = next(iter(demo.services.items()))
    slos = SLOFile(services={name: slo})
    text = to_yaml(build_rules(slos, SOURCE).dump(), header(slos, SOURCE, "test"))
    assert before in text
    mutated = tmp_path / "rules.yaml"
    mutated.write_text(text.replace(before, after))
    short = _write_tests(tmp_path, mutated, slos)[0]  # the 1-minute file has every case it breaks
    result = _promtool(promtool, "test", "rules", short)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAILED" in output and failing in output, output
