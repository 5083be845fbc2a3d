"""JSON merge patches (RFC 7386) and JSON patches (RFC 6902), as `PATCH /v1/services` takes
them, and the exact bodies `modelserve canary/promote/rollback` send, applied to a manifest."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from gateway.cli.kube import canary_patch, promote_patch
from gateway.controlplane.patches import (
    JSON_PATCH,
    MERGE_PATCH,
    PatchError,
    apply_patch,
    json_patch,
    merge_patch,
)
from tests.support import ROOT

# RFC 7386, Appendix A: (original, patch, result), verbatim.
RFC7386_EXAMPLES = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a": {"b": "c"}}', '{"a": {"b": "d", "c": null}}', '{"a": {"b": "d"}}'),
    ('{"a": [{"b":"c"}]}', '{"a": [1]}', '{"a": [1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize("original, patch, result", RFC7386_EXAMPLES)
def test_rfc7386_appendix_a(original: str, patch: str, result: str) -> None:
    target = json.loads(original)
    before = copy.deepcopy(target)
    assert merge_patch(target, json.loads(patch)) == json.loads(result)
    assert target == before  # the target is not changed in place


def test_rfc7386_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_merge_patch_result_does_not_alias_the_patch() -> None:
    patch = {"spec": {"predictor": {"args": ["--a"]}}}
    result = merge_patch({}, patch)
    result["spec"]["predictor"]["args"].append("--b")
    assert patch == {"spec": {"predictor": {"args": ["--a"]}}}


# --- RFC 6902 -------------------------------------------------------------------------------

DOC: dict[str, Any] = {
    "metadata": {"name": "svc", "annotations": {"serving.kserve.io/enable-tag-routing": "true"}},
    "spec": {"predictor": {"canaryTrafficPercent": 20, "args": ["--a", "--b"]}},
}


def patched(*ops: dict[str, Any]) -> Any:
    doc = copy.deepcopy(DOC)
    result = json_patch(doc, list(ops))
    assert doc == DOC  # the input is never changed, whatever happens
    return result


def test_add_to_an_object_and_over_an_existing_member() -> None:
    result = patched({"op": "add", "path": "/spec/predictor/minReplicas", "value": 0})
    assert result["spec"]["predictor"]["minReplicas"] == 0
    result = patched({"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 5})
    assert result["spec"]["predictor"]["canaryTrafficPercent"] == 5  # add replaces a member


def test_add_to_an_array_by_index_and_at_the_end() -> None:
    result = patched(
        {"op": "add", "path": "/spec/predictor/args/0", "value": "--first"},
        {"op": "add", "path": "/spec/predictor/args/-", "value": "--last"},
        {"op": "add", "path": "/spec/predictor/args/4", "value": "--after-last"},
    )
    assert result["spec"]["predictor"]["args"] == ["--first", "--a", "--b", "--last",
                                                   "--after-last"]


def test_remove_replace_and_test() -> None:
    result = patched(
        {"op": "test", "path": "/spec/predictor/canaryTrafficPercent", "value": 20},
        {"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"},
        {"op": "replace", "path": "/spec/predictor/args/1", "value": "--c"},
        {"op": "remove", "path": "/spec/predictor/args/0"},
        {"op": "replace", "path": "/metadata/name", "value": "renamed"},
    )
    assert result["spec"] == {"predictor": {"args": ["--c"]}}
    assert result["metadata"]["name"] == "renamed"


def test_pointer_escapes_rfc6901() -> None:
    result = patched(
        {"op": "test", "path": "/metadata/annotations/serving.kserve.io~1enable-tag-routing",
         "value": "true"},
        {"op": "add", "path": "/metadata/annotations/a~0b", "value": "x"},
    )
    assert result["metadata"]["annotations"]["a~b"] == "x"


def test_the_whole_document_can_be_replaced() -> None:
    assert patched({"op": "replace", "path": "", "value": {"x": 1}}) == {"x": 1}


@pytest.mark.parametrize(
    "op, message",
    [
        ({"op": "remove", "path": "/spec/transformer/canaryTrafficPercent"}, "missing path"),
        ({"op": "remove", "path": "/spec/predictor/minReplicas"}, "missing path"),
        ({"op": "remove", "path": "/spec/predictor/args/2"}, "missing path"),
        ({"op": "replace", "path": "/spec/predictor/minReplicas", "value": 1}, "missing path"),
        ({"op": "replace", "path": "/spec/predictor/args/2", "value": "x"}, "missing path"),
        ({"op": "add", "path": "/spec/transformer/minReplicas", "value": 1}, "missing path"),
        ({"op": "add", "path": "/spec/predictor/args/3", "value": "x"}, "missing path"),
        ({"op": "add", "path": "/spec/predictor/args/x", "value": "x"}, "missing path"),
        ({"op": "add", "path": "/metadata/name/x", "value": "x"}, "missing path"),
        ({"op": "add", "path": "/spec/predictor/x"}, "needs a 'value'"),
        ({"op": "test", "path": "/spec/predictor/canaryTrafficPercent", "value": 30},
         "test operation failed"),
        ({"op": "test", "path": "/spec/nothing", "value": 30}, "missing path"),
        ({"op": "move", "from": "/spec", "path": "/x"}, "not supported"),
        ({"op": "frobnicate", "path": "/spec"}, "not supported"),
        ({"path": "/spec"}, "needs 'op' and 'path'"),
        ({"op": "remove"}, "needs 'op' and 'path'"),
        ({"op": "remove", "path": "spec/predictor"}, "not a JSON pointer"),
        ({"op": "remove", "path": 3}, "not a JSON pointer"),
        ({"op": "remove", "path": ""}, "whole document"),
        ("remove /spec", "needs 'op' and 'path'"),
    ],
)
def test_operations_that_do_not_apply(op: Any, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        patched(op)


def test_a_json_patch_is_all_or_nothing() -> None:
    doc = copy.deepcopy(DOC)
    with pytest.raises(PatchError, match="operation 1|missing path"):
        json_patch(doc, [
            {"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"},
            {"op": "remove", "path": "/spec/predictor/nothing"},
        ])
    assert doc == DOC


def test_a_json_patch_must_be_a_list() -> None:
    with pytest.raises(PatchError, match="list of operations"):
        json_patch(DOC, {"op": "remove", "path": "/spec"})


# --- content types --------------------------------------------------------------------------


def test_apply_patch_picks_the_format_by_content_type() -> None:
    merge = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert apply_patch(DOC, MERGE_PATCH, merge)["spec"]["predictor"] == {"args": ["--a", "--b"]}
    ops = [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]
    assert apply_patch(DOC, JSON_PATCH, ops) == apply_patch(DOC, MERGE_PATCH, merge)
    # Parameters and case do not matter, as for any media type.
    assert apply_patch(DOC, "Application/Merge-Patch+JSON; charset=utf-8", merge) == \
        apply_patch(DOC, MERGE_PATCH, merge)


@pytest.mark.parametrize("content_type", [
    "application/strategic-merge-patch+json", "application/json", "", "text/plain",
])
def test_other_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(PatchError, match="content type") as caught:
        apply_patch(DOC, content_type, {"spec": {}})
    assert MERGE_PATCH in str(caught.value) and JSON_PATCH in str(caught.value)


def test_a_patch_must_leave_an_object() -> None:
    with pytest.raises(PatchError, match="JSON object"):
        apply_patch(DOC, MERGE_PATCH, ["not", "an", "object"])
    with pytest.raises(PatchError, match="not an object"):
        apply_patch(DOC, JSON_PATCH, [{"op": "replace", "path": "", "value": [1]}])


# --- the rollout commands' bodies on a real manifest ----------------------------------------


@pytest.fixture
def iris() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "inferenceservices/sklearn-iris.yaml").read_text())
    assert "canaryTrafficPercent" not in doc["spec"]["predictor"]
    return doc


def without_canary(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["predictor"].pop("canaryTrafficPercent", None)
    return doc


def test_the_bodies_are_what_kubectl_sends() -> None:
    assert canary_patch(20) == {"spec": {"predictor": {"canaryTrafficPercent": 20}}}
    assert canary_patch(0, "transformer") == {
        "spec": {"transformer": {"canaryTrafficPercent": 0}}
    }
    assert promote_patch() == [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]


def test_canary_promote_rollback_on_sklearn_iris(iris: dict[str, Any]) -> None:
    canary = apply_patch(iris, MERGE_PATCH, canary_patch(20))
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert without_canary(canary) == iris  # nothing else moved
    assert "canaryTrafficPercent" not in iris["spec"]["predictor"]

    moved = apply_patch(canary, MERGE_PATCH, canary_patch(50))
    assert moved["spec"]["predictor"]["canaryTrafficPercent"] == 50

    rollback = apply_patch(canary, MERGE_PATCH, canary_patch(0))
    assert rollback["spec"]["predictor"]["canaryTrafficPercent"] == 0  # 0 is a value, not null
    assert without_canary(rollback) == iris

    promoted = apply_patch(canary, JSON_PATCH, promote_patch())
    assert promoted == iris
    assert apply_patch(rollback, JSON_PATCH, promote_patch()) == iris


def test_promote_without_a_canary_does_not_apply(iris: dict[str, Any]) -> None:
    with pytest.raises(PatchError, match="missing path.*/spec/predictor/canaryTrafficPercent"):
        apply_patch(iris, JSON_PATCH, promote_patch())


def test_canary_patch_of_a_missing_component_creates_it(iris: dict[str, Any]) -> None:
    # As on a cluster, the merge itself succeeds; validating the result is the platform's job.
    result = apply_patch(iris, MERGE_PATCH, canary_patch(10, "transformer"))
    assert result["spec"]["transformer"] == {"canaryTrafficPercent": 10}
    with pytest.raises(PatchError, match="missing path"):
        apply_patch(iris, JSON_PATCH, promote_patch("transformer"))
