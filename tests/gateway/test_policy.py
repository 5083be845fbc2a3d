"""The launch and storage policy: what a spec may run and read, checked while it is planned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.controlplane.components import plan_service
from gateway.controlplane.manifests import parse_service
from gateway.controlplane.policy import (
    ENTRY_POINTS,
    LaunchPolicy,
    PolicyRefused,
    read_allowed_commands,
)


def _isvc(command: list[str], args: list[str] | None = None,
          env: dict[str, str] | None = None) -> Any:
    container: dict[str, Any] = {"name": "c", "image": "x", "command": command,
                                 "args": args or []}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return parse_service({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "svc"},
        "spec": {"predictor": {"containers": [container]}},
    }, "test")


def _ports() -> Any:
    numbers = iter(range(20000, 20100))
    return lambda: next(numbers)


def _model(root: Path) -> Path:
    (root / "iris").mkdir(parents=True, exist_ok=True)
    return root / "iris"


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_our_entry_points_run(module: str, tmp_path: Path) -> None:
    _model(tmp_path)
    isvc = _isvc(["python3", "-m", module], [f"--model_dir={tmp_path}/iris"])
    [plan] = plan_service(isvc, tmp_path, _ports())
    assert plan.argv[1:3] == ("-m", module)


@pytest.mark.parametrize(
    "command",
    [
        ["sh", "-c", "touch /tmp/x"],
        ["python", "-c", "print(1)"],
        ["python", "-m", "http.server"],
        ["python", "-X", "dev", "-m", "servers.sklearn"],
        ["python", "-m", "servers.sklearn", "extra"],
        ["/usr/bin/env", "python", "-m", "servers.sklearn"],
        ["bash"],
    ],
)
def test_any_other_command_is_refused_by_default(command: list[str], tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused, match="launch policy.*--allow-custom-containers"):
        plan_service(_isvc(command), tmp_path, _ports())


def test_the_operator_may_allow_custom_commands(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.write_text("# ours\n/usr/bin/env python3 -m mytool\n")
    policy = LaunchPolicy(models_roots=(tmp_path,), allowed_commands=read_allowed_commands(allowed))
    [plan] = plan_service(_isvc(["/usr/bin/env", "python3", "-m", "mytool", "--x"]), tmp_path,
                          _ports(), policy=policy)
    assert plan.argv[:4] == ("/usr/bin/env", "python3", "-m", "mytool")
    with pytest.raises(PolicyRefused):
        plan_service(_isvc(["/usr/bin/env", "python3", "-m", "other"]), tmp_path, _ports(),
                     policy=policy)
    anything = LaunchPolicy(models_roots=(tmp_path,), allow_custom_containers=True)
    [plan] = plan_service(_isvc(["sh", "-c", "true"]), tmp_path, _ports(), policy=anything)
    assert plan.argv[:3] == ("sh", "-c", "true")


@pytest.mark.parametrize("name", ["PYTHONPATH", "LD_PRELOAD", "PATH", "PYTHONSTARTUP",
                                  "MODELSERVE_TRUST_REMOTE_PICKLES"])
def test_code_loading_environment_is_refused(name: str, tmp_path: Path) -> None:
    isvc = _isvc(["python", "-m", "servers.sklearn"], env={name: "/tmp"})
    with pytest.raises(PolicyRefused, match=name):
        plan_service(isvc, tmp_path, _ports())


@pytest.mark.parametrize("flag", ["--log_config_file=/tmp/x.yaml", "--bind_address=0.0.0.0"])
def test_platform_owned_and_config_loading_flags_are_refused(flag: str, tmp_path: Path) -> None:
    with pytest.raises(PolicyRefused):
        plan_service(_isvc(["python", "-m", "servers.sklearn"], [flag]), tmp_path, _ports())


def test_abbreviated_owned_flags_are_refused(tmp_path: Path) -> None:
    # argparse would read --model_d as --model_dir, past the storage policy.
    with pytest.raises(PolicyRefused, match="abbreviates"):
        plan_service(_isvc(["python", "-m", "servers.sklearn"], ["--model_d=/etc"]), tmp_path,
                     _ports())


def test_the_platform_environment_wins_over_the_manifest(tmp_path: Path) -> None:
    _model(tmp_path)
    isvc = _isvc(["python", "-m", "servers.sklearn"], [f"--model_dir={tmp_path}/iris"],
                 env={"MODELSERVE_BIND_ADDRESS": "0.0.0.0"})
    [plan] = plan_service(isvc, tmp_path, _ports(),
                          platform_env={"MODELSERVE_BIND_ADDRESS": "127.0.0.1"})
    assert plan.env["MODELSERVE_BIND_ADDRESS"] == "127.0.0.1"
    assert plan.env["MODELSERVE_TRUST_REMOTE_PICKLES"] == "0"


def test_storage_inside_a_models_root(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _model(second)
    first.mkdir()
    policy = LaunchPolicy(models_roots=(first, second))
    # pvc:// is read from the first root that has the path.
    assert policy.local_path("pvc://claim/iris", "w") == str(second / "iris")
    assert policy.local_path(f"file://{second}/iris", "w") == str(second / "iris")
    assert policy.local_path(str(second / "iris"), "w") == str(second / "iris")


@pytest.mark.parametrize("uri", ["/etc", "file:///etc/passwd", "file:///no/such/dir",
                                 "pvc://claim/../../etc", "relative/../../x", "file://"])
def test_storage_outside_the_roots_is_refused_in_the_same_words(uri: str, tmp_path: Path) -> None:
    policy = LaunchPolicy(models_roots=(tmp_path,))
    with pytest.raises(PolicyRefused) as refused:
        policy.local_path(uri, "svc predictor")
    assert str(refused.value).replace(repr(uri), "URI") == (
        f"svc predictor: storage URI is outside the models roots ({tmp_path}): refused by the "
        "storage policy"
    )


def test_a_symlink_out_of_a_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(PolicyRefused, match="outside the models roots"):
        LaunchPolicy(models_roots=(root,)).local_path("pvc://claim/link", "w")


def test_remote_storage_needs_the_operator_and_pickles_need_trust(tmp_path: Path) -> None:
    strict = LaunchPolicy(models_roots=(tmp_path,))
    with pytest.raises(PolicyRefused, match="--allow-remote-storage"):
        strict.local_path("s3://bucket/model", "w")
    remote = LaunchPolicy(models_roots=(tmp_path,), allow_remote_storage=True)
    assert remote.local_path("s3://bucket/model", "w") == "s3://bucket/model"
    assert remote.local_path("https://h/model.skops", "w") == "https://h/model.skops"
    for uri in ("https://h/model.joblib", "gs://b/m.pkl", "https://h/m.PKL?x=1"):
        with pytest.raises(PolicyRefused, match="skops.*--trust-remote-pickles"):
            remote.local_path(uri, "w")
    trusted = LaunchPolicy(models_roots=(tmp_path,), allow_remote_storage=True,
                           trust_remote_pickles=True)
    assert trusted.local_path("https://h/model.joblib", "w") == "https://h/model.joblib"
    assert trusted.component_env() == {"MODELSERVE_TRUST_REMOTE_PICKLES": "1"}
