"""Parsing one CloudEvent: what the SDK reads in both modes, the data rules (JSON decoded,
anything else base64), the checks past the SDK's, and no body that raises anything else."""

from __future__ import annotations

import base64
import json

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.logsink.events import LoggedEvent, NotACloudEvent, is_json, parse_event
from tests.gateway.logsink.support import REQUEST, TIME, inference_event

STRUCTURED = {"content-type": "application/cloudevents+json"}
BINARY = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}


@pytest.mark.parametrize("convert", [to_binary, to_structured], ids=["binary", "structured"])
def test_both_modes_give_the_same_event(convert: object) -> None:
    headers, body = convert(inference_event({"instances": [[1, 2]]}))  # type: ignore[operator]
    event = parse_event(headers, body)
    assert event.model_dump(exclude_none=True) == {
        "specversion": "1.0", "id": "req-1", "source": "http://127.0.0.1:9000/iris",
        "type": REQUEST, "time": TIME, "datacontenttype": "application/json",
        "data": {"instances": [[1, 2]]}, "inferenceservicename": "iris", "namespace": "default",
        "component": "predictor", "endpoint": "default", "metadata": '{"x-tenant": ["a"]}',
    }
    assert event.extension("inferenceservicename") == "iris"


def test_a_line_is_the_event_in_the_cloudevents_json_format() -> None:
    headers, body = to_binary(inference_event({"inputs": []}))
    line = parse_event(headers, body).line()
    assert b"\n" not in line
    again = from_json(line)  # the SDK reads the line back as a structured event
    assert again["id"] == "req-1" and again["inferenceservicename"] == "iris"
    assert again.get_data() == {"inputs": []}


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x00\x01\xff binary tensor", "application/octet-stream"),
        (b"plain words", "text/plain"),
        (b"{not json", "application/json"),  # says JSON, is not: kept as the bytes that came
    ],
)
def test_data_that_is_not_json_is_kept_as_base64(data: bytes, content_type: str) -> None:
    headers, body = to_binary(inference_event(data, content_type=content_type))
    event = parse_event(headers, body)
    assert event.data is None
    assert event.data_base64 is not None and base64.b64decode(event.data_base64) == data


def test_a_structured_data_base64_and_no_data_at_all() -> None:
    headers, body = to_structured(CloudEvent({"type": "t", "source": "/s", "id": "1"}, b"\x00"))
    assert parse_event(headers, body).data_base64 == "AA=="
    event = parse_event(BINARY, b"")
    assert event.data is None and event.data_base64 is None


def test_the_sink_invents_no_time_the_sender_did_not_give() -> None:
    # The SDK's own CloudEvent would fill in "now": a log must not show a time nobody sent.
    assert parse_event(BINARY, b"").time is None


def _structured(**members: object) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", **members}
                      ).encode()


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({}, b"junk", "no ce-* headers (binary mode) and content type '(none)'"),
        ({"content-type": "application/json"}, b'{"instances": []}',
         "content type 'application/json', not application/cloudevents+json"),
        ({"ce-specversion": "1.0", "ce-id": "1"}, b"", "needs the ce-source, ce-type header"),
        (STRUCTURED, b"junk", "not a CloudEvent"),
        (STRUCTURED, b"[1, 2]", "not a CloudEvent"),
        (STRUCTURED, b"", "not a CloudEvent"),
        (STRUCTURED, b'{"specversion": "1.0"}', "Missing required attributes"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batched"),
        ({**BINARY, "ce-specversion": "0.9"}, b"", "invalid specversion 0.9"),
        ({**BINARY, "ce-id": ""}, b"", "id: String should have at least 1 character"),
        ({**BINARY, "ce-time": "yesterday"}, b"", "'yesterday' is not an RFC 3339 timestamp"),
        ({**BINARY, "ce-time": "2026-12-03T10:00:00"}, b"", "is not an RFC 3339 timestamp"),
        ({**BINARY, "ce-tenant_id": "x"}, b"", "'tenant_id' is not a CloudEvents name"),
        (STRUCTURED, _structured(id=7), "id: Input should be a valid string"),
        (STRUCTURED, _structured(tags={"a": 1}), "extension 'tags' is not a string"),
        (STRUCTURED, _structured(data_omitted_bytes=3), "is not an attribute name"),
    ],
)
def test_what_is_not_a_cloudevent_is_named(
    headers: dict[str, str], body: bytes, problem: str
) -> None:
    with pytest.raises(NotACloudEvent) as caught:
        parse_event(headers, body)
    assert problem in str(caught.value)
    assert caught.value.http_status == 400


def test_an_error_quoting_a_huge_body_stays_short() -> None:
    with pytest.raises(NotACloudEvent) as caught:
        parse_event(STRUCTURED, b"x" * 100_000)
    assert len(str(caught.value)) < 400


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time",
                         "ce-x", "content-type"]),
        st.text(max_size=20),
    ),
    body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
)
def test_any_request_parses_or_is_refused_as_not_a_cloudevent(
    headers: dict[str, str], body: bytes
) -> None:
    try:
        event = parse_event(headers, body)
    except NotACloudEvent:
        return
    assert isinstance(event, LoggedEvent)
    json.loads(event.line())


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [("application/json", True), ("application/json; charset=utf-8", True),
     ("application/vnd.api+json", True), ("text/plain", False), (None, False),
     ("application/octet-stream", False)],
)
def test_which_content_types_are_json(content_type: str | None, expected: bool) -> None:
    assert is_json(content_type) is expected
