"""The control plane's body parsing: no aliases, bounded depth, bounded size while streaming."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.bodies import read_body
from gateway.controlplane.api.documents import parse_document
from servers.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MANIFEST = b"""apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
spec:
  predictor:
    model: {modelFormat: {name: sklearn}, storageUri: "pvc://m/iris"}
"""


def test_a_manifest_parses_as_yaml_and_json() -> None:
    doc = parse_document(MANIFEST, "application/yaml; charset=utf-8", 64)
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "pvc://m/iris"
    assert parse_document(b'{"a": [1, {"b": 2}]}', "application/json", 64) == {"a": [1, {"b": 2}]}
    patch = parse_document(b'[{"op": "remove", "path": "/x"}]', "application/json-patch+json", 8)
    assert patch[0]["op"] == "remove"


def test_a_billion_laughs_is_refused_at_its_first_anchor() -> None:
    bomb = b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + b"".join(
        b"%c: &%c [%s]\n" % (98 + i, 98 + i, b",".join([b"*%c" % (97 + i)] * 9))
        for i in range(8)
    )
    with pytest.raises(InvalidInput, match="anchors are not accepted"):
        parse_document(bomb, "application/yaml", 64)


def test_aliases_and_several_documents_are_refused() -> None:
    with pytest.raises(InvalidInput, match="aliases"):
        # An alias to an undefined anchor still never gets composed.
        parse_document(b"a: *nothing\n", "application/x-yaml", 64)
    with pytest.raises(InvalidInput, match="several YAML documents"):
        parse_document(b"a: 1\n---\nb: 2\n", "application/yaml", 64)
    with pytest.raises(InvalidInput, match="not YAML"):
        parse_document(b"a: [1, 2\n", "application/yaml", 64)


@pytest.mark.parametrize("media", ["application/yaml", "application/json"])
def test_nesting_is_limited(media: str) -> None:
    deep = b"[" * 100 + b"]" * 100
    with pytest.raises(InvalidInput, match="deeper than the limit of 64"):
        parse_document(deep, media, 64)
    assert parse_document(b"[" * 10 + b"]" * 10, media, 64) is not None


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data", "", "text/yaml"])
def test_only_json_yaml_and_patch_types_are_accepted(media: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="not accepted"):
        parse_document(b"{}", media, 64)


def _receiver(chunks: list[bytes]) -> tuple[Any, list[int]]:
    reads = [0]

    async def receive() -> dict[str, Any]:
        index = reads[0]
        reads[0] += 1
        return {"type": "http.request", "body": chunks[index],
                "more_body": index + 1 < len(chunks)}

    return receive, reads


def test_a_streamed_body_stops_being_read_once_past_the_limit() -> None:
    receive, reads = _receiver([b"x" * 1000] * 300)
    with pytest.raises(PayloadTooLarge, match="limit of 4096 bytes"):
        asyncio.run(read_body(receive, None, 4096, "the control plane's"))
    assert reads[0] == 5  # not one chunk more than needed to cross the limit


def test_a_declared_length_over_the_limit_reads_nothing() -> None:
    receive, reads = _receiver([b"x"])
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(receive, 300 << 20, 4096))
    assert reads[0] == 0
    receive, _ = _receiver([b"ab", b"cd"])
    assert asyncio.run(read_body(receive, 4, 4096)) == b"abcd"
