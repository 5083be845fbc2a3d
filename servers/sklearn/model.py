"""`SKLearnPredictor`: a scikit-learn estimator behind KServe v1 and v2 (REST and gRPC)."""

from __future__ import annotations

from typing import Any

import numpy as np

from servers.batching import AdaptiveBatcher, BatchSettings
from servers.errors import InvalidInput, UnprocessableEntity
from servers.model import TensorModel, TensorOutputs, off_loop
from servers.protocol import v1
from servers.protocol.tensors import datatype_of
from servers.storage import load_artifact

__all__ = ["METHODS", "SKLearnPredictor"]

METHODS = ("predict", "predict_proba")


class SKLearnPredictor(TensorModel):
    """Serves `predict` (and `predict_proba` when asked) of a fitted estimator.

    The method comes from the server's `method` setting, or per request: v1/v2
    `"parameters": {"method": "predict_proba"}`, or v2 requested outputs named after the
    methods (MLServer's convention).
    """

    def __init__(
        self,
        name: str,
        model_dir: str,
        method: str = "predict",
        trusted_types: list[str] | None = None,
        batching: BatchSettings | None = None,
        *,
        trust_remote_pickles: bool = False,
    ) -> None:
        super().__init__(name)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.model_dir = model_dir
        self.method = method
        self.trusted_types = trusted_types or []
        self.trust_remote_pickles = trust_remote_pickles
        self.estimator: Any = None
        self.n_features: int | None = None
        self.feature_names: list[str] | None = None
        self.allow_nan = False
        self.batching = batching or BatchSettings()
        # One batcher per method, made on first use inside the server's event loop.
        self._batchers: dict[str, AdaptiveBatcher] = {}

    def load(self) -> bool:
        artifact = load_artifact(
            self.model_dir, self.trusted_types, trust_remote_pickles=self.trust_remote_pickles
        )
        self.estimator = artifact.model
        if not hasattr(self.estimator, "predict"):
            raise TypeError(f"{artifact.path} holds {type(self.estimator).__name__}, no predict()")
        n_features = getattr(self.estimator, "n_features_in_", None)
        self.n_features = int(n_features) if n_features is not None else None
        names = artifact.metadata.get("feature_names") or getattr(
            self.estimator, "feature_names_in_", None
        )
        self.feature_names = [str(n) for n in names] if names is not None else None
        self.allow_nan = _allows_nan(self.estimator)
        self.ready = True
        return self.ready

    # -- v1 --------------------------------------------------------------------------------
    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        matrix = self._checked(v1.rows_to_matrix(v1.rows(doc, self.feature_names), self.n_features))
        method = self._method(doc.get("parameters"), [])[0]
        result = await self._run(method, matrix)
        return {"predictions": result.tolist()}

    # -- v2 --------------------------------------------------------------------------------
    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        if len(inputs) != 1:
            raise InvalidInput(f"the model takes one input tensor, got {len(inputs)}")
        ((name, array),) = inputs.items()
        matrix = self._checked(self._matrix(name, array))
        return {m: _tensor(await self._run(m, matrix)) for m in self._method(parameters, requested)}

    async def _run(self, method: str, matrix: np.ndarray) -> np.ndarray:
        fn = getattr(self.estimator, method, None)
        if fn is None:
            raise UnprocessableEntity(f"{type(self.estimator).__name__} has no {method}()")
        if self.batching.max_batch_size <= 1:
            return np.asarray(await off_loop(fn, matrix))
        batcher = self._batchers.get(method)
        if batcher is None:
            batcher = self._batchers[method] = AdaptiveBatcher(
                lambda rows: np.asarray(fn(rows)), self.batching
            )
        result = await batcher.submit(matrix)
        assert isinstance(result, np.ndarray)  # one array in, one array out
        return result

    def _matrix(self, name: str, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind not in "iuf":
            raise InvalidInput(f"input '{name}' must be numeric, got {array.dtype}")
        if array.ndim != 2:
            raise InvalidInput(
                f"input '{name}' must have shape [batch, {self.n_features or 'features'}], "
                f"got rank {array.ndim}"
            )
        if array.shape[0] == 0:
            raise InvalidInput(f"input '{name}' has an empty batch")
        if self.n_features is not None and array.shape[1] != self.n_features:
            raise InvalidInput(
                f"input '{name}' has {array.shape[1]} features, the model expects {self.n_features}"
            )
        return array

    def _method(self, parameters: Any, requested: list[str]) -> list[str]:
        if requested:
            unknown = [r for r in requested if r not in METHODS]
            if unknown:
                raise InvalidInput(f"unknown output(s) {unknown}; this model has {list(METHODS)}")
            return requested
        method = self.method
        if isinstance(parameters, dict) and "method" in parameters:
            method = parameters["method"]
            if method not in METHODS:
                raise InvalidInput(f"parameters.method must be one of {list(METHODS)}")
        return [method]

    def _checked(self, matrix: np.ndarray) -> np.ndarray:
        """Refuse what the estimator would choke on, before it joins a batch."""
        if matrix.shape[0] == 0:
            raise InvalidInput("the batch is empty: send at least one instance")
        if not self.allow_nan and not np.all(np.isfinite(matrix)):
            raise InvalidInput("input contains NaN or infinity, which this model cannot take")
        return matrix

    # -- metadata --------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features or -1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = getattr(self.estimator, "classes_", None)
        outputs = [{"name": "predict", "datatype": _class_datatype(classes), "shape": [-1]}]
        if hasattr(self.estimator, "predict_proba"):
            width = len(classes) if classes is not None else -1
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, width]})
        return outputs


def _tensor(result: np.ndarray) -> tuple[np.ndarray, str]:
    if result.dtype.kind in "USO":
        result = result.astype(np.object_)
    return result, datatype_of(result)


def _class_datatype(classes: Any) -> str:
    if classes is None:
        return "FP64"
    return datatype_of(np.asarray(classes))


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # older scikit-learn or a non-sklearn estimator: be strict
        return False
