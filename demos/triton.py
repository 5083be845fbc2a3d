"""The demo classifiers as ONNX, in two Triton model repositories (CPU here, GPU in a cluster).

`build_digits_onnx(out)` converts the Keras digits SavedModel (`out/digits-tf/1/`, built if
missing) to ONNX with tf2onnx, checks that ONNX Runtime answers what TensorFlow answers, adds
the iris classifier (`add_iris_onnx`, below), and writes:

    out/triton/                       the CPU repository `modelserve up` and the tests serve
      metadata.json                   the image transformer's convention (labels, image, input)
      triton-digits/config.pbtxt      python backend, dynamic batching, KIND_CPU
      triton-digits/1/model.py        runs model.onnx in ONNX Runtime (= triton/onnx_model.py)
      triton-digits/1/model.onnx
      digits-classifier/...           the same model under the other service's name
      iris-classifier/config.pbtxt    the iris LogisticRegression (skl2onnx), same python backend
      iris-classifier/1/model.py
      iris-classifier/1/model.onnx
    out/triton-gpu/                   the same models for a cluster's Triton (NVIDIA's image)
      metadata.json
      triton-digits/config.pbtxt      onnxruntime_onnx + TensorRT execution accelerator, KIND_GPU
      triton-digits/1/model.onnx
      digits-classifier/...
      iris-classifier/...             onnxruntime_onnx, KIND_CPU (too small for a GPU)
      digits-trt.config.pbtxt         the config of a tensorrt_plan variant (model.plan via trtexec)
      README.md                       the trtexec steps

Triton serves models by their repository names and KServe's Triton runtime renames nothing,
while a KServe client (and a transformer) calls the model by the InferenceService's name. So
the model is written once per service that serves it: `triton-digits` and `digits-classifier`
(whose transformer asks its predictor for its own name), identical but for the name.

Input `images` FP32 [N, 8, 8] (pixels 0..16), outputs `probabilities` FP32 [N, 10] and
`digit` INT64 [N, 1]: Triton wants at least one dim per batched tensor, so the model's [N] is
declared `dims: [1]` with `reshape: []` and clients see [N, 1].

`iris-classifier` is the iris LogisticRegression (`out/iris/model.joblib`, built if missing)
converted with skl2onnx and checked against scikit-learn on the 150 iris rows: what the tabular
transformer of the `iris-classifier` service sends and reads, input `input-0` FP64 [N, 4],
outputs `predict` INT64 [N, 1] (class ids; [N] declared as above) and `predict_proba` FP64
[N, 3], named as the sklearn predictor's v2 outputs. It needs the `skl2onnx` of the `triton`
extra; without it the repositories hold only the digits models (with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import servers.triton
from demos.digits import DIGITS_METADATA, DIGITS_TF
from demos.iris import IRIS_FEATURES
from servers.triton.repository import TensorConfig, model_config

__all__ = [
    "DIGITS_INPUT",
    "DIGITS_MODEL",
    "DIGITS_MODELS",
    "IRIS_INPUT",
    "IRIS_MODEL",
    "IRIS_OUTPUT",
    "TRITON_GPU_REPOSITORY",
    "TRITON_REPOSITORY",
    "add_iris_onnx",
    "build_digits_onnx",
    "export_iris_onnx",
    "export_onnx",
]

log = logging.getLogger("modelserve.models")

BUILD_ORDER = 20
REQUIRES = ("tensorflow", "tf2onnx", "onnxruntime")

TRITON_REPOSITORY = "triton"
TRITON_GPU_REPOSITORY = "triton-gpu"
# One model per service that serves it (see above); the first is the plain Triton service's.
DIGITS_MODELS = ("triton-digits", "digits-classifier")
DIGITS_MODEL = DIGITS_MODELS[0]
DIGITS_INPUT = "images"
ONNX_FILE = "model.onnx"
OPSET = 17  # what TensorRT 10 and Triton 24.x's ONNX Runtime both take
MAX_BATCH_SIZE = 64
# The python-backend model Triton runs (it ships with the Triton backend, in servers/).
_PYTHON_MODEL = Path(servers.triton.__file__).with_name("onnx_model.py")
_ONNX_FILE_PARAMETER = 'parameters { key: "onnx_file" value: { string_value: "model.onnx" } }'

_INPUTS = [TensorConfig(DIGITS_INPUT, "TYPE_FP32", [8, 8])]
_OUTPUTS = [
    TensorConfig("probabilities", "TYPE_FP32", [10]),
    TensorConfig("digit", "TYPE_INT64", [1], reshape=[]),
]

# The iris classifier, named as the service whose tabular transformer calls it, with the
# tensors that transformer sends and reads (servers/transformers/tabular/model.py).
IRIS_MODEL = "iris-classifier"
IRIS_INPUT = "input-0"
IRIS_OUTPUT = "predict"
IRIS_PROBABILITIES = "predict_proba"
_IRIS_CLASSES = 3
_IRIS_INPUTS = [TensorConfig(IRIS_INPUT, "TYPE_FP64", [len(IRIS_FEATURES)])]
_IRIS_OUTPUTS = [
    TensorConfig(IRIS_OUTPUT, "TYPE_INT64", [1], reshape=[]),
    TensorConfig(IRIS_PROBABILITIES, "TYPE_FP64", [_IRIS_CLASSES]),
]

# ONNX Runtime's TensorRT execution provider inside Triton's onnxruntime backend: TensorRT
# builds the engine on first load (cached), ONNX Runtime runs what TensorRT cannot.
_TENSORRT_ACCELERATOR = """
optimization {
  execution_accelerators {
    gpu_execution_accelerator: [
      {
        name: "tensorrt"
        parameters { key: "precision_mode" value: "FP32" }
        parameters { key: "max_workspace_size_bytes" value: "1073741824" }
        parameters { key: "trt_engine_cache_enable" value: "1" }
        parameters { key: "trt_engine_cache_path" value: "/tmp/triton-trt-cache" }
      }
    ]
  }
}
"""

_GPU_README = """\
# The digits classifier on a GPU Triton

