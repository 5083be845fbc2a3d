"""The demo models, trained from data that ships with scikit-learn (nothing is downloaded)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

__all__ = [
    "DIGITS_LABELS",
    "DIGITS_TF",
    "IRIS_FEATURES",
    "build_all",
    "build_digits_tf",
    "build_iris",
    "tensorflow_available",
]

log = logging.getLogger("modelserve.models")

# The v1 record keys of iris-classifier, in the order the model was trained on.
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_iris(out: Path) -> Path:
    """Iris logistic regression: `out/iris/model.joblib` + `metadata.json` (features, labels)."""
    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    directory = out / "iris"
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    metadata = {
        "feature_names": IRIS_FEATURES,
        "target_names": [str(n) for n in data.target_names],
        "dataset": "sklearn.datasets.load_iris",
    }
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


# sklearn's 8x8 digits: pixels 0..16, ink high. One model directory serves the TensorFlow
# predictor (TF Serving's layout: a numeric version directory) and the image transformer
# (metadata.json beside it).
DIGITS_TF = "digits-tf"
DIGITS_LABELS = [str(d) for d in range(10)]
DIGITS_METADATA: dict[str, Any] = {
    "target_names": DIGITS_LABELS,
    "image": {"height": 8, "width": 8, "max_value": 16.0, "invert": False},
    "input": {"name": "images", "datatype": "FP32", "shape": [-1, 8, 8]},
    "scores_output": "probabilities",
    "dataset": "sklearn.datasets.load_digits",
}
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def tensorflow_available() -> bool:
    """Whether the `tensorflow` extra is installed."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def build_digits_tf(out: Path, version: int = 1, epochs: int = 100) -> Path:
    """A small Keras classifier of sklearn's 8x8 digits as a SavedModel: `out/digits-tf/1/`.

    Signatures: `serving_default` (`images` float32 [N,8,8], 0..16 -> `probabilities` [N,10],
    `digit` int64 [N]); `classify` and `regress` take serialized `tf.Example`s (feature
    `pixels`: 64 floats) as TF Serving's Classify/Regress APIs do, and carry TF Serving's
    method names so those APIs accept them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    data = load_digits()
    images, target = data.images.astype("float32"), data.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8), name="images"),
            keras.layers.Rescaling(1 / 16.0),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    # ~10 s on 2 cores; fits the 1,797 images exactly, so every known image has a known answer.
    model.fit(images, target, epochs=epochs, batch_size=64, verbose=0)
    labels = tf.constant(DIGITS_LABELS)
    example_spec = {"pixels": tf.io.FixedLenFeature([64], tf.float32)}

    class DigitsModule(tf.Module):
        def __init__(self, classifier: Any) -> None:
            super().__init__()
            self.classifier = classifier

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8], tf.float32, name="images")])
        def serve(self, images: Any) -> dict[str, Any]:
            probabilities = self.classifier(images)
            return {"probabilities": probabilities, "digit": tf.argmax(probabilities, axis=1)}

        def _from_examples(self, inputs: Any) -> Any:
            pixels = tf.io.parse_example(inputs, example_spec)["pixels"]
            return self.classifier(tf.reshape(pixels, [-1, 8, 8]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs: Any) -> dict[str, Any]:
            scores = self._from_examples(inputs)
            classes = tf.tile(labels[tf.newaxis, :], [tf.shape(scores)[0], 1])
            return {"classes": classes, "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs: Any) -> dict[str, Any]:
            # The expected digit under the model's distribution: a regression output.
            scores = self._from_examples(inputs)
            return {"outputs": tf.reduce_sum(scores * tf.range(10, dtype=tf.float32), axis=1)}

    module = DigitsModule(model)
    directory = out / DIGITS_TF
    path = directory / str(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.serve,
            "classify": module.classify,
            "regress": module.regress,
        },
    )
    _set_method_names(path, {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD})
    accuracy = float(model.evaluate(images, target, verbose=0)[1])
    metadata = {**DIGITS_METADATA, "train_accuracy": accuracy}
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


def _set_method_names(path: Path, methods: dict[str, str]) -> None:
    """Give signatures TF Serving's method names (TF2's `saved_model.save` says predict)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    file = path / "saved_model.pb"
    proto.ParseFromString(file.read_bytes())
    for key, method in methods.items():
        proto.meta_graphs[0].signature_def[key].method_name = method
    file.write_bytes(proto.SerializeToString())


def build_all(out: Path) -> list[Path]:
    """Build every demo model under `out`; returns the model directories.

    The TensorFlow model needs the `tensorflow` extra and its ONNX export for Triton the
    `triton` extra; without them they are skipped with a warning.
    """
    built = [build_iris(out)]
    if not tensorflow_available():
        log.warning("tensorflow is not installed: skipping %s and the Triton repository "
                    "(pip install '.[tensorflow,triton]')", DIGITS_TF)
        return built
    built.append(build_digits_tf(out))
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        log.warning("tf2onnx/onnxruntime are not installed: skipping the Triton repository "
                    "(pip install '.[triton]')")
        return built
    from servers.triton.demo import build_digits_onnx

    built.append(build_digits_onnx(out))
    return built
