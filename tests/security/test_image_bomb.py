"""Image bombs against a real image transformer in front of a real sklearn digits predictor.

64 black 4000x4000 PNGs are a 1.3 MB v1 body that decodes to 1.02 G pixels: 5.7 CPU-s of the
transformer before it had a request budget. Now it is refused from the images' headers, over
REST and gRPC, and a request that is abandoned while decoding stops before its next image.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import numpy as np
import psutil
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from tests.support import ServerProcess, run_server

pytestmark = pytest.mark.e2e

NAME = "digits"
METADATA = {
    "target_names": [str(i) for i in range(10)],
    "image": {"height": 8, "width": 8, "max_value": 16.0},
    "input": {"name": "input-0", "datatype": "FP64", "shape": [-1, 64]},
    "scores_output": "predict_proba",
}
BUDGET = 64 * 1024 * 1024  # --max_request_pixels' default


def black_png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (size, size)).save(out, "PNG")
    return out.getvalue()


BOMB = black_png(4000)  # ~16 KB, 16 M pixels: under the per-image limit of 16,777,216
DIGIT = black_png(8)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    estimator = LogisticRegression(max_iter=2000).fit(digits.data, digits.target)
    joblib.dump(estimator, directory / "model.joblib")
    (directory / "metadata.json").write_text(json.dumps(METADATA))
    return directory


@pytest.fixture(scope="module")
def predictor(digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    args = [f"--model_name={NAME}", f"--model_dir={digits_dir}"]
    with run_server("servers.sklearn", args, logs) as server:
        yield server


def _transformer(
    predictor: ServerProcess, digits_dir: Path, logs: Path, *extra: str
) -> Iterator[ServerProcess]:
    args = [
        f"--model_name={NAME}",
        f"--model_dir={digits_dir}",
        f"--predictor_host={predictor.grpc_target}",
        "--predictor_protocol=grpc-v2",
        *extra,
    ]
    with run_server("servers.transformers.image", args, logs) as server:
        yield server


@pytest.fixture(scope="module")
def transformer(predictor: ServerProcess, digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    """Default limits: 64 images and 64 Mi pixels per request."""
    yield from _transformer(predictor, digits_dir, logs)


@pytest.fixture(scope="module")
def unbudgeted(predictor: ServerProcess, digits_dir: Path, logs: Path) -> Iterator[ServerProcess]:
    """No pixel budget to speak of, and a 2 s decode timeout: the bomb gets decoded."""
    yield from _transformer(
        predictor, digits_dir, logs, "--max_request_pixels=2000000000", "--decode_timeout_s=2"
    )


def v1_predict(server: ServerProcess, images: list[bytes]) -> httpx.Response:
    body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
    return httpx.post(f"{server.http_url}/v1/models/{NAME}:predict", json=body, timeout=60)


def v2_rest_infer(server: ServerProcess, images: list[bytes]) -> httpx.Response:
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(images)],
        "data": [base64.b64encode(i).decode() for i in images],
    }
    url = f"{server.http_url}/v2/models/{NAME}/infer"
    return httpx.post(url, json={"inputs": [tensor]}, timeout=60)


def grpc_infer(server: ServerProcess, images: list[bytes], timeout: float = 60) -> Any:
    async def infer() -> Any:
        tensor = InferInput("image", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
        client = InferenceGRPCClient(server.grpc_target)
        try:
            return await client.infer(InferRequest(NAME, [tensor]), timeout=timeout)
        finally:
            await client.close()

    return asyncio.run(infer())


def cpu_seconds(server: ServerProcess) -> float:
    times = psutil.Process(server.process.pid).cpu_times()
    return float(times.user + times.system)


def assert_still_answers(server: ServerProcess) -> None:
    response = v1_predict(server, [DIGIT])
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


BUDGET_MESSAGE = f"instances 0 to 4 hold 80000000 pixels, over the limit of {BUDGET} pixels"


@pytest.mark.parametrize("send", [v1_predict, v2_rest_infer], ids=["v1", "v2-rest"])
def test_png_bomb_is_refused_over_rest_before_decoding(
    transformer: ServerProcess, send: Any
) -> None:
    assert_still_answers(transformer)  # the predictor's metadata fetched, the server warm
    before = cpu_seconds(transformer)
    response = send(transformer, [BOMB] * 64)
    spent = cpu_seconds(transformer) - before
    assert response.status_code == 413, response.text
    assert BUDGET_MESSAGE in response.json()["error"]
    # Decoding the 64 images costs ~5.7 CPU-s (measured); reading base64 and 5 PNG headers, a
    # few ms. CPU time, not wall time: a busy machine slows the test, it does not fail it.
    assert spent < 1.0
    assert_still_answers(transformer)


def test_png_bomb_is_refused_over_grpc(transformer: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(transformer, [BOMB] * 64)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert BUDGET_MESSAGE in str(refused.value.details())
    assert_still_answers(transformer)


def test_batch_over_the_limit_is_refused(transformer: ServerProcess) -> None:
    message = "the batch has 65 images, over the limit of 64 images per request"
    response = v1_predict(transformer, [DIGIT] * 65)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == message
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(transformer, [DIGIT] * 65)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == message
    assert v1_predict(transformer, [DIGIT] * 64).status_code == 200


def test_grpc_deadline_stops_decoding_before_the_next_image(unbudgeted: ServerProcess) -> None:
    # The client gives up after 0.3 s of the ~5.7 s the 64 images take: grpc.aio cancels the
    # handler, and the decoding thread stops before its next image.
    with pytest.raises(grpc.RpcError) as gone:
        grpc_infer(unbudgeted, [BOMB] * 64, timeout=0.3)
    assert gone.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    line = wait_for_log(unbudgeted, "request abandoned: decoding stopped after ")
    done = int(line.split("stopped after ")[1].split(" of 64")[0])
    assert done < 64
    assert_still_answers(unbudgeted)


def test_a_rest_client_that_leaves_stops_decoding(unbudgeted: ServerProcess) -> None:
    # The client gives up after 0.3 s: the REST route sees `http.disconnect` and cancels the
    # request's task, and the decoding thread stops before its next image.
    fragment = "request abandoned: decoding stopped after "
    before = unbudgeted.log.read_text(errors="replace").count(fragment)
    with pytest.raises(httpx.TimeoutException):
        body = {"instances": [{"b64": base64.b64encode(BOMB).decode()}] * 64}
        httpx.post(f"{unbudgeted.http_url}/v1/models/{NAME}:predict", json=body, timeout=0.3)
    deadline = time.monotonic() + 60
    while unbudgeted.log.read_text(errors="replace").count(fragment) == before:
        assert time.monotonic() < deadline, "decoding went on after the client left"
        time.sleep(0.1)
    line = [x for x in unbudgeted.log.read_text(errors="replace").splitlines() if fragment in x][-1]
    assert int(line.split("stopped after ")[1].split(" of 64")[0]) < 64
    assert_still_answers(unbudgeted)


def test_rest_decode_timeout_stops_decoding_with_504(unbudgeted: ServerProcess) -> None:
    # A client that stays but whose request takes too long: the decode timeout (2 s here)
    # ends the request between two images.
    response = v1_predict(unbudgeted, [BOMB] * 64)
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error.startswith("decoding the images took over 2 s: stopped after ")
    assert error.endswith(" of 64 images")
    assert_still_answers(unbudgeted)


def wait_for_log(server: ServerProcess, fragment: str, timeout: float = 60) -> str:
    """The first line of the server's log holding `fragment`, once it is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log.read_text(errors="replace").splitlines():
            if fragment in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {fragment!r} in {server.log} after {timeout} s")
