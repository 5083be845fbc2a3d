"""The benchmarks' tables: ratios between measured results, and text or markdown output."""

from __future__ import annotations

from pathlib import Path

from loadtests.httpload import LoadResult

__all__ = ["ONE_REPLICA", "loadavg", "measured_cells", "print_table", "ratio"]

# The environment of a benchmark's `modelserve up`: the autoscaler off, so each revision keeps
# one replica and "through the gateway" compares the same one process with calling it directly.
ONE_REPLICA = {"MODELSERVE_AUTOSCALER_ENABLED": "false"}


def ratio(result: LoadResult, reference: LoadResult | None) -> str:
    """`result`'s throughput as a multiple of `reference`'s ("" without a reference)."""
    if reference is None or not reference.rps:
        return ""
    return f"{result.rps / reference.rps:.2f}x"


def measured_cells(result: LoadResult, per_request: int, client_cpu: float) -> list[str]:
    """req/s, items/s (`per_request` a request), p50 and p99 ms, errors, the load generator's
    cores: the columns every benchmark table shares."""
    return [
        f"{result.rps:.0f}", f"{result.rps * per_request:.0f}",
        f"{result.percentile(50):.2f}", f"{result.percentile(99):.2f}",
        str(result.errors), f"{client_cpu:.2f}",
    ]


def print_table(header: list[str], rows: list[list[str]], markdown: bool, left: int = 2) -> None:
    """Rows under `header`, the first `left` columns left-aligned, the rest right-aligned."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * left + "---:|" * (len(header) - left))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())


def loadavg() -> str:
    """The machine's 1, 5 and 15 minute load averages, for the record beside a table."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"
