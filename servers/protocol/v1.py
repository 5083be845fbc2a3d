"""KServe v1 (TF Serving style) request bodies to numpy, strictly.

`{"instances": [[...], ...]}` is a batch of rows; `{"inputs": [[...], ...]}` is the same batch;
`{"inputs": {"col": [...], ...}}` is columnar (one list per named input, TF Serving's form).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from servers.errors import InvalidInput

__all__ = ["parse_json_body", "rows", "rows_to_matrix"]


def parse_json_body(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """A v1 body as a dict, whatever content type it came with (curl -d sends a form type)."""
    if isinstance(body, dict):
        return body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidInput(f"request must be a JSON object, got {type(doc).__name__}")
    return doc


def rows(doc: dict[str, Any], feature_names: Sequence[str] | None = None) -> list[Any]:
    """The batch of a v1 request as a list of rows (rows may be lists or named records)."""
    if "instances" in doc and "inputs" in doc:
        raise InvalidInput("request has both 'instances' and 'inputs'; send one")
    if "instances" in doc:
        batch = doc["instances"]
        if not isinstance(batch, list):
            raise InvalidInput("'instances' must be a list of rows")
    elif "inputs" in doc:
        batch = doc["inputs"]
        if isinstance(batch, dict):
            batch = _columns_to_rows(batch, feature_names)
        elif not isinstance(batch, list):
            raise InvalidInput("'inputs' must be a list of rows or an object of named columns")
    else:
        raise InvalidInput("request needs 'instances' (rows) or 'inputs' (rows or columns)")
    if not batch:
        raise InvalidInput("the batch is empty: send at least one instance")
    return batch


def _columns_to_rows(columns: dict[str, Any], feature_names: Sequence[str] | None) -> list[Any]:
    if len(columns) == 1:
        (only,) = columns.values()
        if not isinstance(only, list):
            raise InvalidInput("each named input must be a list")
        return only
    names = list(feature_names) if feature_names else None
    if names is None:
        raise InvalidInput("named input columns need a model with known feature names")
    unknown = sorted(set(columns) - set(names))
    missing = [n for n in names if n not in columns]
    if unknown or missing:
        raise InvalidInput(f"named inputs: missing {missing}, unknown {unknown}")
    lengths = {len(columns[n]) if isinstance(columns[n], list) else -1 for n in names}
    if -1 in lengths or len(lengths) != 1:
        raise InvalidInput("named input columns must be lists of equal length")
    return [list(values) for values in zip(*(columns[n] for n in names), strict=True)]


def rows_to_matrix(batch: list[Any], n_features: int | None) -> np.ndarray:
    """A (rows, features) float64 matrix; 400 on ragged rows, strings, nulls or wrong widths."""
    for index, row in enumerate(batch):
        if not isinstance(row, list):
            raise InvalidInput(
                f"instance {index} must be a list of {n_features or 'numeric'} features, "
                f"got {type(row).__name__}"
            )
        if n_features is not None and len(row) != n_features:
            raise InvalidInput(
                f"instance {index} has {len(row)} features, the model expects {n_features}"
            )
        for value in row:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(
                    f"instance {index} has a non-numeric feature {value!r}"
                    + (" (nested lists: wrong rank)" if isinstance(value, list) else "")
                )
    try:
        matrix = np.asarray(batch, dtype=np.float64)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"instances are ragged or not numeric: {exc}") from exc
    if matrix.ndim != 2:
        raise InvalidInput(f"instances must be a 2-D batch of rows, got rank {matrix.ndim}")
    return matrix
