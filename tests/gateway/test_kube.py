"""`--kube` canary operations against a strict fake Kubernetes API server on 127.0.0.1."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.cli.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    InferenceServices,
    KubeError,
    canary_patch,
    connect,
    parse_percent,
    promote_patch,
)
from tests.gateway.fake_kube import FakeKube, start
from tests.support import free_port

MANIFESTS = Path(__file__).resolve().parents[2] / "inferenceservices"
NS = "serving"
TOKEN = "s3cret-token"
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
# The -p arguments of the documented kubectl commands (README, KServe's canary docs).
KUBECTL_CANARY_20 = '{"spec":{"predictor":{"canaryTrafficPercent":20}}}'
KUBECTL_PROMOTE = '[{"op":"remove","path":"/spec/predictor/canaryTrafficPercent"}]'
KUBECTL_ROLLBACK = '{"spec":{"predictor":{"canaryTrafficPercent":0}}}'

STATUS: dict[str, Any] = {
    "url": "http://sklearn-iris.serving.example.com",
    "components": {
        "predictor": {
            "latestCreatedRevision": "sklearn-iris-predictor-00002",
            "latestReadyRevision": "sklearn-iris-predictor-00002",
            "previousRolledoutRevision": "sklearn-iris-predictor-00001",
            "traffic": [
                {"latestRevision": True, "percent": 10, "tag": "latest",
                 "revisionName": "sklearn-iris-predictor-00002"},
                {"latestRevision": False, "percent": 90, "tag": "prev",
                 "revisionName": "sklearn-iris-predictor-00001"},
            ],
        }
    },
    "conditions": [
        {"type": "IngressReady", "status": "True"},
        {"type": "PredictorReady", "status": "True"},
        {"type": "Ready", "status": "False", "reason": "RevisionMissing",
         "message": "Configuration is waiting for a Revision to become ready."},
    ],
}


def _manifest(name: str, **spec_extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((MANIFESTS / f"{name}.yaml").read_text())
    doc["metadata"]["namespace"] = NS
    for component, fields in spec_extra.items():
        doc["spec"][component].update(fields)
    return doc


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    state = FakeKube(token=TOKEN)
    sklearn = _manifest("sklearn-iris", predictor={"canaryTrafficPercent": 10})
    sklearn["status"] = copy.deepcopy(STATUS)
    state.put(sklearn)
    state.put(_manifest("iris-classifier"))
    _, server = start(state)
    yield state
    server.shutdown()
    server.server_close()


def _kubeconfig(path: Path, url: str, token: str = TOKEN) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": NS}}
        ],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def kubeconfig(fake: FakeKube, tmp_path: Path) -> Path:
    return _kubeconfig(tmp_path / "kubeconfig", fake.url)


@pytest.fixture
def services(kubeconfig: Path) -> InferenceServices:
    return connect(str(kubeconfig))


def _spec(fake: FakeKube, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = fake.objects[(NS, name)]["spec"]
    return spec


# --- the exact requests ------------------------------------------------------------------------


def test_canary_sends_the_documented_merge_patch(fake: FakeKube, services: InferenceServices):
    before = copy.deepcopy(_spec(fake, "sklearn-iris"))
    doc = services.set_canary("sklearn-iris", 20)
    [patch] = fake.patches()
    assert patch.path == f"{ISVC_PATH}/sklearn-iris"
    assert patch.content_type == "application/merge-patch+json"
    assert json.loads(patch.body) == json.loads(KUBECTL_CANARY_20)
    before["predictor"]["canaryTrafficPercent"] = 20
    assert _spec(fake, "sklearn-iris") == before == doc["spec"]
    assert doc["metadata"]["generation"] == 2


def test_canary_on_the_transformer(fake: FakeKube, services: InferenceServices):
    services.set_canary("iris-classifier", 30, "transformer")
    [patch] = fake.patches()
    assert patch.content_type == MERGE_PATCH
    assert json.loads(patch.body) == {"spec": {"transformer": {"canaryTrafficPercent": 30}}}
    assert _spec(fake, "iris-classifier")["transformer"]["canaryTrafficPercent"] == 30
    assert "canaryTrafficPercent" not in _spec(fake, "iris-classifier")["predictor"]


def test_promote_sends_the_documented_json_patch(fake: FakeKube, services: InferenceServices):
    doc = services.promote("sklearn-iris")
    [patch] = fake.patches()
    assert patch.path == f"{ISVC_PATH}/sklearn-iris"
    assert patch.content_type == "application/json-patch+json"
    assert json.loads(patch.body) == json.loads(KUBECTL_PROMOTE)
    assert _spec(fake, "sklearn-iris") == _manifest("sklearn-iris")["spec"] == doc["spec"]


def test_rollback_sets_zero(fake: FakeKube, services: InferenceServices):
    services.rollback("sklearn-iris")
    [patch] = fake.patches()
    assert patch.content_type == MERGE_PATCH
    assert json.loads(patch.body) == json.loads(KUBECTL_ROLLBACK)
    assert _spec(fake, "sklearn-iris")["predictor"]["canaryTrafficPercent"] == 0


def test_rollback_without_a_canary_says_so_and_patches_nothing(
    fake: FakeKube, services: InferenceServices
):
    with pytest.raises(KubeError, match=r"^nothing to roll back: iris-classifier has no canary"):
        services.rollback("iris-classifier")
    assert fake.patches() == []


def test_promote_without_a_canary_says_so(fake: FakeKube, services: InferenceServices):
    with pytest.raises(KubeError, match=r"invalid \(422\).*missing path.*is a canary in progress"):
        services.promote("iris-classifier")


# --- what a real server refuses ----------------------------------------------------------------


def test_strategic_merge_gets_415(fake: FakeKube, services: InferenceServices):
    with pytest.raises(KubeError) as info:
        services.patch(
            "sklearn-iris", canary_patch(20), "application/strategic-merge-patch+json"
        )
    assert str(info.value).startswith("unsupported media type (415): the body of the request")
    assert "application/merge-patch+json" in str(info.value)


def test_json_patch_needs_its_content_type(fake: FakeKube, services: InferenceServices):
    # As application/json the server refuses the media type; as a merge patch the list is no
    # object. Either way nothing changes.
    with pytest.raises(KubeError, match=r"^unsupported media type \(415\)"):
        services.patch("sklearn-iris", promote_patch(), "application/json")
    with pytest.raises(KubeError, match=r"^invalid \(422\)"):
        services.patch("sklearn-iris", promote_patch(), MERGE_PATCH)
    assert _spec(fake, "sklearn-iris")["predictor"]["canaryTrafficPercent"] == 10


def test_client_rewrites_a_json_patch_content_type_for_an_object_body(
    fake: FakeKube, services: InferenceServices
):
    # Why promote sends a list: with a dict body the client switches to strategic merge.
    with pytest.raises(KubeError, match=r"^unsupported media type \(415\)"):
        services.patch("sklearn-iris", {"op": "remove"}, JSON_PATCH)
    assert fake.patches()[-1].content_type == "application/strategic-merge-patch+json"


def test_bad_value_gets_422_with_the_server_message(services: InferenceServices):
    body = {"spec": {"predictor": {"canaryTrafficPercent": "ten"}}}
    with pytest.raises(KubeError) as info:
        services.patch("sklearn-iris", body, MERGE_PATCH)
    assert str(info.value) == (
        'invalid (422): InferenceService.serving.kserve.io "sklearn-iris" is invalid: '
        'spec.predictor.canaryTrafficPercent: Invalid value: "str": '
        "spec.predictor.canaryTrafficPercent in body must be of type integer"
    )


def test_unknown_name_is_404(services: InferenceServices, kubeconfig: Path):
    with pytest.raises(KubeError, match="^InferenceService nope not found in namespace serving$"):
        services.set_canary("nope", 10)
    other = connect(str(kubeconfig), namespace="other")
    missing = "^InferenceService sklearn-iris not found in namespace other$"
    with pytest.raises(KubeError, match=missing):
        other.get("sklearn-iris")


def test_cluster_without_kserve(fake: FakeKube, tmp_path: Path):
    config = _kubeconfig(tmp_path / "kc", fake.url + "/elsewhere")
    with pytest.raises(KubeError, match=r"^serving.kserve.io/v1beta1 inferenceservices is not "
                       r"served by this cluster: is KServe installed\? \(404: the server"):
        connect(str(config)).list()


def test_wrong_token_is_401(fake: FakeKube, tmp_path: Path):
    config = _kubeconfig(tmp_path / "bad", fake.url, token="wrong")
    with pytest.raises(KubeError, match=r"^unauthorized \(401\): .*credentials: Unauthorized$"):
        connect(str(config)).get("sklearn-iris")


def test_unreachable_api(tmp_path: Path):
    config = _kubeconfig(tmp_path / "kc", "http://127.0.0.1:9")
    with pytest.raises(KubeError, match=r"^cannot reach the Kubernetes API at http://127.0.0.1:9"):
        connect(str(config)).get("sklearn-iris")


# --- configuration ---------------------------------------------------------------------------


def test_namespace_from_context_then_flag(kubeconfig: Path):
    assert connect(str(kubeconfig)).namespace == NS
    assert connect(str(kubeconfig), "other").namespace == "other"


def test_kubeconfig_from_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert connect().get("sklearn-iris")["metadata"]["name"] == "sklearn-iris"


def test_no_configuration_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(KubeError, match="no Kubernetes configuration: pass --kubeconfig"):
        connect()
    with pytest.raises(KubeError, match="no such file"):
        connect(str(tmp_path / "missing"))


# --- percent validation ----------------------------------------------------------------------


@pytest.mark.parametrize("percent", [-1, 101, 2.5, True, "10"])
def test_canary_patch_refuses_bad_percent(percent: Any):
    with pytest.raises(ValueError, match="from 0 to 100"):
        canary_patch(percent)


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("10", 10), ("100", 100)])
def test_parse_percent(text: str, value: int):
    assert parse_percent(text) == value


def test_unknown_component_refused():
    with pytest.raises(ValueError, match="component must be one of predictor, transformer"):
        promote_patch("explainer")


# --- the CLI ---------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    "argv",
    [["canary", "sklearn-iris", "--percent", "10"], ["promote", "sklearn-iris"],
     ["rollback", "sklearn-iris"], ["status", "sklearn-iris"], ["delete", "sklearn-iris"]],
)
def test_cli_without_kube_talks_to_the_local_platform_not_the_cluster(
    argv: list[str], fake: FakeKube, capsys: pytest.CaptureFixture[str]
):
    nobody = f"http://127.0.0.1:{free_port()}"
    assert _run([*argv, "--admin-url", nobody, "--token", "t"]) == 1
    assert f"cannot reach the platform at {nobody}" in capsys.readouterr().err
    assert fake.requests == []


@pytest.mark.parametrize("percent", ["101", "-1", "ten", "2.5"])
def test_cli_percent_out_of_range_exits_2(
    percent: str, kubeconfig: Path, fake: FakeKube, capsys: pytest.CaptureFixture[str]
):
    kube = ["--kube", "--kubeconfig", str(kubeconfig)]
    assert _run(["canary", "sklearn-iris", "--percent", percent, *kube]) == 2
    assert "must be an integer from 0 to 100" in capsys.readouterr().err
    assert fake.requests == []


def test_cli_canary_rollback_promote(
    fake: FakeKube, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
):
    kube = ["--kube", "--kubeconfig", str(kubeconfig)]
    assert _run(["canary", "sklearn-iris", "--percent", "20", *kube]) == 0
    assert "predictor: canaryTrafficPercent 20 (spec)" in capsys.readouterr().out
    assert _run(["rollback", "sklearn-iris", *kube]) == 0
    assert "predictor: canaryTrafficPercent 0 (spec)" in capsys.readouterr().out
    assert _run(["promote", "sklearn-iris", *kube]) == 0
    assert "predictor: canaryTrafficPercent - (spec)" in capsys.readouterr().out
    # After a promote there is no canary to roll back: exit 1, saying why, patching nothing.
    assert _run(["rollback", "sklearn-iris", *kube]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modelserve: error: nothing to roll back: sklearn-iris has no canary")
    sent = [(p.content_type, json.loads(p.body)) for p in fake.patches()]
    assert sent == [
        (MERGE_PATCH, json.loads(KUBECTL_CANARY_20)),
        (MERGE_PATCH, json.loads(KUBECTL_ROLLBACK)),
        (JSON_PATCH, json.loads(KUBECTL_PROMOTE)),
    ]
    assert _run(["canary", "iris-classifier", "--percent", "5", "--component", "transformer",
                 *kube]) == 0
    assert json.loads(fake.patches()[-1].body) == canary_patch(5, "transformer")


def test_cli_api_errors_exit_1(kubeconfig: Path, capsys: pytest.CaptureFixture[str]):
    kube = ["--kube", "--kubeconfig", str(kubeconfig)]
    assert _run(["canary", "nope", "--percent", "10", *kube]) == 1
    err = capsys.readouterr().err
    assert err == "modelserve: error: InferenceService nope not found in namespace serving\n"
    assert _run(["promote", "iris-classifier", *kube]) == 1
    assert "invalid (422)" in capsys.readouterr().err
    assert _run(["status", "sklearn-iris", *kube, "--namespace", "elsewhere"]) == 1


def test_cli_status(kubeconfig: Path, capsys: pytest.CaptureFixture[str]):
    assert _run(["status", "sklearn-iris", "--kube", "--kubeconfig", str(kubeconfig)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sklearn-iris  (namespace serving)",
        "  url: http://sklearn-iris.serving.example.com",
        "  predictor: canaryTrafficPercent 10 (spec)",
        "     10%  sklearn-iris-predictor-00002  (tag latest, latestRevision)",
        "     90%  sklearn-iris-predictor-00001  (tag prev)",
        "    latestReadyRevision: sklearn-iris-predictor-00002",
        "    latestCreatedRevision: sklearn-iris-predictor-00002",
        "    previousRolledoutRevision: sklearn-iris-predictor-00001",
        "  conditions: IngressReady=True, PredictorReady=True, Ready=False (RevisionMissing: "
        "Configuration is waiting for a Revision to become ready.)",
    ]


def test_cli_status_of_all(kubeconfig: Path, capsys: pytest.CaptureFixture[str]):
    assert _run(["status", "--kube", "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "iris-classifier  (namespace serving)" in out
    assert "  transformer: canaryTrafficPercent - (spec)" in out
    assert "  status: none reported yet" in out
    assert "sklearn-iris  (namespace serving)" in out
