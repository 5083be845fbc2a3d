"""The sink's memory: newest first, and bounded per service, in services and in bytes."""

from __future__ import annotations

import json

from gateway.logsink.events import LoggedEvent
from gateway.logsink.store import RecentEvents


def _event(service: str | None, number: int, data: object = None) -> LoggedEvent:
    extra = {"inferenceservicename": service} if service is not None else {}
    return LoggedEvent.model_validate({
        "specversion": "1.0", "id": f"{service}-{number}", "source": "/s", "type": "t",
        "data": data if data is not None else {"n": number}, **extra,
    })


def _add(store: RecentEvents, event: LoggedEvent) -> None:
    store.add(event, event.line())


def _ids(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def test_the_last_events_of_a_service_newest_first() -> None:
    store = RecentEvents(per_service=3, max_services=10, max_bytes=1 << 20,
                         max_event_bytes=1 << 20)
    for n in range(5):
        _add(store, _event("iris", n))
    _add(store, _event("digits", 0))
    assert _ids(store.lines("iris", 10)) == ["iris-4", "iris-3", "iris-2"]
    assert _ids(store.lines("iris", 2)) == ["iris-4", "iris-3"]
    assert _ids(store.lines(None, 3)) == ["digits-0", "iris-4", "iris-3"]
    assert store.lines("unknown", 10) == []
    assert len(store) == 4


def test_events_without_a_service_name_are_kept_under_the_empty_name() -> None:
    store = RecentEvents(per_service=3, max_services=10, max_bytes=1 << 20,
                         max_event_bytes=1 << 20)
    _add(store, _event(None, 1))
    assert _ids(store.lines("", 10)) == ["None-1"]


def test_the_least_recently_heard_service_goes_first() -> None:
    store = RecentEvents(per_service=5, max_services=2, max_bytes=1 << 20,
                         max_event_bytes=1 << 20)
    _add(store, _event("a", 0))
    _add(store, _event("b", 0))
    _add(store, _event("a", 1))  # a is heard again: b is now the quiet one
    _add(store, _event("c", 0))
    assert store.lines("b", 10) == []
    assert _ids(store.lines(None, 10)) == ["c-0", "a-1", "a-0"]


def test_the_byte_budget_drops_the_oldest_event_of_any_service() -> None:
    one = len(_event("a", 0).line())
    store = RecentEvents(per_service=100, max_services=10, max_bytes=3 * one,
                         max_event_bytes=one)
    _add(store, _event("a", 0))
    _add(store, _event("b", 0))
    _add(store, _event("a", 1))
    _add(store, _event("b", 1))
    assert _ids(store.lines(None, 10)) == ["b-1", "a-1", "b-0"]
    assert store.kept_bytes <= 3 * one


def test_a_large_event_is_kept_without_its_data_and_says_how_big_it_was() -> None:
    store = RecentEvents(per_service=10, max_services=10, max_bytes=1 << 20,
                         max_event_bytes=1000)
    big = _event("iris", 0, data={"instances": ["x" * 5000]})
    _add(store, big)
    kept = json.loads(store.lines("iris", 1)[0])
    assert "data" not in kept and kept["data_omitted_bytes"] == len(json.dumps(
        big.data, separators=(",", ":")))
    assert kept["id"] == "iris-0" and kept["inferenceservicename"] == "iris"
    assert store.kept_bytes == len(store.lines("iris", 1)[0])
