"""The SLO file, Locust's stats CSV, the verdicts, and `modelserve loadtest`'s usage errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.loadtest import parse_duration
from gateway.loadgen import DEMO_SLO_FILE
from gateway.loadgen.bodies import binary_body, json_body, raw_tensors
from gateway.loadgen.payloads import available_protocols, parse_protocols
from gateway.slo import Measured, ServiceSLO, SLOError, evaluate, format_table, load_slo_file

SLO = ServiceSLO(p50_ms=10, p95_ms=20, p99_ms=40, max_error_ratio=0.01, min_rps=100)
GOOD = Measured(requests=1000, failures=0, p50_ms=5, p95_ms=10, p99_ms=20, rps=500)
CSV_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
)


def write(tmp_path: Path, text: str, name: str = "slo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the SLO file ---------------------------------------------------------------------------


def test_committed_slo_file_covers_the_demo_services() -> None:
    slos = load_slo_file(DEMO_SLO_FILE)
    for service in ("sklearn-iris", "iris-classifier", "tf-digits", "triton-digits",
                    "digits-classifier", "xgboost-iris", "lightgbm-iris"):
        assert slos.for_service(service).max_error_ratio <= 0.01
        assert available_protocols(service)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [", "not YAML"),
        ("[]", "invalid SLO file"),
        ("services: {}", "services"),
        ("services:\n  a: {p50_ms: 1, p95_ms: 2, p99_ms: 3, max_error_ratio: 0}", "min_rps"),
        ("services:\n  a: {p50_ms: 1, p95_ms: 2, p99_ms: 3, max_error_ratio: 0, min_rps: 1,"
         " p90_ms: 2}", "p90_ms"),
        ("services:\n  a: {p50_ms: -1, p95_ms: 2, p99_ms: 3, max_error_ratio: 0, min_rps: 1}",
         "p50_ms"),
        ("services:\n  a: {p50_ms: 1, p95_ms: 2, p99_ms: 3, max_error_ratio: 2, min_rps: 1}",
         "max_error_ratio"),
        ("services:\n  a: {p50_ms: 9, p95_ms: 2, p99_ms: 3, max_error_ratio: 0, min_rps: 1}",
         "p50_ms <= p95_ms <= p99_ms"),
        ("services:\n  a: {p50_ms: fast, p95_ms: 2, p99_ms: 3, max_error_ratio: 0, min_rps: 1}",
         "p50_ms"),
    ],
)
def test_bad_slo_file_is_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SLOError, match=message) as caught:
        load_slo_file(path)
    assert str(path) in str(caught.value)


def test_missing_slo_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SLOError, match="nope.yaml"):
        load_slo_file(tmp_path / "nope.yaml")


def test_unknown_service_lists_the_known_ones() -> None:
    slos = load_slo_file(DEMO_SLO_FILE)
    with pytest.raises(SLOError, match="no SLOs for service 'nope' .*sklearn-iris"):
        slos.for_service("nope")


# --- verdicts -------------------------------------------------------------------------------


def test_measurement_within_every_slo_passes() -> None:
    checks = evaluate(SLO, GOOD)
    assert [c.slo for c in checks] == ["p50", "p95", "p99", "error_ratio", "rps"]
    assert all(c.passed for c in checks)
    assert "FAIL" not in format_table("svc", checks)


@pytest.mark.parametrize(
    ("changes", "failing", "line"),
    [
        ({"p50_ms": 11}, "p50", "FAIL svc p50 11 ms > 10 ms"),
        ({"p95_ms": 20.5}, "p95", "FAIL svc p95 20.5 ms > 20 ms"),
        ({"p99_ms": 41}, "p99", "FAIL svc p99 41 ms > 40 ms"),
        ({"failures": 11}, "error_ratio", "FAIL svc error_ratio 0.011 > 0.01"),
        ({"rps": 99.5}, "rps", "FAIL svc rps 99.5 req/s < 100 req/s"),
    ],
)
def test_each_violated_slo_fails_alone_and_is_named(
    changes: dict[str, float], failing: str, line: str
) -> None:
    measured = Measured(**{**GOOD.__dict__, **changes})
    checks = evaluate(SLO, measured)
    assert [c.slo for c in checks if not c.passed] == [failing]
    assert line in format_table("svc", checks).splitlines()


def test_boundary_values_pass() -> None:
    measured = Measured(requests=100, failures=1, p50_ms=10, p95_ms=20, p99_ms=40, rps=100)
    assert all(c.passed for c in evaluate(SLO, measured))


def test_no_requests_fails_rather_than_passing() -> None:
    measured = Measured(requests=0, failures=0, p50_ms=math.nan, p95_ms=math.nan,
                        p99_ms=math.nan, rps=0)
    failed = {c.slo for c in evaluate(SLO, measured) if not c.passed}
    assert failed == {"p50", "p95", "p99", "error_ratio", "rps"}
    assert "FAIL svc p50 n/a ms > 10 ms" in format_table("svc", evaluate(SLO, measured))


# --- Locust's stats CSV ---------------------------------------------------------------------


def test_aggregated_row_is_read_from_locust_csv(tmp_path: Path) -> None:
    rows = [
        "POST,v1 a,10,0,6,6.1,1.4,68.2,19.0,320.8,0.0,6,6,7,7,9,10,12,13,22,68,68",
        ",Aggregated,200,3,7,8.0,1.0,100.0,50.0,900.5,1.2,7,8,9,9,13,17,22,28,100,180,180",
    ]
    path = write(tmp_path, CSV_HEADER + "\n".join(rows) + "\n", "run_stats.csv")
    measured = Measured.from_stats_csv(path)
    assert measured == Measured(requests=200, failures=3, p50_ms=7, p95_ms=17, p99_ms=28,
                                rps=900.5)
    assert measured.error_ratio == 0.015


def test_csv_without_requests_reads_as_nan(tmp_path: Path) -> None:
    path = write(tmp_path, CSV_HEADER + ",Aggregated,0,0,0,0,0,0,0,0,0" + ",N/A" * 11 + "\n",
                 "run_stats.csv")
    measured = Measured.from_stats_csv(path)
    assert measured.requests == 0 and math.isnan(measured.p95_ms)


def test_csv_without_aggregated_row_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SLOError, match="Aggregated"):
        Measured.from_stats_csv(write(tmp_path, CSV_HEADER, "run_stats.csv"))


# --- command line and payloads ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1m30s", 90),
                                               ("45", 45), ("10m", 600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "11m", "1h", "soon", "-5s"])
def test_bad_or_unbounded_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_protocols() -> None:
    assert parse_protocols("v1, grpc,v1") == ["v1", "grpc"]
    assert parse_protocols("tfserving") == ["tfserving"]
    with pytest.raises(argparse.ArgumentTypeError, match="http"):
        parse_protocols("v1,http")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["loadtest", "nope"], "no SLOs for service 'nope'"),
        (["loadtest", "iris-classifier", "--protocols", "grpc"], "no payload for grpc"),
        (["loadtest", "sklearn-iris", "--protocols", "v1,tfserving"], "no payload for tfserving"),
        (["loadtest", "sklearn-iris", "--payloads", "/nonexistent"], "not a directory"),
        (["loadtest", "sklearn-iris", "--payloads", "/"], "no payloads for service"),
    ],
)
def test_loadtest_config_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--duration", "20m"], ["--users", "0"],
                                   ["--protocols", "soap"], ["--shape", "zigzag"]])
def test_loadtest_usage_errors_exit_2(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["loadtest", "sklearn-iris", *flags])
    assert caught.value.code == 2


def test_binary_body_is_the_v2_payload_as_raw_little_endian() -> None:
    doc = json.loads(json_body("sklearn-iris", "v2"))
    body = binary_body("sklearn-iris")
    header = json.loads(body.body[: body.header_length])
    (tensor,) = raw_tensors("sklearn-iris")
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(tensor.raw) == 16
    assert body.body[body.header_length:] == tensor.raw
    assert tensor.shape == doc["inputs"][0]["shape"]
