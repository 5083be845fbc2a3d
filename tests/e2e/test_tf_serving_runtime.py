"""The cluster variant on KServe's TF Serving runtime, run by `modelserve up` with our
stand-in for `tensorflow_model_server`: PNGs through the image transformer, which speaks TF
Serving's REST predict API (v1) to the predictor, as it would in a cluster."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from PIL import Image
from sklearn.datasets import load_digits

from tests.support import ROOT, Platform, run_platform

pytestmark = pytest.mark.e2e

MANIFEST = ROOT / "inferenceservices" / "cluster" / "tf-digits-classifier.yaml"
DIGITS = load_digits()


def png(index: int, scale: int = 1) -> bytes:
    """A digits image as a PNG made by Pillow (ink white on black, 0..255), optionally upscaled."""
    pixels = (DIGITS.images[index] * 255 / 16).round().astype(np.uint8)
    image = Image.fromarray(pixels, "L")
    if scale > 1:
        image = image.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def variant(models_root: Path, logs: Path) -> Iterator[Platform]:
    with run_platform(models_root, logs, [MANIFEST]) as running:
        yield running


def test_pngs_in_digits_out_over_v1(variant: Platform) -> None:
    instances = [{"b64": base64.b64encode(png(i)).decode()} for i in range(10)]
    response = httpx.post(f"{variant.url}/v1/models/tf-digits-classifier:predict",
                          json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [str(d) for d in DIGITS.target[:10]]
    scores = [s["score"] for s in predictions[0]["top_k"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert response.headers["x-modelserve-revision"] == "tf-digits-classifier-transformer-00001"


def test_upscaled_png_as_v2_bytes_with_tritonclient(variant: Platform) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{variant.port}")
    images = np.array([png(i, scale=4) for i in (3, 7)], dtype=np.object_)
    tensor = triton_http.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(images)
    result = client.infer("tf-digits-classifier", [tensor])
    assert [v.decode() for v in result.as_numpy("label").tolist()] == ["3", "7"]
    assert result.as_numpy("top_k_scores").shape == (2, 3)


def test_an_undecodable_image_is_a_400_and_the_service_goes_on(variant: Platform) -> None:
    url = f"{variant.url}/v1/models/tf-digits-classifier:predict"
    bad = httpx.post(url, json={"instances": [{"b64": base64.b64encode(b"not a png").decode()}]})
    assert bad.status_code == 400
    assert "instance 0" in bad.json()["error"]
    good = httpx.post(url, json={"instances": [{"b64": base64.b64encode(png(1)).decode()}]})
    assert good.json()["predictions"][0]["label"] == "1"
