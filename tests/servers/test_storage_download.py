"""Models fetched over http(s) with KServe's storage, from a real HTTP server on 127.0.0.1.

A pickle (.joblib) that came from a URI is refused unless remote pickles are trusted; a .skops
loads without that trust.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio

from servers.errors import ModelLoadError
from servers.sklearn.model import SKLearnPredictor
from tests.support import ROOT, run_server

IRIS_ROW = [5.0, 3.4, 1.5, 0.2]


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def file_server(iris_dir: Path) -> Iterator[str]:
    """The demo iris model (model.joblib, a pickle) over http."""
    with serve_directory(iris_dir) as url:
        yield url


@pytest.fixture()
def skops_server(iris_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The same estimator saved as model.skops, over http."""
    sio.dump(joblib.load(iris_dir / "model.joblib"), tmp_path / "model.skops")
    with serve_directory(tmp_path) as url:
        yield url


def test_a_downloaded_pickle_is_refused_by_default(file_server: str) -> None:
    model = SKLearnPredictor("iris", f"{file_server}/model.joblib")
    with pytest.raises(ModelLoadError) as caught:
        model.load()
    message = str(caught.value)
    assert "model.joblib" in message and ".skops" in message
    assert "MODELSERVE_TRUST_REMOTE_PICKLES=1" in message and "--trust_remote_pickles" in message
    assert model.estimator is None


def test_a_downloaded_pickle_loads_when_trusted(file_server: str) -> None:
    model = SKLearnPredictor("iris", f"{file_server}/model.joblib", trust_remote_pickles=True)
    assert model.load()
    assert model.n_features == 4
    result = asyncio.run(model.infer_v1({"instances": [IRIS_ROW]}))
    assert result == {"predictions": [0]}
    outputs = asyncio.run(
        model.infer_v2({"x": np.array([[6.7, 3.0, 5.2, 2.3]])}, {}, ["predict_proba"])
    )
    assert outputs["predict_proba"][0].shape == (1, 3)


def test_a_downloaded_skops_needs_no_trust(skops_server: str) -> None:
    model = SKLearnPredictor("iris", f"{skops_server}/model.skops")
    assert model.load()
    assert asyncio.run(model.infer_v1({"instances": [IRIS_ROW]})) == {"predictions": [0]}


def test_missing_http_model_is_a_load_error(file_server: str) -> None:
    model = SKLearnPredictor("iris", f"{file_server}/nothing-here.joblib")
    with pytest.raises(ModelLoadError, match="could not download"):
        model.load()


def test_the_server_refuses_a_remote_pickle_and_says_how_to_opt_in(file_server: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "servers.sklearn", "--model_name=iris",
         f"--model_dir={file_server}/model.joblib"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert "MODELSERVE_TRUST_REMOTE_PICKLES=1" in completed.stderr


def test_the_environment_opts_the_server_in(
    file_server: str, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSERVE_TRUST_REMOTE_PICKLES", "1")
    args = ["--model_name=iris", f"--model_dir={file_server}/model.joblib"]
    with run_server("servers.sklearn", args, logs) as server:
        assert server.process.poll() is None  # ready: the model loaded
