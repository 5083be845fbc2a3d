"""`ImageTransformer`: encoded images in, top-k labels out, a KServe predictor in between.

Images come as v1 instances (`{"b64": ...}`, TF Serving's `{"image_bytes": {"b64": ...}}`, or a
bare base64 string) or as one v2 BYTES tensor of encoded images. Each is decoded with Pillow,
turned grayscale, resized to the model's height x width, scaled to 0..max_value (optionally
inverted) and reshaped to the predictor's input tensor, whose name, datatype and shape come
from the predictor's v2 model metadata (or from `metadata.json` when it has none). The batch
goes to `--predictor_host` over v2 REST, v2 gRPC or v1 (KServe's TF Serving runtime), and the
per-class scores it answers with come back as top-k labels in the protocol the client used.

`metadata.json` in the model directory:

    {"target_names": ["0", ..., "9"],
     "image": {"height": 8, "width": 8, "max_value": 16.0, "invert": false},
     "input": {"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]},
     "scores_output": "probabilities"}

`input` is needed only for a v1 predictor or one without v2 metadata; `scores_output` names the
predictor output holding the scores (without it: the predictor's first output).

Work per request is bounded (`limits.py`), every check made before any pixel is decoded:
`--max_batch_size` images (64; more: 413), `--max_image_bytes` encoded bytes per image (4 MiB;
400), `--max_image_pixels` per image (16,777,216; 400) and `--max_request_pixels` for all the
request's images together (67,108,864; 413), read from the headers. Images are then decoded
one at a time; a request whose gRPC client cancelled or passed its deadline stops before the
next image, and any request stops with a 504 once it is `--decode_timeout_s` old (30 s).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import math
import re
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from kserve.predictor_config import PredictorConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    to_http_parameters,
)
from PIL import Image, ImageOps, UnidentifiedImageError

from servers.errors import BackendUnavailable, InvalidInput, ModelLoadError
from servers.limits import DEFAULT_GRPC_MAX_MESSAGE_BYTES, grpc_message_options
from servers.model import ServedModel
from servers.protocol import v1
from servers.protocol.tensors import DATATYPES
from servers.protocol.v2 import decode_inputs, make_response
from servers.statistics import current_timing, phase
from servers.storage import read_metadata, resolve_model_dir
from servers.transformers.image.limits import (
    Cancellation,
    PixelBudget,
    RequestLimits,
    run_cancellable,
)
from servers.transformers.predictor_rest import PredictorRestClient
from servers.transformers.upstream import (
    from_grpc,
    from_http,
    predictor_errors,
    predictor_grpc_client,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_TOP_K",
    "ImageSpec",
    "ImageTransformer",
    "RequestLimits",
    "TensorSpec",
]

DEFAULT_TOP_K = 3
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 16_777_216
INPUT_NAME = "image"

# Formats decoded from client bytes. Not EPS (Pillow runs Ghostscript on it) nor the long tail
# of rarely used decoders.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# Datatypes pixels can be sent to the predictor as.
PIXEL_DATATYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"}
    | {"UINT8", "UINT16", "UINT32", "UINT64"}
)
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.ASCII)

# Our own --max_image_pixels check runs before any pixel is decoded; Pillow's warning for
# large images would only repeat it (its DecompressionBombError, at twice its limit, is caught).
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


@dataclass(frozen=True)
class ImageSpec:
    """How an image becomes model input: its size, pixel range and polarity."""

    height: int
    width: int
    max_value: float = 255.0
    invert: bool = False


@dataclass(frozen=True)
class TensorSpec:
    """The predictor's input tensor; `dims` is one image's shape (the batch dimension dropped)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dims: tuple[int, ...]


