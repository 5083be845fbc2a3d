"""Stock KServe: the scikit-learn model the way KServe's own sklearnserver writes it.

A synchronous `kserve.Model.predict` on the event loop, KServe's `get_predict_input` /
`get_predict_response` helpers, KServe's routes, logging left at KServe's defaults. With
`--predictor_host` it is instead KServe's stock pass-through transformer (`kserve.Model`
with no overrides), which forwards the request unchanged to the predictor.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import kserve
from kserve.model_server import parser as kserve_parser
from kserve.utils.utils import get_predict_input, get_predict_response


class StockSKLearnModel(kserve.Model):
    """KServe's sklearnserver model, reduced to what the benchmark exercises."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self._model: Any = None

    def load(self) -> bool:
        self._model = joblib.load(Path(self.model_dir) / "model.joblib")
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        instances = get_predict_input(payload)
        result = self._model.predict(instances)
        return get_predict_response(payload, result, self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--model_dir", default="/mnt/models")
    args, _ = parser.parse_known_args()
    model: kserve.Model
    if args.predictor_host:
        model = kserve.Model(
            args.model_name,
            kserve.model_server.PredictorConfig(
                predictor_host=args.predictor_host, predictor_protocol=args.predictor_protocol
            ),
        )
        model.ready = True
    else:
        model = StockSKLearnModel(args.model_name, args.model_dir)
        model.load()
    kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers
    ).start([model])


if __name__ == "__main__":
    main()
