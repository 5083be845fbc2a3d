"""The in-process SavedModel backend: versions, SignatureDefs and merged graph calls."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from servers.batching import BatchSettings
from servers.errors import InvalidInput, ModelLoadError
from servers.tensorflow.savedmodel import SavedModelBackend, find_version, read_signatures
from servers.tensorflow.signatures import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    check_inputs,
)


@pytest.fixture(scope="module")
def backend(digits_tf_dir: Path) -> SavedModelBackend:
    return SavedModelBackend.load("tf-digits", str(digits_tf_dir), BatchSettings(max_batch_size=64))


def test_signatures_and_tf_serving_method_names(digits_tf_dir: Path) -> None:
    signatures = read_signatures(digits_tf_dir / "1")
    assert set(signatures) == {"serving_default", "classify", "regress"}
    default = signatures["serving_default"]
    assert default.method_name == PREDICT_METHOD
    assert default.inputs["images"].shape == (None, 8, 8)
    assert default.inputs["images"].dtype == np.float32
    assert default.outputs["digit"].datatype == "INT64"
    assert default.batchable
    assert signatures["classify"].method_name == CLASSIFY_METHOD
    assert signatures["classify"].inputs["inputs"].datatype == "BYTES"
    assert signatures["regress"].method_name == REGRESS_METHOD


def test_the_highest_numeric_version_is_served(digits_tf_dir: Path, tmp_path: Path) -> None:
    for version in ("1", "7", "12"):
        shutil.copytree(digits_tf_dir / "1", tmp_path / version)
    (tmp_path / "99-not-a-version").mkdir()
    (tmp_path / "30").mkdir()  # no saved_model.pb: not a version
    assert find_version(tmp_path) == (tmp_path / "12", 12)
    assert find_version(tmp_path / "7") == (tmp_path / "7", 7)


def test_a_directory_without_a_saved_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no SavedModel"):
        find_version(tmp_path)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"\xff not a protobuf")
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        read_signatures(tmp_path / "1")


def test_concurrent_requests_are_merged_into_fewer_graph_calls(
    backend: SavedModelBackend,
) -> None:
    images = load_digits().images[:24].astype(np.float32)
    expected = backend.call("serving_default", {"images": images}, ["digit"])["digit"]

    async def burst() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(
            *(backend.run("serving_default", {"images": images[i : i + 1]}, ["digit"])
              for i in range(len(images)))
        )

    before = backend.calls
    results = asyncio.run(burst())
    calls = backend.calls - before
    assert [int(r["digit"][0]) for r in results] == expected.tolist()
    assert all(r["digit"].shape == (1,) for r in results)
    assert calls < len(images)  # merged: the first call runs alone, the rest queue behind it


def test_without_batching_every_request_is_its_own_call(digits_tf_dir: Path) -> None:
    backend = SavedModelBackend.load(
        "tf-digits", str(digits_tf_dir), BatchSettings(max_batch_size=1)
    )
    images = load_digits().images[:6].astype(np.float32)

    async def burst() -> None:
        await asyncio.gather(
            *(backend.run("serving_default", {"images": images[i : i + 1]}, ["digit"])
              for i in range(6))
        )

    before = backend.calls
    asyncio.run(burst())
    assert backend.calls - before == 6


def test_check_inputs_names_the_problem(backend: SavedModelBackend) -> None:
    signature = backend.signatures["serving_default"]
    good = np.zeros((2, 8, 8), dtype=np.float32)
    assert check_inputs(signature, {"images": good})["images"] is good
    with pytest.raises(InvalidInput, match="expects FP32"):
        check_inputs(signature, {"images": good.astype(np.float64)})
    with pytest.raises(InvalidInput, match=r"missing \['images'\]"):
        check_inputs(signature, {})
    with pytest.raises(InvalidInput, match="NaN"):
        check_inputs(signature, {"images": np.full((1, 8, 8), np.nan, dtype=np.float32)})
    nan = np.full((1, 8, 8), np.nan, dtype=np.float32)
    assert check_inputs(signature, {"images": nan}, allow_nan=True)["images"] is nan
