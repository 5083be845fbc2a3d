"""`TabularTransformer`: named features in, label names out, a KServe predictor in between.

v1 records (`{"instances": [{"sepal_length": 5.1, ...}]}`) or v2 columns (one tensor per
feature) are ordered by the feature list stored with the model (`metadata.json`), sent to
`--predictor_host` as one FP64 tensor, and the predicted class ids come back as label names in
the protocol the client used. `--predictor_protocol=v2` (the demo's) sends it as v2 REST with
binary tensors both ways over kept-alive connections (`servers/transformers/predictor_rest.py`:
the cheapest hop measured here); `grpc-v2` as raw bytes over KServe's gRPC client.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from kserve.predictor_config import PredictorConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from servers.errors import BackendUnavailable, InvalidInput, ModelLoadError
from servers.limits import DEFAULT_GRPC_MAX_MESSAGE_BYTES, grpc_message_options
from servers.model import ServedModel
from servers.protocol import v1
from servers.protocol.v2 import decode_inputs, make_response
from servers.statistics import current_timing, phase
from servers.storage import read_metadata, resolve_model_dir
from servers.transformers.predictor_rest import PredictorRestClient
from servers.transformers.upstream import predictor_errors, predictor_grpc_client

__all__ = ["TabularTransformer"]

PREDICTOR_INPUT = "input-0"
PREDICTOR_OUTPUT = "predict"


class TabularTransformer(ServedModel):
    """Orders named features for a tabular predictor and names its predicted classes.

    `grpc_options` (the gRPC message limits) apply to its gRPC client to the predictor.
    """

    def __init__(
        self,
        name: str,
        model_dir: str,
        predictor_config: PredictorConfig,
        grpc_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        super().__init__(name)
        self._predictor_config = predictor_config
        self.grpc_options = list(
            grpc_options or grpc_message_options(DEFAULT_GRPC_MAX_MESSAGE_BYTES)
        )
        self._predictor_grpc: Any = None
        self._predictor_rest: PredictorRestClient | None = None
        self.model_dir = model_dir
        self.feature_names: list[str] = []
        self.target_names: list[str] = []

    @property
    def predictor_config(self) -> PredictorConfig:
        """The predictor this transformer calls (kserve's clients read it from here, rather
        than from the server-wide setting)."""
        return self._predictor_config

    @property
    def _grpc_client(self) -> Any:
        # Replaces kserve.Model's, for our message limits; made on first use, in the server's
        # event loop (its aio channel belongs to the loop it was made in).
        if self._predictor_grpc is None:
            self._predictor_grpc = predictor_grpc_client(self.predictor_config, self.grpc_options)
        return self._predictor_grpc

    def load(self) -> bool:
        # Only the metadata stored with the model is needed here, not the model itself.
        directory = resolve_model_dir(self.model_dir)
        metadata = read_metadata(directory if directory.is_dir() else directory.parent)
        features, targets = metadata.get("feature_names"), metadata.get("target_names")
        if not features or not targets:
            raise ModelLoadError(
                f"metadata.json in {self.model_dir} needs feature_names and target_names"
            )
        self.feature_names = [str(f) for f in features]
        self.target_names = [str(t) for t in targets]
        self.ready = True
        return self.ready

    # -- request -> predictor tensor -------------------------------------------------------
    def to_matrix(self, payload: dict[str, Any] | bytes | InferRequest) -> np.ndarray:
        """The (rows, features) matrix of a v1 or v2 request, in the model's feature order."""
        if isinstance(payload, InferRequest):
            return self._columns(decode_inputs(payload))
        batch = v1.rows(v1.parse_json_body(payload), self.feature_names)
        return v1.rows_to_matrix(
            [self._record(i, r) for i, r in enumerate(batch)], len(self.feature_names)
        )

    def _record(self, index: int, record: Any) -> Any:
        if not isinstance(record, dict):
            return record  # already an ordered row; rows_to_matrix checks it
        missing = [f for f in self.feature_names if f not in record]
        unknown = sorted(set(record) - set(self.feature_names))
        if missing or unknown:
            raise InvalidInput(
                f"instance {index}: missing features {missing}, unknown features {unknown}; "
                f"expected {self.feature_names}"
            )
        return [record[f] for f in self.feature_names]

    def _columns(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if set(arrays) == set(self.feature_names):
            columns = [arrays[f].reshape(-1) for f in self.feature_names]
            if len({c.shape[0] for c in columns}) != 1:
                raise InvalidInput("feature tensors must all have the same batch size")
            if any(c.dtype.kind not in "iuf" for c in columns):
                raise InvalidInput("feature tensors must be numeric")
            matrix = np.stack(columns, axis=1).astype(np.float64)
        elif len(arrays) == 1:
            ((name, matrix),) = arrays.items()
            if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
                raise InvalidInput(
                    f"input '{name}' must have shape [batch, {len(self.feature_names)}]"
                )
            if matrix.dtype.kind not in "iuf":
                raise InvalidInput(f"input '{name}' must be numeric")
            matrix = matrix.astype(np.float64)  # the predictor's input is FP64
        else:
            raise InvalidInput(
                f"send one tensor per feature {self.feature_names}, or one [batch, "
                f"{len(self.feature_names)}] tensor; got {sorted(arrays)}"
            )
        if matrix.shape[0] == 0:
            raise InvalidInput("the batch is empty: send at least one instance")
        return matrix

    # -- the hop ---------------------------------------------------------------------------
    async def predict(
        self,
        payload: dict[str, Any] | bytes | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Encode for the predictor, call it, and name the classes it predicts."""
        with phase("compute_input"):
            matrix = self.to_matrix(payload)
        if (timing := current_timing()) is not None:
            timing.rows = len(matrix)
        ids = await self._class_ids(matrix, headers)  # compute_infer: the rest
        with phase("compute_output"):
            labels = self._labels(ids)
            if isinstance(payload, InferRequest):
                names = np.array([label.encode() for label in labels], dtype=np.object_)
                return make_response(payload, self.name, {"label": (names, "BYTES")})
            return {"predictions": labels}

    async def _class_ids(self, matrix: np.ndarray, headers: dict[str, str] | None) -> np.ndarray:
        """The predictor's class id of each row of `matrix`: its `predict` output, else its
        first (a Triton model may name it otherwise)."""
        outputs = await self._predictor_outputs(matrix, headers)
        ids = outputs.get(PREDICTOR_OUTPUT, next(iter(outputs.values()), None))
        if ids is None:
            raise BackendUnavailable("predictor answered with no outputs")
        return ids.reshape(-1)

    async def _predictor_outputs(
        self, matrix: np.ndarray, headers: dict[str, str] | None
    ) -> dict[str, np.ndarray]:
        if self.predictor_config.predictor_protocol == "v2":
            if self._predictor_rest is None:  # made in the server's event loop, on first use
                self._predictor_rest = PredictorRestClient.for_predictor(self.predictor_config)
            return await self._predictor_rest.infer(
                self.name, [(PREDICTOR_INPUT, matrix, "FP64")], [], headers
            )
        tensor = InferInput(PREDICTOR_INPUT, list(matrix.shape), "FP64")
        tensor.set_data_from_numpy(matrix, binary_data=True)
        request = InferRequest(self.name, [tensor], request_id=str(uuid.uuid4()))
        with predictor_errors():
            result = await super().predict(request, headers)
        if not isinstance(result, InferResponse):
            raise BackendUnavailable(f"predictor sent an unexpected {type(result).__name__}")
        return {output.name: output.as_numpy() for output in result.outputs}

    def _labels(self, ids: np.ndarray) -> list[str]:
        try:
            return [self.target_names[int(i)] for i in ids]
        except (IndexError, ValueError) as exc:
            raise BackendUnavailable(f"predictor returned an unknown class id: {exc}") from exc

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": f, "datatype": "FP64", "shape": [-1]} for f in self.feature_names]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
