"""`loadtests/cpu.py` on real processes: a process tree's CPU includes its children's, a
process's own does not, and per-request figures divide what was used."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from loadtests.cpu import (
    CpuMeter,
    cpu_cells,
    metered,
    process_seconds,
    process_tree_seconds,
)
from loadtests.httpload import LoadResult

# A shell whose only work is a Python child that burns CPU until told to stop (its stdin closes).
_BURN = (
    f"{sys.executable} -c 'import sys, threading\n"
    "stop = threading.Event()\n"
    "threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()\n"
    "while not stop.is_set(): sum(range(1000))'"
)


def test_a_tree_counts_its_children_and_own_does_not() -> None:
    parent = subprocess.Popen(["sh", "-c", _BURN], stdin=subprocess.PIPE)
    try:
        meter = CpuMeter({"own": parent.pid}, {"tree": parent.pid})
        meter.start()
        deadline_cpu = process_tree_seconds(parent.pid) + 0.3
        while process_tree_seconds(parent.pid) < deadline_cpu:  # CPU time, not wall time
            pass
        used = meter.stop()
        assert used["tree"] >= 0.3
        assert used["own"] < used["tree"] / 10  # the shell only waits
        per = meter.per_request(1000)
        assert per["tree"] == used["tree"] / 1000 * 1e6
        assert cpu_cells(per, ["tree", "missing"]) == [f"{per['tree']:.0f}", ""]
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=30)


def test_a_gone_process_counts_nothing() -> None:
    assert process_seconds(2**22 + 7) == 0.0  # above Linux's largest pid_max
    assert CpuMeter({}, {}).per_request(0) == {}


def test_metered_divides_the_window_by_the_requests_completed() -> None:
    async def load() -> LoadResult:
        deadline = process_seconds(os.getpid()) + 0.05
        while process_seconds(os.getpid()) < deadline:  # this process's own CPU
            pass
        return LoadResult(connections=1, seconds=1.0, completed=50)

    result, used = asyncio.run(metered({"self": os.getpid()}, {}, load()))
    assert result.completed == 50
    # At least the 50 ms spent, a request's share of it: /proc's tick counts are exact, their
    # sums and differences in float seconds are not (999.99999999994 once), hence the slack.
    assert used["self"] >= 0.05 / 50 * 1e6 * (1 - 1e-9)
