"""Models fetched over http(s) with KServe's storage, from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from servers.errors import ModelLoadError
from servers.sklearn.model import SKLearnPredictor


@pytest.fixture()
def file_server(iris_dir: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(iris_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_model_downloads_from_http_uri(file_server: str) -> None:
    model = SKLearnPredictor("iris", f"{file_server}/model.joblib")
    assert model.load()
    assert model.n_features == 4
    result = asyncio.run(model.infer_v1({"instances": [[5.0, 3.4, 1.5, 0.2]]}))
    assert result == {"predictions": [0]}
    outputs = asyncio.run(
        model.infer_v2({"x": np.array([[6.7, 3.0, 5.2, 2.3]])}, {}, ["predict_proba"])
    )
    assert outputs["predict_proba"][0].shape == (1, 3)


def test_missing_http_model_is_a_load_error(file_server: str) -> None:
    model = SKLearnPredictor("iris", f"{file_server}/nothing-here.joblib")
    with pytest.raises(ModelLoadError, match="could not download"):
        model.load()
