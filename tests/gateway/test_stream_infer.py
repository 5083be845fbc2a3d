"""gRPC `ModelStreamInfer` through the gateway, with tritonclient's own stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from gateway.dataplane.grpc_stream import answer_in_order, stream_error
from gateway.dataplane.server import GatewayServer
from tests.gateway.conftest import LoopThread
from tests.support import ROOT

_STREAM = """
import json, queue, sys
import numpy as np
import tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
answers = queue.Queue()
def on_answer(result, error):
    if error is not None:
        answers.put({"error": error.message()})
    else:
        answers.put({"id": result.get_response().id,
                     "predict": result.as_numpy("predict").tolist()})
def tensor(array):
    t = g.InferInput("input-0", list(array.shape), "FP64")
    t.set_data_from_numpy(array)
    return t
good = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
client.start_stream(callback=on_answer)
for i, (model, array) in enumerate(json.loads(sys.argv[2])):
    client.async_stream_infer(model, [tensor(np.array(array))], request_id=f"r{i}")
client.stop_stream()  # waits for every answer
out = []
while not answers.empty():
    out.append(answers.get())
print(json.dumps(out))
"""


def stream(target: str, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Send `requests` (model, input rows) over one tritonclient.grpc stream, in its own
    process (kserve/kserve#3099); the answers, in the order they came."""
    completed = subprocess.run(
        [sys.executable, "-c", _STREAM, target, json.dumps(requests)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    answers: list[dict[str, Any]] = json.loads(completed.stdout)
    return answers


def test_answers_in_order_and_survives_bad_messages(sklearn_gateway: GatewayServer) -> None:
    good = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    requests: list[tuple[str, Any]] = [("sklearn-iris", good) for _ in range(40)]
    requests[3] = ("sklearn-iris", [[1.0, 2.0, 3.0]])  # wrong shape
    requests[7] = ("nope", good)  # no such service
    answers = stream(f"127.0.0.1:{sklearn_gateway.grpc_port}", requests)
    assert len(answers) == 40
    for index, answer in enumerate(answers):
        if index == 3:
            assert "shape" in answer["error"] or "4" in answer["error"], answer
        elif index == 7:
            assert "'nope' not found" in answer["error"], answer
        else:
            assert answer == {"id": f"r{index}", "predict": [0, 2]}, (index, answer)


def test_a_long_stream_is_held_to_its_window(sklearn_gateway: GatewayServer) -> None:
    # More requests than the window (64): the gateway reads on as answers go out.
    requests: list[tuple[str, Any]] = [("sklearn-iris", [[5.1, 3.5, 1.4, 0.2]])] * 150
    answers = stream(f"127.0.0.1:{sklearn_gateway.grpc_port}", requests)
    assert [a["id"] for a in answers] == [f"r{i}" for i in range(150)]


def test_answer_in_order_keeps_order_whatever_finishes_first(loop_thread: LoopThread) -> None:
    async def scenario() -> list[bytes]:
        async def requests() -> Any:
            for delay in (3, 1, 2, 0):
                yield bytes([delay])

        async def answer(request: bytes) -> bytes:
            await asyncio.sleep(request[0] / 100)
            return request

        return [a async for a in answer_in_order(requests(), answer, window=2)]

    assert loop_thread.run(scenario()) == [bytes([3]), bytes([1]), bytes([2]), bytes([0])]


def test_stream_error_carries_the_request_id() -> None:
    request = b"\x0a\x01m" + b"\x1a\x02r7"  # model_name "m", id "r7"
    assert stream_error(request, "bad") == b"\x0a\x03bad" + b"\x12\x04" + b"\x1a\x02r7"
