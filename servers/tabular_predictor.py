"""`TabularPredictor`: a fitted model of a [batch, features] matrix behind KServe v1 and v2
(REST and gRPC), the shared part of the scikit-learn, XGBoost and LightGBM predictors.

A backend subclasses it with `load_model`, which returns a `FittedModel`: the model's methods
(`predict`, and `predict_proba` for a classifier) as functions of a float matrix, what it
knows of its features (count, names) and classes, and whether NaN may reach it. The rest is
here, once: strict input checks before a row joins a batch, adaptive batching per method, the
method chosen per request, v2 inputs as one matrix or one column per named feature, metadata.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from servers.batching import AdaptiveBatcher, BatchSettings
from servers.errors import InvalidInput, UnprocessableEntity
from servers.model import TensorModel, TensorOutputs, off_loop
from servers.protocol import v1
from servers.protocol.tensors import datatype_of

__all__ = ["METHODS", "BoosterPredictor", "FittedModel", "Method", "TabularPredictor"]

METHODS = ("predict", "predict_proba")
Method = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FittedModel:
    """What a backend's loader tells the predictor about the model it loaded."""

    kind: str  # what it is, for messages: "LogisticRegression", "XGBoost multi:softprob"
    methods: Mapping[str, Method]  # of METHODS, the ones the model has
    n_features: int | None = None
    feature_names: list[str] | None = None
    classes: np.ndarray | None = None  # the labels `predict` answers with (a classifier)
    allow_nan: bool = False  # NaN may reach the model (a missing value to it)
    nan_hint: str = ""  # how to let NaN through, when the model could take it


