"""The digits demo: a small Keras classifier of sklearn's 8x8 digits as a TF SavedModel, what
`tf-digits` serves (and, exported to ONNX by `demos.triton`, Triton's digits models)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DIGITS_LABELS", "DIGITS_METADATA", "DIGITS_TF", "REQUIRES", "build", "build_digits_tf"]

BUILD_ORDER = 10
REQUIRES = ("tensorflow",)

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


def build(out: Path) -> Path:
    """The demo builder's entry: `build_digits_tf`."""
    return build_digits_tf(out)
