"""The XGBoost and LightGBM servers load only their data formats: a pickle (which would run
code as it loads) is refused, by name, and the server does not start."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest


class _RunsCode:
    """What a hostile pickle holds: unpickling it would call os.system."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("backend", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("filename", ["model.pkl", "model.joblib", "model.bst.pickle"])
def test_a_pickle_is_refused_and_never_loaded(tmp_path: Path, backend: str, filename: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / filename).write_bytes(pickle.dumps(_RunsCode()))
    completed = subprocess.run(
        [sys.executable, "-m", f"servers.{backend}", "--model_name=iris",
         f"--model_dir={model_dir}", "--http_port=0", "--grpc_port=0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert completed.returncode == 1
    assert "could not load the model" in completed.stderr
    assert filename in completed.stderr and "does not load" in completed.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("backend", ["xgboost", "lightgbm"])
def test_a_named_pickle_file_is_refused_too(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_RunsCode()))
    completed = subprocess.run(
        [sys.executable, "-m", f"servers.{backend}", "--model_name=iris", f"--model_dir={path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert completed.returncode == 1 and "not a model file this server loads" in completed.stderr
    assert not (tmp_path / "PWNED").exists()
