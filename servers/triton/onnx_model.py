"""A Triton python-backend model that runs an ONNX file with ONNX Runtime on CPU.

Copied as `<model>/<version>/model.py` into a model repository; Triton's python-backend stub
runs it in the `.venv-triton` interpreter (numpy<2, onnxruntime), never in ours. The wheel's
Triton bundles only the python backend, so this is how ONNX runs here; in a cluster the same
ONNX file runs on Triton's own `onnxruntime_onnx` platform (or as a TensorRT plan).

Triton's dynamic batcher hands `execute` several requests at once: their inputs are stacked
into one ONNX Runtime call and the outputs split back, so concurrency turns into batch size.
Config parameters: `onnx_file` (default `model.onnx`), `intra_op_threads` (default 1: Triton
runs one instance per core it is given).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value else default


class TritonPythonModel:
    """The python backend's model class: `initialize`, `execute`, `finalize`."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the ONNX file of this model version."""
        config = json.loads(args["model_config"])
        onnx_file = _parameter(config, "onnx_file", "model.onnx")
        path = os.path.join(args["model_repository"], args["model_version"], onnx_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session: Any = ort.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config.get("output", [])] or [
            o.name for o in self.session.get_outputs()
        ]

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        return {
            name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            for name in self.inputs
        }

    def _respond(self, result: dict[str, np.ndarray]) -> Any:
        tensors = [pb_utils.Tensor(n, np.ascontiguousarray(result[n])) for n in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))

    def execute(self, requests: list[Any]) -> list[Any]:
        """One ONNX Runtime call for the whole dynamic batch; each request gets its rows."""
        feeds = [self._feeds(r) for r in requests]
        if len(feeds) == 1:
            return [self._answer(feeds[0])]
        sizes = [len(f[self.inputs[0]]) for f in feeds]
        try:
            stacked = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
            result = self._run(stacked)
        except Exception:  # one bad request must fail alone: run them apart
            return [self._answer(f) for f in feeds]
        responses, start = [], 0
        for size in sizes:
            responses.append(self._respond({n: v[start : start + size] for n, v in result.items()}))
            start += size
        return responses

    def _answer(self, feeds: dict[str, np.ndarray]) -> Any:
        try:
            return self._respond(self._run(feeds))
        except Exception as exc:  # ONNX Runtime's errors become Triton's
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {exc}"))

    def finalize(self) -> None:
        """Drop the session."""
        self.session = None
