"""`modelserve logsink` as users run it: a process that says where it listens, writes the
line of an event it receives, and stops cleanly on SIGTERM; and what stops it from starting."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.gateway.logsink.support import inference_event, lines, send

MODELSERVE = str(Path(sys.executable).parent / "modelserve")
LISTENING = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")


def test_the_sink_receives_an_event_writes_its_line_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    out = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [MODELSERVE, "logsink", "--out", str(out), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # printed once it listens
        found = LISTENING.search(banner)
        assert found, banner
        assert str(out).encode() in banner
        answer = send(found.group(1).decode(), inference_event({"instances": [[5.1, 3.5]]}))
        assert answer.status_code == 200
        (line,) = lines(out)
        assert line["id"] == "req-1" and line["data"] == {"instances": [[5.1, 3.5]]}
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert b"stopping" in rest and b"Traceback" not in rest


def test_an_unwritable_out_file_stops_it_and_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "events.jsonl"
    result = subprocess.run(
        [MODELSERVE, "logsink", "--out", str(missing), "--port", "0"],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"cannot append to {missing}".encode() in result.stderr


def test_a_port_in_use_stops_it_and_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [MODELSERVE, "logsink", "--out", str(tmp_path / "e.jsonl"), "--port", str(port)],
            capture_output=True, timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