`triton-digits/` (and `digits-classifier/`, the same model under the name of the service whose
transformer calls it) runs `model.onnx` on Triton's `onnxruntime_onnx` platform with the
TensorRT execution accelerator: no build step, TensorRT compiles the engine when the model
loads.

For a native TensorRT plan (`platform: "tensorrt_plan"`), build the engine on the GPU model and
with the TensorRT version of the Triton that will serve it (Triton 24.10 = TensorRT 10.5),
in NVIDIA's TensorRT container:

    docker run --gpus all --rm -v $PWD:/repo -w /repo nvcr.io/nvidia/tensorrt:24.10-py3 \\
      trtexec --onnx=triton-digits/1/model.onnx --saveEngine=model.plan \\
        --minShapes=images:1x8x8 --optShapes=images:16x8x8 --maxShapes=images:64x8x8
    mkdir -p digits-trt/1 && mv model.plan digits-trt/1/model.plan
    cp digits-trt.config.pbtxt digits-trt/config.pbtxt

Then serve and check it:

    docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v $PWD:/models \\
      nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
    curl localhost:8000/v2/models/digits-trt      # inputs/outputs as triton-digits'
    perf_analyzer -m digits-trt -b 16 --concurrency-range 1:16

The max batch size of the engine (64) must be at least the config's `max_batch_size`.
"""


def export_onnx(saved_model: Path, target: Path) -> Path:
    """Convert the digits SavedModel's `serving_default` signature to ONNX at `target`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(saved_model))
    signature = loaded.signatures["serving_default"]

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8], tf.float32, name=DIGITS_INPUT)])
    def serve(images: Any) -> dict[str, Any]:
        return dict(signature(images=images))

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=OPSET)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(proto.SerializeToString())
    _check_against_tensorflow(target, signature)
    return target


def _check_against_tensorflow(onnx_file: Path, signature: Any) -> None:
    """ONNX Runtime must answer what TensorFlow answers on the whole digits set."""
    import onnxruntime as ort
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    probabilities, digit = session.run(["probabilities", "digit"], {DIGITS_INPUT: images})
    expected = signature(images=tf.constant(images))
    gap = float(np.abs(probabilities - expected["probabilities"].numpy()).max())
    if gap > 1e-4 or not np.array_equal(digit, expected["digit"].numpy()):
        raise RuntimeError(f"{onnx_file}: ONNX Runtime disagrees with TensorFlow (gap {gap:g})")


