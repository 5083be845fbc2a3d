"""KServe v1 bodies to a (rows, features) matrix: good shapes accepted, everything else a 400."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servers.errors import InvalidInput
from servers.protocol.v1 import parse_json_body, rows, rows_to_matrix

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _matrix(body: bytes | dict[str, Any], names: list[str] | None, n_features: int | None):
    return rows_to_matrix(rows(parse_json_body(body), names), n_features)


BAD_BODIES: list[Any] = [
    pytest.param(b"{not json", id="malformed-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"[[1, 2, 3, 4]]", id="top-level-list"),
    pytest.param(b'"instances"', id="top-level-string"),
    pytest.param(b"{}", id="no-instances-or-inputs"),
    pytest.param({"instance": [[1, 2, 3, 4]]}, id="misspelled-key"),
    pytest.param({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, id="both-keys"),
    pytest.param({"instances": {"a": [1]}}, id="instances-an-object"),
    pytest.param({"instances": "1,2,3,4"}, id="instances-a-string"),
    pytest.param({"instances": None}, id="instances-null"),
    pytest.param({"inputs": 5}, id="inputs-a-number"),
    pytest.param({"instances": []}, id="empty-batch"),
    pytest.param({"inputs": []}, id="empty-inputs"),
    pytest.param({"inputs": {"only": []}}, id="empty-single-column"),
    pytest.param({"instances": [[1, 2, 3, 4], [1, 2, 3]]}, id="ragged-rows"),
    pytest.param({"instances": [[1, 2, 3]]}, id="too-few-features"),
    pytest.param({"instances": [[1, 2, 3, 4, 5]]}, id="too-many-features"),
    pytest.param({"instances": [1, 2, 3, 4]}, id="rows-not-lists"),
    pytest.param({"instances": [{"a": 1}]}, id="row-an-object"),
    pytest.param({"instances": [[1, 2, "3", 4]]}, id="string-feature"),
    pytest.param({"instances": [[1, 2, None, 4]]}, id="null-feature"),
    pytest.param({"instances": [[1, 2, True, 4]]}, id="boolean-feature"),
    pytest.param({"instances": [[[1, 2, 3, 4]]]}, id="nested-rank-3"),
    pytest.param({"instances": [[1, 2, [3], 4]]}, id="list-feature"),
    pytest.param({"instances": [[10**400, 2, 3, 4]]}, id="huge-int"),
    pytest.param(b'{"instances": [[1e400, 2, 3, 4]]}', id="huge-float-literal"),
    pytest.param({"inputs": {"only": 5}}, id="single-column-not-a-list"),
    pytest.param({"inputs": {"sepal_length": [1], "sepal_width": [2]}}, id="named-columns-missing"),
    pytest.param(
        {"inputs": {**{n: [1.0] for n in NAMES}, "extra": [1.0]}}, id="named-columns-unknown"
    ),
    pytest.param(
        {"inputs": {**{n: [1.0] for n in NAMES}, "petal_width": [1.0, 2.0]}},
        id="named-columns-unequal",
    ),
    pytest.param({"inputs": {**{n: [1.0] for n in NAMES}, "petal_width": 1.0}}, id="column-scalar"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_v1_bodies_are_invalid_input(body: bytes | dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        _matrix(body, NAMES, 4)
    assert caught.value.http_status == 400
    assert str(caught.value)


def test_named_columns_need_a_model_with_feature_names() -> None:
    with pytest.raises(InvalidInput, match="feature names"):
        rows({"inputs": {"a": [1.0], "b": [2.0]}}, None)


def test_wrong_feature_count_names_the_row_and_the_expected_width() -> None:
    with pytest.raises(InvalidInput, match="instance 1 has 3 features, the model expects 4"):
        rows_to_matrix([[1, 2, 3, 4], [1, 2, 3]], 4)


def test_unknown_width_still_refuses_ragged_rows() -> None:
    with pytest.raises(InvalidInput, match="ragged"):
        rows_to_matrix([[1, 2], [1]], None)


GOOD_BODIES: list[Any] = [
    pytest.param(b'{"instances": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}', id="instances-rows-bytes"),
    pytest.param({"instances": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}, id="instances-rows-dict"),
    pytest.param({"inputs": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}, id="inputs-rows"),
    pytest.param(
        {
            "inputs": {
                "petal_width": [4, 8],
                "sepal_length": [1, 5.5],
                "petal_length": [3, 7],
                "sepal_width": [2, 6],
            }
        },
        id="inputs-named-columns-in-any-order",
    ),
    pytest.param({"inputs": {"features": [[1, 2, 3, 4], [5.5, 6, 7, 8]]}}, id="single-column"),
    pytest.param(
        {"instances": [[1, 2, 3, 4], [5.5, 6, 7, 8]], "parameters": {"x": 1}},
        id="extra-keys-ignored",
    ),
]


@pytest.mark.parametrize("body", GOOD_BODIES)
def test_good_v1_bodies_give_a_float64_matrix_in_feature_order(
    body: bytes | dict[str, Any],
) -> None:
    matrix = _matrix(body, NAMES, 4)
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, [[1, 2, 3, 4], [5.5, 6, 7, 8]])


def test_named_columns_become_rows_ordered_by_feature_names() -> None:
    batch = rows({"inputs": {"b": [1, 2], "a": [10, 20]}}, ["a", "b"])
    assert batch == [[10, 1], [20, 2]]


def test_a_single_named_column_is_the_batch_itself() -> None:
    assert rows({"inputs": {"x": [[1, 2], [3, 4]]}}, None) == [[1, 2], [3, 4]]


def test_parse_json_body_passes_dicts_through() -> None:
    doc = {"instances": [[1]]}
    assert parse_json_body(doc) is doc


def test_unknown_width_accepts_any_rectangular_batch() -> None:
    assert rows_to_matrix([[1, 2], [3, 4], [5, 6]], None).shape == (3, 2)