class TabularPredictor(TensorModel):
    """Serves `predict` (and `predict_proba` when the model has it) of a fitted model.

    The method comes from the server's `method` setting, or per request: v1/v2
    `"parameters": {"method": "predict_proba"}`, or v2 requested outputs named after the
    methods (MLServer's convention).
    """

    def __init__(
        self,
        name: str,
        model_dir: str,
        method: str = "predict",
        batching: BatchSettings | None = None,
    ) -> None:
        super().__init__(name)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.model_dir = model_dir
        self.method = method
        self.batching = batching or BatchSettings()
        self.fitted: FittedModel | None = None
        # One batcher per method, made on first use inside the server's event loop.
        self._batchers: dict[str, AdaptiveBatcher] = {}

    @abstractmethod
    def load_model(self) -> FittedModel:
        """Load the artifact in `model_dir` (ModelLoadError naming what is wrong)."""

    def load(self) -> bool:
        self.fitted = self.load_model()
        self.ready = True
        return self.ready

    @property
    def model(self) -> FittedModel:
        """The loaded model (UnprocessableEntity before `load`, which the server never lets
        a request see)."""
        if self.fitted is None:
            raise UnprocessableEntity(f"model {self.name} is not loaded")
        return self.fitted

    @property
    def n_features(self) -> int | None:
        """The model's feature count, when it knows it."""
        return self.model.n_features

    @property
    def feature_names(self) -> list[str] | None:
        """The model's feature names, when it knows them."""
        return self.model.feature_names

    # -- v1 --------------------------------------------------------------------------------
    async def infer_v1(self, doc: dict[str, Any]) -> dict[str, Any]:
        fitted = self.model
        rows = v1.rows(doc, fitted.feature_names)
        matrix = self._checked(v1.rows_to_matrix(rows, fitted.n_features))
        method = self._method(doc.get("parameters"), [])[0]
        result = await self._run(method, matrix)
        return {"predictions": result.tolist()}

    # -- v2 --------------------------------------------------------------------------------
    async def infer_v2(
        self, inputs: dict[str, np.ndarray], parameters: dict[str, Any], requested: list[str]
    ) -> TensorOutputs:
        matrix = self._checked(self._v2_matrix(inputs))
        return {m: _tensor(await self._run(m, matrix)) for m in self._method(parameters, requested)}

    def _v2_matrix(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        names = self.model.feature_names
        if names and len(inputs) > 1 and set(inputs) <= set(names):
            return self._columns(inputs, names)
        if len(inputs) != 1:
            hint = f", or one [batch] tensor per feature {names}" if names else ""
            raise InvalidInput(
                f"the model takes one input tensor [batch, features]{hint}, got {len(inputs)}"
            )
        ((name, array),) = inputs.items()
        return self._matrix(name, array)

    def _columns(self, inputs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
        """One [batch] (or [batch, 1]) tensor per named feature (MLServer's pandas codec)."""
        missing = [n for n in names if n not in inputs]
        if missing:
            raise InvalidInput(f"named feature inputs: missing {missing}")
        columns = []
        for name in names:
            array = inputs[name]
            if array.dtype.kind not in "iuf":
                raise InvalidInput(f"input '{name}' must be numeric, got {array.dtype}")
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 1:
                shape = list(array.shape)
                raise InvalidInput(f"input '{name}' must have shape [batch], got {shape}")
            columns.append(array)
        if len({len(c) for c in columns}) != 1:
            raise InvalidInput("named feature inputs must have the same batch size")
        return np.stack(columns, axis=1).astype(np.float64, copy=False)

    async def _run(self, method: str, matrix: np.ndarray) -> np.ndarray:
        fitted = self.model
        fn = fitted.methods.get(method)
        if fn is None:
            raise UnprocessableEntity(f"{fitted.kind} has no {method}()")
        if self.batching.max_batch_size <= 1:
            return np.asarray(await off_loop(fn, matrix))
        batcher = self._batchers.get(method)
        if batcher is None:
            batcher = self._batchers[method] = AdaptiveBatcher(_on_matrix(fn), self.batching)
        result = await batcher.submit(matrix)
        assert isinstance(result, np.ndarray)  # one array in, one array out
        return result

    def _matrix(self, name: str, array: np.ndarray) -> np.ndarray:
        n_features = self.model.n_features
        if array.dtype.kind not in "iuf":
            raise InvalidInput(f"input '{name}' must be numeric, got {array.dtype}")
        if array.ndim != 2:
            raise InvalidInput(
                f"input '{name}' must have shape [batch, {n_features or 'features'}], "
                f"got rank {array.ndim}"
            )
        if array.shape[0] == 0:
            raise InvalidInput(f"input '{name}' has an empty batch")
        if n_features is not None and array.shape[1] != n_features:
            raise InvalidInput(
                f"input '{name}' has {array.shape[1]} features, the model expects {n_features}"
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
        """Refuse what the model would choke on, before it joins a batch."""
        fitted = self.model
        if matrix.shape[0] == 0:
            raise InvalidInput("the batch is empty: send at least one instance")
        if fitted.allow_nan:
            if np.isinf(matrix).any():
                raise InvalidInput("input contains infinity, which this model cannot take")
        elif not np.all(np.isfinite(matrix)):
            raise InvalidInput(
                "input contains NaN or infinity, which this model cannot take" + fitted.nan_hint
            )
        return matrix

    # -- metadata --------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, self.n_features or -1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        fitted = self.model
        classes = fitted.classes
        datatype = datatype_of(np.asarray(classes)) if classes is not None else "FP64"
        outputs = [{"name": "predict", "datatype": datatype, "shape": [-1]}]
        if "predict_proba" in fitted.methods:
            width = len(classes) if classes is not None else -1
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, width]})
        return outputs


class BoosterPredictor(TabularPredictor):
    """A gradient-boosted trees predictor (XGBoost, LightGBM): threads per prediction, and
    NaN (the boosters' missing value) let through only when `allow_missing`."""

    NAN_HINT = " (start the server with --allow_missing to take NaN as a missing value)"

    def __init__(
        self,
        name: str,
        model_dir: str,
        method: str = "predict",
        batching: BatchSettings | None = None,
        *,
        nthread: int = 1,
        allow_missing: bool = False,
    ) -> None:
        super().__init__(name, model_dir, method, batching)
        self.nthread = nthread
        self.allow_missing = allow_missing


def _on_matrix(fn: Method) -> Callable[[Any], np.ndarray]:
    """`fn` as the batcher's row function (our rows are always one matrix)."""

    def run(rows: Any) -> np.ndarray:
        return np.asarray(fn(rows))

    return run


def _tensor(result: np.ndarray) -> tuple[np.ndarray, str]:
    if result.dtype.kind in "USO":
        result = result.astype(np.object_)
    return result, datatype_of(result)
