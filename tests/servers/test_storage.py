"""Model artifacts: found, loaded by format, and refused with a clear ModelLoadError."""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servers.backends import backend_named
from servers.errors import ModelLoadError
from servers.sklearn.artifacts import load_estimator
from servers.storage import (
    check_pickle_origin,
    find_artifact,
    read_metadata,
    resolve_model_dir,
)

X = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [0.1, 0.2]])
Y = np.array([0, 1, 0, 1, 1, 0])
CUSTOM_MODULE = "modelserve_test_custom_model"
SKLEARN = backend_named("sklearn")


@pytest.fixture(scope="module")
def model() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)


def _save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".skops":
        sio.dump(model, path)
    elif path.suffix == ".joblib":
        joblib.dump(model, path)
    else:
        path.write_bytes(pickle.dumps(model))
    return path


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A model class skops does not know, importable from a module written into tmp_path."""
    source = tmp_path / "src" / f"{CUSTOM_MODULE}.py"
    source.parent.mkdir()
    source.write_text(
        "class Doubler:\n"
        "    def __init__(self, factor=2.0):\n"
        "        self.factor = factor\n"
        "\n"
        "    def predict(self, x):\n"
        "        return [v * self.factor for v in x]\n"
    )
    monkeypatch.syspath_prepend(str(source.parent))
    yield importlib.import_module(CUSTOM_MODULE)
    sys.modules.pop(CUSTOM_MODULE, None)


@pytest.mark.parametrize("filename", ["model.joblib", "model.pkl", "model.pickle", "model.skops"])
def test_each_format_loads_a_working_model(model: Any, tmp_path: Path, filename: str) -> None:
    path = _save(model, tmp_path / filename)
    artifact = load_estimator(str(tmp_path))
    assert artifact.path == path
    assert artifact.metadata == {}
    np.testing.assert_array_equal(artifact.model.predict(X), model.predict(X))


def test_metadata_beside_the_model_is_read(model: Any, tmp_path: Path) -> None:
    _save(model, tmp_path / "model.joblib")
    metadata = {"feature_names": ["a", "b"], "target_names": ["no", "yes"]}
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    assert load_estimator(str(tmp_path)).metadata == metadata


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object"), ('"names"', "JSON object")],
)
def test_bad_metadata_is_a_load_error(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "metadata.json").write_text(content)
    with pytest.raises(ModelLoadError, match=match):
        read_metadata(tmp_path)


def test_no_metadata_is_an_empty_dict(tmp_path: Path) -> None:
    assert read_metadata(tmp_path) == {}


def test_a_directory_without_a_model_points_at_build_models(tmp_path: Path) -> None:
    (tmp_path / "metadata.json").write_text("{}")
    (tmp_path / "model.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="modelserve build-models") as caught:
        load_estimator(str(tmp_path))
    assert caught.value.http_status == 503


def test_two_model_files_are_ambiguous(model: Any, tmp_path: Path) -> None:
    _save(model, tmp_path / "a.joblib")
    _save(model, tmp_path / "b.skops")
    with pytest.raises(ModelLoadError, match="more than one model file.*a.joblib, b.skops"):
        load_estimator(str(tmp_path))


def test_a_missing_path_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_estimator(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("filename", ["model.joblib", "model.pkl", "model.skops"])
def test_a_corrupt_model_file_is_a_load_error(tmp_path: Path, filename: str) -> None:
    (tmp_path / filename).write_bytes(b"\x80\x04 certainly not a model")
    with pytest.raises(ModelLoadError, match=filename):
        load_estimator(str(tmp_path))


def test_a_model_file_path_is_used_directly(model: Any, tmp_path: Path) -> None:
    path = _save(model, tmp_path / "nested" / "model.pkl")
    _save(model, tmp_path / "nested" / "other.joblib")  # ignored: the file was named
    assert find_artifact(path, SKLEARN.artifacts) == path
    assert load_estimator(str(path)).path == path


def test_file_uri_is_a_local_path(model: Any, tmp_path: Path) -> None:
    path = _save(model, tmp_path / "model.skops")
    assert resolve_model_dir(f"file://{tmp_path}") == tmp_path
    assert load_estimator(f"file://{tmp_path}").path == path


def test_a_missing_file_uri_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_dir(f"file://{tmp_path}/nowhere")


def test_an_unknown_storage_scheme_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="could not download"):
        resolve_model_dir("unknown-scheme://bucket/model")


def test_skops_refuses_untrusted_custom_types(custom_module: ModuleType, tmp_path: Path) -> None:
    _save(custom_module.Doubler(3.0), tmp_path / "model.skops")
    with pytest.raises(ModelLoadError, match=f"{CUSTOM_MODULE}.Doubler.*--trust_type"):
        load_estimator(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not trusted"):
        load_estimator(str(tmp_path), trusted_types=["some.other.Type"])


def test_skops_loads_custom_types_once_trusted(custom_module: ModuleType, tmp_path: Path) -> None:
    _save(custom_module.Doubler(3.0), tmp_path / "model.skops")
    artifact = load_estimator(str(tmp_path), trusted_types=[f"{CUSTOM_MODULE}.Doubler"])
    assert type(artifact.model).__name__ == "Doubler"
    assert artifact.model.predict([1.0, 2.0]) == [3.0, 6.0]


def test_sklearn_types_need_no_trust_in_skops(model: Any, tmp_path: Path) -> None:
    _save(model, tmp_path / "model.skops")
    assert load_estimator(str(tmp_path), trusted_types=[]).model.predict(X[:1]).shape == (1,)


@pytest.mark.parametrize(
    ("uri", "filename", "trusted", "refused"),
    [
        ("https://example.com/iris", "model.joblib", False, True),
        ("s3://bucket/iris", "model.pkl", False, True),
        ("gs://bucket/iris", "model.pickle", False, True),
        ("hf://org/iris", "model.joblib", False, True),
        ("https://example.com/iris", "model.joblib", True, False),
        ("https://example.com/iris", "model.skops", False, False),
        ("/mnt/models", "model.joblib", False, False),
        ("file:///mnt/models", "model.pkl", False, False),
    ],
)
def test_pickles_from_remote_uris_are_refused_unless_trusted(
    uri: str, filename: str, trusted: bool, refused: bool
) -> None:
    # The decision alone; a real download over http is in test_storage_download.py.
    path = Path("/tmp/download") / filename
    artifact = SKLEARN.artifact_of(path)
    assert artifact is not None
    if not refused:
        check_pickle_origin(uri, path, artifact, trusted)
        return
    with pytest.raises(ModelLoadError) as caught:
        check_pickle_origin(uri, path, artifact, trusted)
    message = str(caught.value)
    assert uri in message and ".skops" in message
    assert "MODELSERVE_TRUST_REMOTE_PICKLES=1" in message and "--trust_remote_pickles" in message
    assert caught.value.http_status == 503


def test_a_remote_uri_without_the_storage_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The runtime images leave kserve-storage out (KServe's storage initializer fetches
    # storageUri into /mnt/models in a cluster): a URI passed anyway fails with the fix.
    monkeypatch.setitem(sys.modules, "kserve_storage", None)  # import now raises ImportError
    with pytest.raises(ModelLoadError, match=r"`storage` extra.*--model_dir"):
        resolve_model_dir("s3://bucket/iris")
