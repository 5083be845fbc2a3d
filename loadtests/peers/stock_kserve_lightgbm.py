"""Stock KServe: the LightGBM booster the way KServe's own lgbserver serves it.

A `lightgbm.Booster(model_file=...)` with `nthread` set (the ServingRuntime passes
`--nthread=1`); a synchronous `kserve.Model.predict` on the event loop that takes the rows with
KServe's `get_predict_input`, puts them in a pandas DataFrame with the booster's feature names
and answers `booster.predict(frame)` (for a multiclass booster, the class probabilities) with
`get_predict_response`; KServe's routes, logging left at KServe's defaults. The same
`model.txt` that `servers.lightgbm` serves.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import kserve
import lightgbm as lgb
import pandas as pd
from kserve.model_server import parser as kserve_parser
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_FILES = ("model.txt", "model.bst")


class StockLightGBMModel(kserve.Model):
    """KServe's lgbserver model, reduced to what the benchmark exercises."""

    def __init__(self, name: str, model_dir: str, nthread: int) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.nthread = nthread
        self._booster: Any = None

    def load(self) -> bool:
        files = [p for p in map(Path(self.model_dir).joinpath, MODEL_FILES) if p.is_file()]
        if len(files) != 1:
            raise RuntimeError(f"want one booster file in {self.model_dir}, found {files}")
        self._booster = lgb.Booster(params={"nthread": self.nthread}, model_file=str(files[0]))
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        columns = self._booster.feature_name()
        instances = get_predict_input(payload, columns=columns)
        if not isinstance(instances, pd.DataFrame):
            instances = pd.DataFrame(instances, columns=columns)
        result = self._booster.predict(instances)
        return get_predict_response(payload, result, self.name)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--model_dir", default="/mnt/models")
    parser.add_argument("--nthread", type=int, default=1)
    args, _ = parser.parse_known_args()
    model = StockLightGBMModel(args.model_name, args.model_dir, args.nthread)
    model.load()
    kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers
    ).start([model])


if __name__ == "__main__":
    main()
