"""The backend registry: every servers/<name>/backend.py is found, its declaration is
coherent with the package, pyproject's extras and KServe's runtime names, and the registry's
command line (what the Dockerfile's `backend` target runs) names extras and starts backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.controlplane.policy import ENTRY_POINTS, PICKLE_SUFFIXES
from servers.backends import backend_named, backends, entry_points
from tests.support import ROOT

SERVERS = ROOT / "servers"


def test_every_backend_folder_is_found_under_its_own_name() -> None:
    declared = {b.name for b in backends()}
    folders = {p.parent.name for p in SERVERS.glob("*/backend.py")}
    assert declared == folders >= {"sklearn", "tensorflow", "triton", "xgboost", "lightgbm"}
    runtimes = [b.runtime for b in backends()]
    assert len(set(runtimes)) == len(runtimes)
    assert {"kserve-xgbserver", "kserve-lgbserver", "kserve-sklearnserver"} <= set(runtimes)


def test_entry_points_are_modules_and_run_without_an_opt_in() -> None:
    for module in entry_points():
        assert importlib.util.find_spec(module) is not None, module
    assert ENTRY_POINTS == entry_points()
    assert {"servers.xgboost", "servers.lightgbm", "servers.transformers.tabular"} <= ENTRY_POINTS


def test_declared_extras_are_pyprojects() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for backend in backends():
        assert backend.extra is None or backend.extra in extras, backend.name


def test_only_pickles_run_code() -> None:
    assert PICKLE_SUFFIXES == (".joblib", ".pickle", ".pkl")
    for name in ("xgboost", "lightgbm"):
        backend = backend_named(name)
        assert backend.artifacts and not any(a.runs_code for a in backend.artifacts)
        assert backend.artifact_of(Path("model.pkl")) is None
    assert backend_named("xgboost").artifact_of(Path("model.ubj")) is not None
    assert backend_named("lightgbm").artifact_of(Path("model.txt")) is not None


def test_an_unknown_backend_name_is_refused() -> None:
    with pytest.raises(KeyError, match="known"):
        backend_named("paddle")


def _registry(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> (
        subprocess.CompletedProcess[str]):
    return subprocess.run([sys.executable, "-m", "servers.backends", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_command_line_names_extras_and_lists_backends() -> None:
    assert _registry("extra", "xgboost").stdout.strip() == "xgboost"
    assert _registry("extra", "sklearn").stdout.strip() == "sklearn"
    assert _registry("extra", "triton").stdout.strip() == "triton-client"
    unknown = _registry("extra", "paddle")
    assert unknown.returncode == 2 and "no backend 'paddle'" in unknown.stderr
    listed = _registry("list").stdout
    assert "kserve-lgbserver\tservers.lightgbm" in listed


def test_run_starts_the_backend_the_environment_names(tmp_path: Path) -> None:
    # The image's CMD: the backend's own server starts (and refuses a pickle, as it should).
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04N.")
    started = _registry("run", f"--model_dir={tmp_path}", "--model_name=m",
                        env={"MODELSERVE_BACKEND": "lightgbm"})
    assert started.returncode == 1
    assert "no model file (model.txt)" in started.stderr and "model.pkl" in started.stderr
    missing = _registry("run", env={"MODELSERVE_BACKEND": "nope"})
    assert missing.returncode == 2 and "MODELSERVE_BACKEND" in missing.stderr
