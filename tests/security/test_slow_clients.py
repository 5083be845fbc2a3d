"""Slow clients against the real `modelserve up` under Debian's default `ulimit -n 1024`.

2,000 slowloris clients from 127.0.0.2 (half a header, then a byte a second, reconnecting a
second after each close, as slowloris does) run for ATTACK_S in a process of their own, with
their own raised open-files limit; meanwhile normal clients from 127.0.0.1 ask for
/v2/health/live and for a prediction on fresh connections. Without the front door every
probe fails for the whole attack (the attack takes every file, accept() fails); with it, the
attacker holds at most `max_connections_per_client` connections and the rest are refused at
once, so the probes are served.

The attacker runs this module (`python -m tests.security.test_slow_clients PORT N SECONDS`)
and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from demos.iris import build_iris
from tests.support import ROOT, Platform, run_platform

pytestmark = pytest.mark.e2e

NOFILE = 1024  # Debian's default soft limit, made the hard one too: the gateway cannot lift it
ATTACKERS = 2000
ATTACK_S = 25.0
BODY_TIMEOUT_S = 5.0
PREDICT = {"instances": [[6.8, 2.8, 4.8, 1.4]]}


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`modelserve up inferenceservices/sklearn-iris.yaml` under `ulimit -n 1024`."""
    tmp = tmp_path_factory.mktemp("slow_clients")
    build_iris(tmp / "models")
    env = {"MODELSERVE_GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    files = [ROOT / "inferenceservices" / "sklearn-iris.yaml"]
    with run_platform(tmp / "models", tmp, files, env=env, preexec_fn=_limit_files) as running:
        yield running


def _probe(url: str) -> bool:
    """One health check and one prediction, each on a fresh connection."""
    try:
        live = httpx.get(f"{url}/v2/health/live", timeout=5)
        predicted = httpx.post(f"{url}/v1/models/sklearn-iris:predict", json=PREDICT, timeout=5)
    except httpx.HTTPError:
        return False
    return live.status_code == 200 and predicted.json().get("predictions") == [1]


def _raise_own_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 4 * ATTACKERS if hard == resource.RLIM_INFINITY else min(hard, 4 * ATTACKERS)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def test_normal_clients_are_served_through_a_slowloris_attack(gateway: Platform) -> None:
    attacker = subprocess.Popen(
        [sys.executable, "-m", "tests.security.test_slow_clients", str(gateway.port),
         str(ATTACKERS), str(ATTACK_S)],
        stdout=subprocess.PIPE, cwd=ROOT, preexec_fn=_raise_own_limit,
    )
    try:
        time.sleep(3)  # the attack ramps up
        results: list[bool] = []
        took: list[float] = []
        most_files = 0
        deadline = time.monotonic() + ATTACK_S - 6
        while time.monotonic() < deadline:
            start = time.monotonic()
            results.append(_probe(gateway.url))
            took.append(time.monotonic() - start)
            most_files = max(most_files, _open_files(gateway.process.pid))
            time.sleep(0.2)
        out, _ = attacker.communicate(timeout=ATTACK_S + 60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    seen = json.loads(out)
    served = sum(results) / len(results)
    took.sort()
    print(f"probes served {sum(results)}/{len(results)} (median {took[len(took) // 2]:.2f} s, "
          f"slowest {took[-1]:.2f} s); gateway's most open files {most_files}; "
          f"attacker saw {seen}")
    # 1024 files less the reserve (128 + one backend pool of 256): the cap was lowered, loudly.
    assert "lowers max_connections 4096 -> 640" in gateway.log.read_text()
    # The attack bit: the attacker was refused and timed out, and it held at most the cap.
    assert seen["refused"] > 0 and seen["timed_out"] > 0
    # max_connections_per_client, and a margin for connections not yet accepted after 1 s
    assert seen["most_held"] <= 256 + 64
    assert most_files < NOFILE
    assert served >= 0.9, f"only {served:.0%} of the probes were served"


def test_body_short_of_its_length_gets_408_within_the_body_timeout(gateway: Platform) -> None:
    head = (b"POST /v1/models/sklearn-iris:predict HTTP/1.1\r\nhost: gateway\r\n"
            b"content-type: application/json\r\ncontent-length: 100\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=BODY_TIMEOUT_S * 4) as sock:
        sock.sendall(head + b'{"instances": ')
        start = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - start
    head_out, _, body = answer.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head_out
    assert "body" in json.loads(body)["error"]
    assert waited < BODY_TIMEOUT_S * 4  # answered and closed, not held


# --- the attacker (its own process) -------------------------------------------------------


async def _slow_client(port: int, until: float, seen: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0))
        except OSError:
            seen["connect_failed"] += 1
            await asyncio.sleep(1)
            continue
        answer = asyncio.ensure_future(reader.read(65536))
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: gateway\r\nx-slow: ")
        await asyncio.wait([answer], timeout=1.0)
        held = not answer.done()  # still open after a second: the gateway holds it
        if held:
            seen["held"] += 1
            seen["most_held"] = max(seen["most_held"], seen["held"])
        while not answer.done() and loop.time() < until:
            writer.write(b"a")
            await asyncio.wait([answer], timeout=1.0)
        seen["held"] -= held
        if answer.done():
            try:
                data = answer.result()
            except OSError:
                data = b""
            seen["refused" if data.startswith(b"HTTP/1.1 503")
                 else "timed_out" if data.startswith(b"HTTP/1.1 408") else "closed"] += 1
        else:
            answer.cancel()
        writer.close()
        await asyncio.sleep(1)


async def _attack(port: int, clients: int, seconds: float) -> Counter[str]:
    seen: Counter[str] = Counter(refused=0, timed_out=0, closed=0, most_held=0)
    until = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(_slow_client(port, until, seen) for _ in range(clients)))
    return seen


if __name__ == "__main__":
    import uvloop

    port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seen = runner.run(_attack(port, clients, seconds))
    print(json.dumps(dict(seen)))