def tensor_spec(doc: Any, image: ImageSpec) -> TensorSpec:
    """A TensorSpec from v2 metadata (`{"name", "datatype", "shape"}`) holding one image.

    Raises ValueError naming what does not fit.
    """
    if not isinstance(doc, dict):
        raise ValueError("the input must be an object with name, datatype and shape")
    name, datatype, shape = doc.get("name"), doc.get("datatype"), doc.get("shape")
    if not isinstance(name, str) or not name:
        raise ValueError("the input needs a string 'name'")
    if not isinstance(datatype, str) or datatype.upper() not in PIXEL_DATATYPES:
        raise ValueError(
            f"input '{name}' has datatype {datatype!r}; pixels go as one of "
            + ", ".join(sorted(PIXEL_DATATYPES))
        )
    if (
        not isinstance(shape, list | tuple)
        or len(shape) < 2
        or any(isinstance(d, bool) or not isinstance(d, int) or d == 0 or d < -1 for d in shape)
    ):
        raise ValueError(
            f"input '{name}' has shape {shape!r}; expected [batch, dims...] with -1 for any size"
        )
    dims = [int(d) for d in shape[1:]]
    pixels = image.height * image.width
    known = math.prod(d for d in dims if d != -1)
    unknown = dims.count(-1)
    if unknown > 1 or (unknown == 1 and pixels % known) or (unknown == 0 and known != pixels):
        raise ValueError(
            f"input '{name}' has shape {list(shape)}, which does not hold one "
            f"{image.height}x{image.width} grayscale image"
        )
    if unknown:
        dims[dims.index(-1)] = pixels // known
    return TensorSpec(name, datatype.upper(), tuple(int(d) for d in shape), tuple(dims))


def _image_spec(doc: Any) -> ImageSpec:
    if not isinstance(doc, dict):
        raise ValueError("'image' must be an object with height and width")
    size: dict[str, int] = {}
    for key in ("height", "width"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"image.{key} must be a positive integer, got {value!r}")
        size[key] = value
    max_value = doc.get("max_value", 255.0)
    if (
        isinstance(max_value, bool)
        or not isinstance(max_value, int | float)
        or not math.isfinite(max_value)
        or max_value <= 0
    ):
        raise ValueError(f"image.max_value must be a positive number, got {max_value!r}")
    invert = doc.get("invert", False)
    if not isinstance(invert, bool):
        raise ValueError(f"image.invert must be true or false, got {invert!r}")
    return ImageSpec(size["height"], size["width"], float(max_value), invert)


