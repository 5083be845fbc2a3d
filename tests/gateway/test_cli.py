"""The `modelserve` CLI: validate against KServe's CRD, predict over v1/v2/gRPC, up's failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.support import ROOT, ServerProcess

CRD = ROOT.parent / "shared" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
needs_crd = pytest.mark.skipif(not CRD.exists(), reason=f"{CRD} (test data) not present")
MANIFESTS = ROOT / "inferenceservices"
DEMO_FILES = [MANIFESTS / "sklearn-iris.yaml", MANIFESTS / "iris-classifier.yaml"]
ALL_MANIFESTS = sorted([*MANIFESTS.glob("*.yaml"), *(MANIFESTS / "cluster").glob("*.yaml")])
V2_BODY = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                       "data": [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]}]}


def variant(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "variant.yaml"
    text = (MANIFESTS / "sklearn-iris.yaml").read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def modelserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(Path(sys.executable).parent / "modelserve"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# --- validate -------------------------------------------------------------------------------


@needs_crd
def test_validate_demo_manifests_pass_against_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in ALL_MANIFESTS]
    assert len(paths) >= 4
    assert main(["validate", *paths, "--crd", str(CRD), "--strict"]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_without_crd_uses_the_typed_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", *map(str, DEMO_FILES)]) == 0
    bad = variant(tmp_path, "minReplicas: 1", "minReplicas: ten")
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}: spec.predictor.minReplicas:" in capsys.readouterr().out


@needs_crd
def test_validate_wrong_type_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = variant(tmp_path, "minReplicas: 1", 'minReplicas: "ten"')
    assert main(["validate", str(bad), "--crd", str(CRD)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: spec.predictor.minReplicas: 'ten' is not of type 'integer'" in out


@needs_crd
def test_validate_strict_reports_unknown_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = variant(tmp_path, "maxReplicas: 4", "maxReplica: 4")
    assert main(["validate", str(typo), "--crd", str(CRD)]) == 0  # a server prunes it
    capsys.readouterr()
    assert main(["validate", str(typo), "--crd", str(CRD), "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"{typo}: spec.predictor.maxReplica: unknown field" in out
    assert out.count("\n") == 1


@needs_crd
def test_validate_duplicates_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.yaml"
    copy.write_text(DEMO_FILES[0].read_text())
    assert main(["validate", str(DEMO_FILES[0]), str(copy), "--crd", str(CRD)]) == 1
    assert f"{copy}: metadata.name: duplicate name 'sklearn-iris'" in capsys.readouterr().out


def test_validate_warns_about_what_up_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = variant(tmp_path, '        command: ["python", "-m", "servers.sklearn"]\n', "")
    assert main(["validate", str(path)]) == 0
    assert "no command" in capsys.readouterr().err


def test_validate_strict_needs_crd() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate", "--strict"])
    assert caught.value.code == 2


# --- predict --------------------------------------------------------------------------------


def test_predict_v1_v2_and_grpc_against_a_server(
    sklearn_server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", sklearn_server.http_url]
    v1 = json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert main(["predict", "sklearn-iris", "--data", v1, *url]) == 0
    assert json.loads(capsys.readouterr().out) == {"predictions": [1]}

    body = tmp_path / "v2.json"
    body.write_text(json.dumps(V2_BODY))
    assert main(["predict", "sklearn-iris", "--protocol", "v2", "--data", f"@{body}", *url]) == 0
    [output] = json.loads(capsys.readouterr().out)["outputs"]
    assert output["data"] == [1, 0] and output["shape"] == [2]

    grpc = ["--grpc-url", sklearn_server.grpc_target]
    assert main(["predict", "sklearn-iris", "--protocol", "grpc", "--data", f"@{body}",
                 *grpc]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["model_name"] == "sklearn-iris"
    assert response["outputs"][0]["data"] == [1, 0]


def test_predict_errors_exit_1_with_the_message(
    sklearn_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", sklearn_server.http_url]
    assert main(["predict", "nope", "--data", '{"instances": [[1, 2, 3, 4]]}', *url]) == 1
    assert "404" in capsys.readouterr().err
    assert main(["predict", "sklearn-iris", "--data", '{"instances": "x"}', *url]) == 1
    assert "400" in capsys.readouterr().err
    assert main(["predict", "sklearn-iris", "--data", "{not json", *url]) == 1
    assert "not JSON" in capsys.readouterr().err
    grpc = ["--grpc-url", sklearn_server.grpc_target]
    # A tensor whose data does not fill its shape is refused before anything is sent...
    bad_shape = dict(V2_BODY, inputs=[dict(V2_BODY["inputs"][0], shape=[3, 4])])
    assert main(["predict", "sklearn-iris", "--protocol", "grpc", "--data",
                 json.dumps(bad_shape), *grpc]) == 1
    assert "needs 12 values" in capsys.readouterr().err
    # ...a valid tensor the model can't take comes back as the server's INVALID_ARGUMENT.
    wrong_width = dict(V2_BODY, inputs=[dict(V2_BODY["inputs"][0], shape=[4, 2])])
    assert main(["predict", "sklearn-iris", "--protocol", "grpc", "--data",
                 json.dumps(wrong_width), *grpc]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_predict_uses_modelserve_url_from_the_environment(sklearn_server: ServerProcess) -> None:
    data = '{"instances": [[6.8, 2.8, 4.8, 1.4]]}'
    result = modelserve("predict", "sklearn-iris", "--data", data,
                        env={"MODELSERVE_URL": sklearn_server.http_url})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"predictions": [1]}


# --- up's start-up failures (the full run is tests/e2e/test_up_cli.py) ----------------------


def test_up_on_a_taken_port_fails_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = modelserve("up", "--port", str(port), "--grpc-port", "0")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--port)" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_missing_models_suggests_build_models(tmp_path: Path) -> None:
    result = modelserve("up", "--port", "0", "--grpc-port", "0",
                        "--models-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert str(tmp_path / "none" / "iris") in result.stderr
    assert "modelserve build-models" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_a_bad_manifest_names_it(tmp_path: Path) -> None:
    bad = variant(tmp_path, "minReplicas: 1", "minReplicas: ten")
    result = modelserve("up", str(bad), "--port", "0", "--grpc-port", "0")
    assert result.returncode == 1
    assert f"{bad}: spec.predictor.minReplicas" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_with_an_empty_api_keys_file_fails_before_starting(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n")
    result = modelserve("up", "--port", "0", "--grpc-port", "0",
                        env={"MODELSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
    assert result.returncode == 1
    assert f"api_keys_file {keys} holds no keys" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--slo", "nope.yaml"], "nope.yaml"),
        (["--slo", "{bad}"], "invalid SLO file"),
        (["--payloads", "nope"], "--payloads nope: not a directory"),
    ],
)
def test_up_with_a_bad_dashboard_file_fails_before_starting(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: []\n")
    flags = [flag.replace("{bad}", str(bad)) for flag in flags]
    result = modelserve("up", "--port", "0", "--grpc-port", "0", *flags)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_build_models_writes_the_demo_models(tmp_path: Path) -> None:
    result = modelserve("build-models", "--out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m" / "iris" / "model.joblib").exists()
    assert str(tmp_path / "m" / "iris") in result.stdout
