"""Request bodies of the control plane, parsed so that no body can stall the gateway.

- **Read while streaming, never past the limit** (`gateway.bodies.read_body`, the data
  plane's reader too); the connection is closed after the 413.
- **YAML without anchors and aliases** (KServe manifests never need them; a 645-byte YAML
  with seven levels of aliases expands to ~300 MB: "billion laughs"), with a nesting limit.
  PyYAML's safe loader builds only plain types; this one also refuses `&anchor` and `*alias`
  events as the composer meets them, so a bomb is refused at its first alias.
- **JSON with a nesting limit** (orjson parses in C; its own recursion limit is 1024).
- Parsing runs in a worker thread: a large but legal document does not hold the event loop
  that serves inference.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import yaml

from servers.errors import InvalidInput, UnsupportedMediaType

__all__ = [
    "BODY_MEDIA_TYPES",
    "JSON_TYPES",
    "YAML_TYPES",
    "media_type",
    "parse_document",
    "parse_document_async",
]

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml"})
JSON_TYPES = frozenset(
    {
        "application/json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
    }
)
# Never text/plain or a form: those a foreign web page can send without a CORS preflight.
BODY_MEDIA_TYPES = YAML_TYPES | JSON_TYPES


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower-case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases and nesting deeper than `max_depth`."""

    max_depth = 64

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        mark = event.start_mark
        line = f"line {mark.line + 1}" if mark is not None else "somewhere"
        if isinstance(event, yaml.AliasEvent):
            raise InvalidInput(
                f"YAML aliases are not accepted ({line}): InferenceService manifests never "
                "need anchors or aliases"
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise InvalidInput(
                f"YAML anchors are not accepted (&{anchor[:40]}, {line}): InferenceService "
                "manifests never need them"
            )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise InvalidInput(f"YAML nesting is deeper than the limit of {self.max_depth}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _json_depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_document(body: bytes, content_type: str | None, max_depth: int) -> Any:
    """A JSON or YAML body as plain Python values.

    Raises UnsupportedMediaType (415) for any other media type, InvalidInput (400) naming the
    problem for a body that does not parse, nests deeper than `max_depth`, or holds YAML
    anchors, aliases or several documents.
    """
    media = media_type(content_type)
    if media in YAML_TYPES:
        loader_class = type("_Loader", (_NoAliasLoader,), {"max_depth": max_depth})
        loader = loader_class(body)
        try:
            return loader.get_single_data()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc):
                raise InvalidInput(
                    "request body holds several YAML documents: send one per request"
                ) from exc
            raise InvalidInput(f"request body is not YAML: {exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInput(f"request body is not YAML: {exc}") from exc
        finally:
            loader.dispose()
    if media not in JSON_TYPES:
        allowed = ", ".join(sorted(BODY_MEDIA_TYPES))
        raise UnsupportedMediaType(
            f"content type {media or '(none)'!r} is not accepted here; send one of {allowed}"
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not JSON: {exc}") from exc
    if not _json_depth_ok(value, max_depth):
        raise InvalidInput(f"JSON nesting is deeper than the limit of {max_depth}")
    return value


async def parse_document_async(body: bytes, content_type: str | None, max_depth: int) -> Any:
    """`parse_document` in a worker thread, so the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(parse_document, body, content_type, max_depth)