class ImageTransformer(ServedModel):
    """Decodes images for a classifier predictor and names its top-k classes."""

    # Decoding is the expensive part: stop it when a REST client leaves (`servers/rest.py`);
    # grpc.aio cancels the handler by itself.
    cancel_on_disconnect = True

    def __init__(
        self,
        name: str,
        model_dir: str,
        predictor_config: PredictorConfig,
        top_k: int = DEFAULT_TOP_K,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        limits: RequestLimits | None = None,
        grpc_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        super().__init__(name)
        if top_k < 1 or max_image_bytes < 1 or max_image_pixels < 1:
            raise ValueError("top_k, max_image_bytes and max_image_pixels must be positive")
        self.model_dir = model_dir
        self._predictor_config = predictor_config
        self.top_k = top_k
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.limits = limits or RequestLimits()
        # The component's gRPC message limits, for its client to the predictor too.
        self.grpc_options = list(
            grpc_options or grpc_message_options(DEFAULT_GRPC_MAX_MESSAGE_BYTES)
        )
        self._predictor_grpc: Any = None
        self._predictor_rest: PredictorRestClient | None = None
        self.target_names: list[str] = []
        self.image = ImageSpec(1, 1)
        self.scores_output: str | None = None
        self.stored_input: TensorSpec | None = None
        self._predictor_input: TensorSpec | None = None
        # Made on first use, inside the server's event loop.
        self._input_lock: asyncio.Lock | None = None

    @property
    def predictor_config(self) -> PredictorConfig:
        """The predictor this transformer calls (kserve's clients read it from here)."""
        return self._predictor_config

    @property
    def _grpc_client(self) -> Any:
        # Replaces kserve.Model's (no message limits); made on first use, in the server's
        # event loop (its aio channel belongs to the loop it was made in).
        if self._predictor_grpc is None:
            self._predictor_grpc = predictor_grpc_client(self.predictor_config, self.grpc_options)
        return self._predictor_grpc

    @property
    def protocol(self) -> str:
        """How the predictor is called: `v1`, `v2` (REST) or `grpc-v2`."""
        return str(self._predictor_config.predictor_protocol)

    def load(self) -> bool:
        # Only the metadata stored with the model is needed here, not the model itself.
        directory = resolve_model_dir(self.model_dir)
        metadata = read_metadata(directory if directory.is_dir() else directory.parent)
        where = f"metadata.json in {self.model_dir}"
        targets = metadata.get("target_names")
        if not isinstance(targets, list) or not targets:
            raise ModelLoadError(f"{where} needs target_names, the class labels in score order")
        try:
            image = _image_spec(metadata.get("image"))
            stored = metadata.get("input")
            stored_input = tensor_spec(stored, image) if stored is not None else None
        except ValueError as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
        scores_output = metadata.get("scores_output")
        if scores_output is not None and (not isinstance(scores_output, str) or not scores_output):
            raise ModelLoadError(f"{where}: scores_output must be an output name")
        if self.protocol == "v1" and stored_input is None:
            raise ModelLoadError(
                f"{where} needs an 'input' block (name, datatype, shape): a v1 predictor "
                "has no model metadata to take it from"
            )
        self.target_names = [str(t) for t in targets]
        self.image = image
        self.stored_input = stored_input
        self.scores_output = scores_output
        # The default may exceed a small label set (3 of 2 classes): give them all.
        self.top_k = min(self.top_k, len(self.target_names))
        self.ready = True
        return self.ready

    def validate(self, payload: Any) -> Any:
        """Pass requests through: `predict` checks them, and kserve's own check (made for
        the predictor's protocol, not the client's) refuses TF Serving's columnar `inputs`."""
        return payload

    # -- request -> encoded images ---------------------------------------------------------
    def _v1_images(self, doc: dict[str, Any]) -> list[str]:
        return [self._v1_instance(i, item) for i, item in enumerate(v1.rows(doc))]

    @staticmethod
    def _v1_instance(index: int, item: Any) -> str:
        value = item
        if isinstance(item, dict):
            if "b64" in item:
                value = item["b64"]
            elif len(item) == 1 and isinstance(next(iter(item.values())), dict):
                # TF Serving's named binary input: {"image_bytes": {"b64": "..."}}
                value = next(iter(item.values())).get("b64")
        if not isinstance(value, str):
            raise InvalidInput(
                f'instance {index} must be {{"b64": "<base64>"}}, '
                f'{{"image_bytes": {{"b64": "<base64>"}}}} or a base64 string'
            )
        return value

    @staticmethod
    def _v2_images(request: InferRequest) -> list[bytes]:
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"send one BYTES tensor of encoded images, got {len(request.inputs)} inputs"
            )
        infer_input = request.inputs[0]
        if str(infer_input.datatype).upper() != "BYTES":
            raise InvalidInput(
                f"input '{infer_input.name}' must be BYTES (encoded images), "
                f"got {infer_input.datatype}"
            )
        array = decode_inputs(request)[infer_input.name]
        if array.ndim == 2 and array.shape[1] == 1:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise InvalidInput(
                f"input '{infer_input.name}' must have shape [batch] or [batch, 1], "
                f"got {list(array.shape)}"
            )
        if array.size == 0:
            raise InvalidInput("the batch is empty: send at least one image")
        return [bytes(item) for item in array]

    # -- encoded images -> pixels ----------------------------------------------------------
    def _b64(self, index: int, value: str | bytes) -> bytes:
        try:
            text = value.decode("ascii") if isinstance(value, bytes) else value
        except UnicodeDecodeError:
            raise InvalidInput(f"instance {index} is not valid base64 (not ASCII text)") from None
        text = "".join(_DATA_URL.sub("", text, count=1).split())  # data: URLs, MIME line breaks
        altchars = b"-_" if ("-" in text or "_" in text) else None  # URL-safe alphabet
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), altchars, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"instance {index} is not valid base64: {exc}") from None

    def _open(self, index: int, data: bytes) -> Image.Image:
        """The image's header read (no pixels decoded yet); UnidentifiedImageError if none."""
        if not data:
            raise InvalidInput(f"instance {index} is empty")
        if len(data) > self.max_image_bytes:
            raise InvalidInput(
                f"instance {index}: the image is {len(data)} bytes, over the limit of "
                f"{self.max_image_bytes}"
            )
        try:
            return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise InvalidInput(f"instance {index}: too many pixels: {exc}") from None
        except Exception as exc:  # a corrupt header in client bytes is a bad request
            raise InvalidInput(f"instance {index}: unreadable image: {exc}") from None

    def _text_image(self, index: int, value: bytes) -> bytes:
        # Clients that cannot send binary BYTES (REST JSON) send base64 text instead.
        try:
            return self._b64(index, value)
        except InvalidInput:
            raise InvalidInput(
                f"instance {index} is neither an encoded image ({', '.join(IMAGE_FORMATS)}) "
                "nor base64 text of one"
            ) from None

    def _header(self, index: int, value: str | bytes) -> Image.Image:
        """One image (base64 text, or bytes: encoded or base64) opened: its header read, its
        size checked, no pixel decoded."""
        try:
            if isinstance(value, str):
                img = self._open(index, self._b64(index, value))
            else:
                try:
                    img = self._open(index, value)
                except UnidentifiedImageError:
                    img = self._open(index, self._text_image(index, value))
        except UnidentifiedImageError:
            raise InvalidInput(
                f"instance {index} is not a decodable image ({', '.join(IMAGE_FORMATS)})"
            ) from None
        width, height = img.size
        if width * height > self.max_image_pixels:
            img.close()
            raise InvalidInput(
                f"instance {index}: the image is {width}x{height} = {width * height} "
                f"pixels, over the limit of {self.max_image_pixels}"
            )
        return img

    def _headers(self, values: Sequence[str | bytes]) -> list[Image.Image]:
        """Every image opened (`_header`), their pixels summed against --max_request_pixels."""
        budget = PixelBudget(self.limits.max_request_pixels)
        images: list[Image.Image] = []
        try:
            for index, value in enumerate(values):
                images.append(self._header(index, value))
                width, height = images[-1].size
                budget.spend(index, width * height)
        except BaseException:
            for img in images:
                img.close()
            raise
        return images

    def _decode(self, index: int, img: Image.Image) -> np.ndarray:
        """One opened image's pixels, at the model's size and scale (the image is closed)."""
        with img:
            try:
                if img.format == "JPEG":
                    # Let the decoder scale down (DCT scaling) rather than decode every pixel.
                    img.draft("L", (self.image.width, self.image.height))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # phone photos: rotation in EXIF
                gray = self._grayscale(img)
            except Exception as exc:  # any decoder failure on client bytes is a bad request
                raise InvalidInput(
                    f"instance {index}: could not decode the {img.format or 'image'} data: {exc}"
                ) from None
        size = (self.image.width, self.image.height)
        if gray.size != size:
            # BOX averages each output pixel's area: sklearn's digits are exactly that (4x4
            # blocks of a 32x32 bitmap); other filters blur or ring. Upscaling needs smoothing.
            shrinking = gray.width >= size[0] and gray.height >= size[1]
            resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
            gray = gray.resize(size, resample)
        pixels = np.asarray(gray, dtype=np.float64).clip(0.0, 255.0)
        if self.image.invert:
            pixels = 255.0 - pixels
        return pixels * (self.image.max_value / 255.0)

    def _grayscale(self, img: Image.Image) -> Image.Image:
        """0..255 intensities as a float ("F") image, so resizing does not round them."""
        if img.mode in _SIXTEEN_BIT_MODES:
            # Pillow's own conversion to "L" clips 16-bit values instead of scaling them.
            wide = np.asarray(img, dtype=np.float32) / 257.0
            return Image.fromarray(wide.clip(0.0, 255.0), mode="F")
        if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
            # Transparent pixels take the background's shade (white behind dark ink when the
            # model wants it inverted), not whatever colour they hold, usually black.
            rgba = img.convert("RGBA")
            shade = 255 if self.image.invert else 0
            background = Image.new("RGBA", rgba.size, (shade, shade, shade, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("L").convert("F")

    def _batch(
        self,
        values: Sequence[str | bytes],
        spec: TensorSpec,
        cancellation: Cancellation | None = None,
    ) -> np.ndarray:
        """The predictor's input tensor for a batch of encoded images.

        Every header is read and the request's limits checked before the first image is
        decoded; then images are decoded one by one, `cancellation` checked before each.
        """
        images = self._headers(values)
        rows: list[np.ndarray] = []
        try:
            for index, img in enumerate(images):
                if cancellation is not None:
                    cancellation.check(index, len(images))
                rows.append(self._decode(index, img))
        finally:
            for img in images[len(rows) :]:  # the ones not decoded (closing twice is harmless)
                img.close()
        batch = np.stack(rows).reshape((len(values), *spec.dims))
        dtype = DATATYPES[spec.datatype].dtype
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
        return batch.astype(dtype)

    # -- the predictor's input tensor ------------------------------------------------------
    async def predictor_input(self) -> TensorSpec:
        """The predictor's input: from its v2 metadata (fetched once), else metadata.json."""
        if self._predictor_input is not None:
            return self._predictor_input
        if self._input_lock is None:
            self._input_lock = asyncio.Lock()
        async with self._input_lock:
            if self._predictor_input is None:
                self._predictor_input = await self._fetch_input()
        return self._predictor_input

    async def _fetch_input(self) -> TensorSpec:
        # A predictor that is down raises here (503) and nothing is cached: the next request
        # asks again. One that has no v2 metadata for the model falls back to metadata.json.
        if self.protocol == "v1":
            doc = None
        elif self.protocol == "grpc-v2":
            doc = await self._grpc_metadata()
        else:
            doc = await self._rest_metadata()
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if not inputs:
            if self.stored_input is None:
                raise BackendUnavailable(
                    f"the predictor has no v2 metadata for '{self.name}' and metadata.json "
                    "has no 'input' block: the predictor's input tensor is unknown"
                )
            return self.stored_input
        if not isinstance(inputs, list) or len(inputs) != 1:
            raise BackendUnavailable(
                f"the predictor's model '{self.name}' takes {len(inputs)} inputs; "
                "an image transformer feeds one"
            )
        try:
            return tensor_spec(inputs[0], self.image)
        except ValueError as exc:
            raise BackendUnavailable(f"the predictor's metadata: {exc}") from None

    async def _rest_metadata(self) -> Any:
        url = f"{self.predictor_config.predictor_base_url}/v2/models/{self.name}"
        with predictor_errors():
            # kserve's REST client keeps the httpx pool its infer calls use.
            response = await self._http_client._client.get(url)
        if response.status_code in (404, 405, 501):
            return None
        if not response.is_success:
            raise from_http(response.status_code, response.text)
        try:
            return response.json()
        except ValueError:
            return None

    async def _grpc_metadata(self) -> Any:
        request = pb.ModelMetadataRequest(name=self.name)
        try:
            reply = await self._grpc_client._client_stub.ModelMetadata(
                request, timeout=self.predictor_config.timeout
            )
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return None
            raise from_grpc(exc) from exc
        return {
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in reply.inputs
            ]
        }

    # -- the hop ---------------------------------------------------------------------------
    async def predict(
        self,
        payload: dict[str, Any] | bytes | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Decode the images, call the predictor, and name its top-k classes."""
        cancellation = Cancellation(self.limits.decode_timeout_s)
        values: list[str | bytes]
        if isinstance(payload, InferRequest):
            parameters = to_http_parameters(payload.parameters) if payload.parameters else None
            top_k = self._requested_top_k(parameters)
            values = list(self._v2_images(payload))
        else:
            doc = v1.parse_json_body(payload)
            top_k = self._requested_top_k(doc.get("parameters"))
            values = list(self._v1_images(doc))
        self.limits.check_batch_size(len(values))  # before asking the predictor anything
        spec = await self.predictor_input()
        # Decoding is CPU work: off the loop, and stopped between images once abandoned.
        with phase("compute_input"):
            batch = await run_cancellable(
                functools.partial(self._batch, values, spec), cancellation
            )
        if (timing := current_timing()) is not None:
            timing.rows = len(values)
        scores = await self._scores(batch, spec, headers)  # compute_infer: the rest
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_labels = np.asarray(self.target_names, dtype=np.object_)[order]
        if isinstance(payload, InferRequest):
            as_bytes = np.vectorize(lambda s: s.encode(), otypes=[np.object_])
            outputs = {
                "label": (as_bytes(top_labels[:, 0]), "BYTES"),
                "top_k_labels": (as_bytes(top_labels), "BYTES"),
                "top_k_scores": (top_scores.astype(np.float32), "FP32"),
            }
            return make_response(payload, self.name, outputs)
        return {
            "predictions": [
                {
                    "label": labels[0],
                    "top_k": [
                        {"label": label, "score": float(score)}
                        for label, score in zip(labels, row, strict=True)
                    ],
                }
                for labels, row in zip(top_labels.tolist(), top_scores, strict=True)
            ]
        }

    def _requested_top_k(self, parameters: Any) -> int:
        if parameters is None:
            return self.top_k
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object")
        if "top_k" not in parameters:
            return self.top_k
        value, classes = parameters["top_k"], len(self.target_names)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= classes:
            raise InvalidInput(
                f"parameters.top_k must be an integer from 1 to {classes}, got {value!r}"
            )
        return value

    async def _scores(
        self, batch: np.ndarray, spec: TensorSpec, headers: dict[str, str] | None
    ) -> np.ndarray:
        """The predictor's (batch, classes) scores for the batch."""
        if self.protocol == "v1":
            with predictor_errors():
                answer = await super().predict({"instances": batch.tolist()}, headers)
            scores = self._v1_scores(answer)
        elif self.protocol == "v2":
            scores = await self._rest_scores(batch, spec, headers)
        else:
            tensor = InferInput(spec.name, list(batch.shape), spec.datatype)
            tensor.set_data_from_numpy(batch, binary_data=True)
            wanted = [RequestedOutput(self.scores_output)] if self.scores_output else None
            request = InferRequest(
                self.name, [tensor], request_id=str(uuid.uuid4()), request_outputs=wanted
            )
            with predictor_errors():
                result = await super().predict(request, headers)
            scores = self._v2_scores(result)
        classes = len(self.target_names)
        if scores.size != batch.shape[0] * classes:
            raise BackendUnavailable(
                f"the predictor answered {scores.size} scores for {batch.shape[0]} images of "
                f"{classes} classes"
            )
        return scores.reshape(batch.shape[0], classes)

    async def _rest_scores(
        self, batch: np.ndarray, spec: TensorSpec, headers: dict[str, str] | None
    ) -> np.ndarray:
        """v2 REST with binary tensors both ways (`predictor_rest.py`: no JSON numbers)."""
        if self._predictor_rest is None:  # made in the server's event loop, on first use
            self._predictor_rest = PredictorRestClient.for_predictor(self.predictor_config)
        wanted = [self.scores_output] if self.scores_output else []
        outputs = await self._predictor_rest.infer(
            self.name, [(spec.name, batch, spec.datatype)], wanted, headers
        )
        return self._chosen_scores({n: (a, str(a.dtype)) for n, a in outputs.items()})

    def _v2_scores(self, result: Any) -> np.ndarray:
        if not isinstance(result, InferResponse):
            raise BackendUnavailable(f"the predictor sent an unexpected {type(result).__name__}")
        return self._chosen_scores({o.name: (o.as_numpy(), o.datatype) for o in result.outputs})

    def _chosen_scores(self, outputs: dict[str, tuple[np.ndarray, str]]) -> np.ndarray:
        """The scores output (`scores_output`, else the predictor's first) as float64;
        `outputs`: each output's array and its datatype's name, in the predictor's order."""
        if self.scores_output:
            chosen = outputs.get(self.scores_output)
        else:
            chosen = next(iter(outputs.values()), None)
        if chosen is None:
            raise BackendUnavailable(
                f"the predictor answered without the scores output '{self.scores_output}'"
            )
        scores, datatype = chosen
        if scores.dtype.kind not in "iuf":
            raise BackendUnavailable(f"the predictor's scores are {datatype}, not numbers")
        return np.asarray(scores, dtype=np.float64)

    def _v1_scores(self, answer: Any) -> np.ndarray:
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list):
            raise BackendUnavailable("the predictor's v1 answer has no 'predictions' list")
        rows = []
        for prediction in predictions:
            if isinstance(prediction, dict):
                # TF Serving names each output when the model has several.
                key = self.scores_output or next(iter(prediction), None)
                prediction = prediction.get(key) if key is not None else None
            rows.append(prediction)
        try:
            return np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BackendUnavailable(f"the predictor's predictions are not scores: {exc}") from None

    # -- metadata --------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "top_k_labels", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "top_k_scores", "datatype": "FP32", "shape": [-1, -1]},
        ]