def _write_metadata(repository: Path, extra: dict[str, Any]) -> None:
    metadata = {**DIGITS_METADATA, "models": list(DIGITS_MODELS), **extra}
    (repository / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def _write_python_model(
    directory: Path, name: str, inputs: list[TensorConfig], outputs: list[TensorConfig]
) -> None:
    """The CPU repository's model: the python backend running `1/model.onnx` in ONNX Runtime
    (the ONNX file is the caller's to place)."""
    shutil.copyfile(_PYTHON_MODEL, directory / "1" / "model.py")
    (directory / "config.pbtxt").write_text(
        model_config(
            name,
            backend="python",
            inputs=inputs,
            outputs=outputs,
            max_batch_size=MAX_BATCH_SIZE,
            instance_kind="KIND_CPU",
            extra=_ONNX_FILE_PARAMETER,
        )
    )


def _gpu_config(name: str, platform: str, extra: str = "") -> str:
    """A digits model's config for a GPU Triton: batches of up to 64, waiting 100 µs."""
    return model_config(
        name,
        platform=platform,
        inputs=_INPUTS,
        outputs=_OUTPUTS,
        max_batch_size=MAX_BATCH_SIZE,
        instance_kind="KIND_GPU",
        max_queue_delay_us=100,
        preferred_batch_sizes=[16, 64],
        extra=extra,
    )


def build_digits_onnx(out: Path) -> Path:
    """Export the digits classifier to ONNX and write `out/triton/` and `out/triton-gpu/`;
    returns the CPU repository."""
    saved_model = out / DIGITS_TF / "1"
    if not (saved_model / "saved_model.pb").is_file():
        from demos.digits import build_digits_tf

        build_digits_tf(out)
    cpu = out / TRITON_REPOSITORY
    gpu = out / TRITON_GPU_REPOSITORY
    for repository in (cpu, gpu):
        shutil.rmtree(repository, ignore_errors=True)
    onnx_file = export_onnx(saved_model, out / DIGITS_TF / ONNX_FILE)
    for name in DIGITS_MODELS:
        (cpu / name / "1").mkdir(parents=True)
        shutil.copyfile(onnx_file, cpu / name / "1" / ONNX_FILE)
        _write_python_model(cpu / name, name, _INPUTS, _OUTPUTS)
        (gpu / name / "1").mkdir(parents=True)
        shutil.copyfile(onnx_file, gpu / name / "1" / ONNX_FILE)
        (gpu / name / "config.pbtxt").write_text(
            _gpu_config(name, "onnxruntime_onnx", extra=_TENSORRT_ACCELERATOR)
        )
    _write_metadata(cpu, {"backend": "python (ONNX Runtime, CPU)"})

    (gpu / "digits-trt.config.pbtxt").write_text(_gpu_config("digits-trt", "tensorrt_plan"))
    (gpu / "README.md").write_text(_GPU_README)
    _write_metadata(gpu, {"backend": "onnxruntime_onnx + TensorRT (GPU)"})
    try:
        import skl2onnx  # noqa: F401
    except ImportError:
        log.warning("skl2onnx is not installed: the Triton repositories hold no %s "
                    "(pip install '.[triton]')", IRIS_MODEL)
    else:
        add_iris_onnx(out)
    return cpu


# -- the iris classifier, for the tabular transformer ------------------------------------------
def export_iris_onnx(model_file: Path, target: Path) -> Path:
    """Convert the iris LogisticRegression at `model_file` to ONNX at `target`: input
    `input-0` double [N, 4], outputs `predict` int64 [N] and `predict_proba` double [N, 3]."""
    import joblib
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType

    estimator = joblib.load(model_file)
    proto = to_onnx(
        estimator,
        initial_types=[(IRIS_INPUT, DoubleTensorType([None, len(IRIS_FEATURES)]))],
        options={id(estimator): {"zipmap": False}},  # probabilities as a tensor, not maps
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    # skl2onnx names the tensors `input_0` (it sanitizes names), `label`, `probabilities`.
    _rename_tensors(proto.graph, {
        proto.graph.input[0].name: IRIS_INPUT,
        "label": IRIS_OUTPUT,
        "probabilities": IRIS_PROBABILITIES,
    })
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(proto.SerializeToString())
    _check_against_sklearn(target, estimator)
    return target


def _rename_tensors(graph: Any, names: dict[str, str]) -> None:
    """Rename tensors of an ONNX graph everywhere they appear."""
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def _check_against_sklearn(onnx_file: Path, estimator: Any) -> None:
    """ONNX Runtime must predict what scikit-learn predicts on the whole iris set."""
    import onnxruntime as ort
    from sklearn.datasets import load_iris

    rows = load_iris().data.astype(np.float64)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run([IRIS_OUTPUT, IRIS_PROBABILITIES], {IRIS_INPUT: rows})
    gap = float(np.abs(probabilities - estimator.predict_proba(rows)).max())
    if gap > 1e-6 or not np.array_equal(labels, estimator.predict(rows)):
        raise RuntimeError(f"{onnx_file}: ONNX Runtime disagrees with scikit-learn (gap {gap:g})")


def add_iris_onnx(out: Path) -> Path:
    """Export `out/iris/model.joblib` (built if missing) to ONNX and add it to `out/triton/`
    and `out/triton-gpu/` as `iris-classifier`; returns the CPU model directory."""
    model_file = out / "iris" / "model.joblib"
    if not model_file.is_file():
        from demos.iris import build_iris

        build_iris(out)
    cpu = out / TRITON_REPOSITORY / IRIS_MODEL
    gpu = out / TRITON_GPU_REPOSITORY / IRIS_MODEL
    for directory in (cpu, gpu):
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "1").mkdir(parents=True)
    onnx_file = export_iris_onnx(model_file, cpu / "1" / ONNX_FILE)
    _write_python_model(cpu, IRIS_MODEL, _IRIS_INPUTS, _IRIS_OUTPUTS)
    shutil.copyfile(onnx_file, gpu / "1" / ONNX_FILE)
    # A 4x3 matrix product: a CPU instance, even in a GPU Triton (the ai.onnx.ml ops that
    # skl2onnx emits have no CUDA kernels anyway).
    (gpu / "config.pbtxt").write_text(
        model_config(
            IRIS_MODEL,
            platform="onnxruntime_onnx",
            inputs=_IRIS_INPUTS,
            outputs=_IRIS_OUTPUTS,
            max_batch_size=MAX_BATCH_SIZE,
            instance_kind="KIND_CPU",
        )
    )
    return cpu


def build(out: Path) -> Path:
    """The demo builder's entry: `build_digits_onnx` (with the iris model when skl2onnx is
    installed)."""
    return build_digits_onnx(out)
