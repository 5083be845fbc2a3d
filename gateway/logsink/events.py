"""One received CloudEvent, parsed by the `cloudevents` SDK and checked into a typed record.

`parse_event(headers, body)` reads HTTP binary mode (`ce-*` headers, the body is the data)
and structured mode (`application/cloudevents+json`) with the SDK's `from_http`, then checks
what the SDK lets through: `id`, `source`, `type` and `specversion` non-empty strings, `time`
an RFC 3339 timestamp, extension names as the spec spells them (lower-case letters and
digits: so a name with `_`, such as the markers below, can never be an attribute).

A `LoggedEvent` is the event in the CloudEvents JSON format (every attribute at the top level),
which is what the sink writes as one JSON line and serves at `/events`:
- `data`: the JSON value, when the event's content type is JSON (`application/json`,
  `*/*+json`) and the bytes parse, or when a structured event carried `data`;
- `data_base64`: the bytes, base64, for anything else (the JSON format's own marker);
- `data_omitted_bytes`: only in the sink's memory, for an event kept without its data
  (too large to keep; the file has all of it).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from cloudevents import abstract, conversion
from cloudevents import exceptions as ce_exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servers.errors import InvalidInput

__all__ = ["LoggedEvent", "NotACloudEvent", "is_json", "parse_event"]

_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
_MESSAGE_CHARS = 300  # the SDK's messages quote the body: keep an error short
_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"
_BINARY_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")

# The attributes of CloudEvents 1.0 that are not extensions, as the JSON format names them.
CONTEXT_ATTRIBUTES = frozenset(
    {"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject"}
)
DATA_MEMBERS = frozenset({"data", "data_base64", "data_omitted_bytes"})
Extension = str | int | bool


class NotACloudEvent(InvalidInput):
    """The request is not a CloudEvent the sink can record (400)."""


class LoggedEvent(BaseModel):
    """A CloudEvent in the JSON format: its attributes, extensions at the top level too (in
    `model_extra`), and its data as `data`, `data_base64` or `data_omitted_bytes`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: str = Field(min_length=1, strict=True)
    id: str = Field(min_length=1, strict=True)
    source: str = Field(min_length=1, strict=True)
    type: str = Field(min_length=1, strict=True)
    time: str | None = Field(None, strict=True)
    datacontenttype: str | None = Field(None, strict=True)
    dataschema: str | None = Field(None, strict=True)
    subject: str | None = Field(None, strict=True)
    data: Any = None
    data_base64: str | None = Field(None, strict=True)
    data_omitted_bytes: int | None = Field(None, ge=0, strict=True)

    @field_validator("time")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                raise ValueError(f"time {value[:60]!r} is not an RFC 3339 timestamp")
        return value

    @model_validator(mode="after")
    def _extensions(self) -> LoggedEvent:
        for name, value in (self.model_extra or {}).items():
            if not _EXTENSION_NAME.fullmatch(name):
                raise ValueError(
                    f"attribute name {name[:40]!r} is not a CloudEvents name "
                    "(lower-case letters and digits only)"
                )
            if not isinstance(value, Extension):
                raise ValueError(f"extension {name!r} is not a string, integer or boolean")
        return self

    def extension(self, name: str) -> Extension | None:
        """An extension attribute's value (`inferenceservicename`, `component`...), or None."""
        value = (self.model_extra or {}).get(name)
        return value if isinstance(value, Extension) else None

    def line(self) -> bytes:
        """The event as one line of JSON (no newline: orjson escapes the ones in strings)."""
        return orjson.dumps(self.model_dump(exclude_none=True))

    def without_data(self) -> LoggedEvent:
        """This event with its data left out, and its size (in the line) said instead."""
        size = len(orjson.dumps(self.data)) if self.data is not None else 0
        size += len(self.data_base64 or "")
        update: dict[str, Any] = {"data": None, "data_base64": None, "data_omitted_bytes": size}
        return self.model_copy(update=update)


class _Received(abstract.CloudEvent):
    """The SDK's event contract, as received: unlike the SDK's `CloudEvent`, it invents no
    `id` or `time` the sender did not give (a log must not show a time nobody sent)."""

    def __init__(self, attributes: Mapping[str, Any], data: Any) -> None:
        self._attributes = dict(attributes)
        self._data = data

    @classmethod
    def create(cls, attributes: Mapping[str, Any], data: Any | None) -> _Received:
        return cls(attributes, data)

    def _get_attributes(self) -> dict[str, Any]:
        return self._attributes

    def get_data(self) -> Any | None:
        return self._data


def is_json(content_type: str | None) -> bool:
    """Whether a content type says JSON: `application/json` or any `+json` type."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _raw(content: str | bytes | None) -> str | bytes | None:
    # The data as it came: bytes of a binary-mode body or a structured `data_base64`, the
    # JSON text (re-serialized by the SDK) of a structured `data`.
    return content


def _data_members(data: Any, content_type: str | None) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, str):  # a structured event's `data`: JSON by construction
        return {"data": orjson.loads(data)}
    if isinstance(data, bytes | bytearray):
        if not data:
            return {}
        if is_json(content_type):
            try:
                return {"data": orjson.loads(data)}
            except orjson.JSONDecodeError:
                pass  # said JSON, is not: recorded as the bytes that came
        return {"data_base64": base64.b64encode(data).decode("ascii")}
    raise NotACloudEvent(f"unexpected data of type {type(data).__name__}")


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "…"


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _check_mode(headers: Mapping[str, str]) -> None:
    """Say which mode the request fails, where the SDK's message would not."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if any(name.startswith("ce-") for name in headers):
        missing = [name for name in _BINARY_REQUIRED if name not in headers]
        if missing:
            raise NotACloudEvent(f"a binary-mode CloudEvent needs the {', '.join(missing)} "
                                 "header(s)")
    elif media == _BATCH:
        raise NotACloudEvent("batched CloudEvents are not accepted: send one event per request")
    elif media != _STRUCTURED:
        raise NotACloudEvent(
            f"not a CloudEvent: no ce-* headers (binary mode) and content type "
            f"{media[:60] or '(none)'!r}, not {_STRUCTURED} (structured mode)"
        )


def parse_event(headers: Mapping[str, str], body: bytes) -> LoggedEvent:
    """The CloudEvent of an HTTP request (header names in any case), or NotACloudEvent
    naming the problem. CPU-bound for large bodies: call it off the event loop."""
    lowered = {name.lower(): value for name, value in headers.items()}
    _check_mode(lowered)
    try:
        event = conversion.from_http(_Received, lowered, body, data_unmarshaller=_raw)
    except (ce_exceptions.GenericException, ValueError, TypeError, KeyError,
            AttributeError) as exc:
        raise NotACloudEvent(_short(f"not a CloudEvent: {exc}")) from exc
    attributes = dict(event.get_attributes())
    unknown_data = DATA_MEMBERS & attributes.keys()
    if unknown_data:
        name = sorted(unknown_data)[0]
        raise NotACloudEvent(f"{name!r} is not an attribute name")
    try:
        members = _data_members(event.get_data(), attributes.get("datacontenttype"))
        return LoggedEvent.model_validate({**attributes, **members})
    except orjson.JSONDecodeError as exc:
        raise NotACloudEvent(_short(f"data is not JSON: {exc}")) from exc
    except ValidationError as exc:
        raise NotACloudEvent(_short(f"not a valid CloudEvent: {_problem(exc)}")) from exc
