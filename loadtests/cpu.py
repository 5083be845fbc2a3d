"""CPU time per request, from `/proc/PID/stat`: what a benchmark's numbers mean on a shared host.

Requests per second move with whatever else the machine runs; the CPU seconds a process
spends on them barely do. `CpuMeter` reads utime + stime of each named process and of all
its descendants (a tritonserver's python-backend stubs, a launcher's children) before and
after a run, and `per_request` turns the delta into microseconds a request.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path

from loadtests.httpload import LoadResult

__all__ = ["CpuMeter", "cpu_cells", "metered", "process_seconds", "process_tree_seconds"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of `pid`, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` alone (0 when it is gone)."""
    stat = _stat(pid)
    return stat[1] if stat is not None else 0.0


def process_tree_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and every live descendant."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], used[int(entry.name)] = stat
    total = 0.0
    for candidate, seconds in used.items():
        node: int | None = candidate
        while node is not None and node > 1:
            if node == pid:
                total += seconds
                break
            node = parents.get(node)
    return total


class CpuMeter:
    """CPU seconds of named processes between `start()` and `stop()`: `own` alone (the
    gateway, whose children are the components), `trees` with their descendants."""

    def __init__(self, own: Mapping[str, int], trees: Mapping[str, int] | None = None) -> None:
        self.own = dict(own)
        self.trees = dict(trees or {})
        self._before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {
            **{name: process_seconds(pid) for name, pid in self.own.items()},
            **{name: process_tree_seconds(pid) for name, pid in self.trees.items()},
        }

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds each process (tree) used since `start()`."""
        self.seconds = {n: s - self._before.get(n, 0.0) for n, s in self._read().items()}
        return self.seconds

    def per_request(self, requests: int) -> dict[str, float]:
        """Microseconds of CPU a request, per tree (0 without requests)."""
        if requests <= 0:
            return dict.fromkeys(self.seconds, 0.0)
        return {name: s / requests * 1e6 for name, s in self.seconds.items()}



async def metered(
    own: Mapping[str, int], trees: Mapping[str, int], load: Awaitable[LoadResult]
) -> tuple[LoadResult, dict[str, float]]:
    """Await `load` under a `CpuMeter(own, trees)`: its result, and each process's µs of CPU
    per request it completed (its warm-up's included, as the meter's window is)."""
    meter = CpuMeter(own, trees)
    meter.start()
    result = await load
    meter.stop()
    return result, meter.per_request(result.completed)


def cpu_cells(per_request: Mapping[str, float], names: Sequence[str]) -> list[str]:
    """`per_request` (µs) of `names` as table cells, "" for a process not measured."""
    return [f"{per_request[name]:.0f}" if name in per_request else "" for name in names]
