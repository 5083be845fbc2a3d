"""The adaptive batcher: merged calls, results split per request, failures isolated, bounded."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest

from servers.batching import AdaptiveBatcher, BatchSettings, QueueFull
from servers.errors import ModelServeError
from tests.support import ServerProcess


class Model:
    """Doubles each row's sum; refuses negative rows; records the batch sizes it saw."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.hold = hold

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.hold is not None:
            self.hold.wait(10)
        self.batches.append(len(rows))
        if np.any(rows < 0):
            raise ValueError("negative rows")
        return rows.sum(axis=1) * 2


def _requests(count: int) -> list[np.ndarray]:
    return [np.full((1 + i % 3, 4), float(i)) for i in range(count)]


async def _submit_all(batcher: AdaptiveBatcher, requests: list[np.ndarray]) -> list[object]:
    return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)


def test_concurrent_requests_are_merged_and_split_back() -> None:
    hold = threading.Event()
    model = Model(hold)

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(model, BatchSettings(max_batch_size=64))
        first = asyncio.create_task(batcher.submit(np.ones((1, 4))))
        await asyncio.sleep(0.05)  # the first call is running (held): the rest queue up
        rest = asyncio.create_task(_submit_all(batcher, _requests(30)))
        await asyncio.sleep(0.05)
        hold.set()
        await first
        return await rest

    results = asyncio.run(run())
    for request, result in zip(_requests(30), results, strict=True):
        np.testing.assert_array_equal(result, request.sum(axis=1) * 2)
    # One call for the first request, then the 30 queued ones (60 rows) in one more.
    assert model.batches == [1, sum(len(r) for r in _requests(30))]


def test_batches_never_exceed_max_batch_size() -> None:
    hold = threading.Event()
    model = Model(hold)

    async def run() -> None:
        batcher = AdaptiveBatcher(model, BatchSettings(max_batch_size=8))
        pending = asyncio.create_task(_submit_all(batcher, _requests(40)))
        await asyncio.sleep(0.05)
        hold.set()
        await pending
        assert batcher.calls == len(model.batches)

    asyncio.run(run())
    assert max(model.batches) <= 8
    assert len(model.batches) < 40


def test_a_bad_request_fails_alone() -> None:
    hold = threading.Event()
    model = Model(hold)
    requests = _requests(6)
    requests[3] = -np.ones((2, 4))

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(model, BatchSettings(max_batch_size=64))
        first = asyncio.create_task(batcher.submit(np.ones((1, 4))))
        await asyncio.sleep(0.05)
        rest = asyncio.create_task(_submit_all(batcher, requests))
        await asyncio.sleep(0.05)
        hold.set()
        await first
        return await rest

    results = asyncio.run(run())
    assert isinstance(results[3], ValueError)
    for index, (request, result) in enumerate(zip(requests, results, strict=True)):
        if index != 3:
            np.testing.assert_array_equal(result, request.sum(axis=1) * 2)


def test_full_queue_answers_503() -> None:
    hold = threading.Event()

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(Model(hold), BatchSettings(max_batch_size=4, max_queue=3))
        running = asyncio.create_task(batcher.submit(np.ones((1, 4))))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(np.ones((1, 4)))) for _ in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await batcher.submit(np.ones((1, 4)))
        assert info.value.http_status == 503
        hold.set()
        await running
        return list(await asyncio.gather(*queued))

    assert len(asyncio.run(run())) == 3


def test_wrong_result_count_fails_every_waiter() -> None:
    async def run() -> list[object]:
        batcher = AdaptiveBatcher(lambda rows: rows[:1, 0], BatchSettings(max_batch_size=8))
        return await _submit_all(batcher, [np.ones((2, 4)), np.ones((3, 4))])

    results = asyncio.run(run())
    assert all(isinstance(r, ModelServeError) for r in results)
    assert "results for" in str(results[0])


def test_latency_budget_waits_for_company() -> None:
    model = Model()

    async def run() -> None:
        batcher = AdaptiveBatcher(model, BatchSettings(max_batch_size=8, max_latency_us=200_000))
        first = asyncio.create_task(batcher.submit(np.ones((1, 4))))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(batcher.submit(np.ones((1, 4))))
        await asyncio.gather(first, second)

    asyncio.run(run())
    assert model.batches == [2]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BatchSettings(max_batch_size=0)


def test_server_answers_concurrent_requests_correctly(sklearn_server: ServerProcess) -> None:
    # The test server batches by default: many concurrent requests, each its own answer.
    rows = [[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.8, 4.4, 1.3]]
    expected = [0, 2, 1]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sklearn_server.http_url) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/models/sklearn-iris:predict",
                        json={"instances": [rows[i % 3]] * (1 + i % 4)},
                    )
                    for i in range(60)
                )
            )

    for i, response in enumerate(asyncio.run(run())):
        assert response.json() == {"predictions": [expected[i % 3]] * (1 + i % 4)}


def test_named_arrays_are_merged_and_split_by_name() -> None:
    """A TensorFlow signature's rows: several named inputs in, several named outputs out."""
    hold = threading.Event()
    seen: list[int] = []

    def signature(rows: object) -> dict[str, np.ndarray]:
        assert isinstance(rows, dict)
        hold.wait(10)
        seen.append(len(rows["a"]))
        if np.any(rows["b"] < 0):
            raise ValueError("negative b")
        return {"sum": rows["a"] + rows["b"], "a_twice": rows["a"] * 2}

    requests = [
        {
            "a": np.full((1 + i % 2, 3), float(i)),
            "b": np.full((1 + i % 2, 3), -1.0 if i == 4 else 1.0),
        }
        for i in range(9)
    ]

    async def run() -> list[object]:
        batcher = AdaptiveBatcher(signature, BatchSettings(max_batch_size=64))
        first = asyncio.create_task(batcher.submit(requests[0]))
        await asyncio.sleep(0.05)
        rest = asyncio.gather(*(batcher.submit(r) for r in requests[1:]), return_exceptions=True)
        await asyncio.sleep(0.05)
        hold.set()
        return [await first, *(await rest)]

    results = asyncio.run(run())
    for i, (request, result) in enumerate(zip(requests, results, strict=True)):
        if i == 4:
            assert isinstance(result, ValueError)  # the bad request fails alone
            continue
        assert isinstance(result, dict)
        np.testing.assert_array_equal(result["sum"], request["a"] + request["b"])
        np.testing.assert_array_equal(result["a_twice"], request["a"] * 2)
    assert seen[:2] == [1, sum(len(r["a"]) for r in requests[1:])]  # one merged call first
