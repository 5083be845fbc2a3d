"""Load shapes chosen with `--shape`: steps up to `-u` users, or a linear ramp to `-u` users.

Both read Locust's own `-u` (users) and `-t` (run time) options, and end with the run time.
The locustfile imports this module, never the classes, so Locust does not pick one by itself.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

__all__ = ["SHAPES", "RampShape", "StepShape"]


class _TargetShape(LoadTestShape):
    abstract = True
    use_common_options = True

    def _target(self) -> tuple[int, float] | None:
        """(users, run time in s) from the command line; None when no runner is attached."""
        if self.runner is None or self.runner.environment.parsed_options is None:
            return None
        options = self.runner.environment.parsed_options
        return int(options.num_users or 1), float(options.run_time or 60)

    def _progress(self) -> tuple[int, float, float] | None:
        """(users, run time, time run so far) while the run lasts; None once it is over."""
        target = self._target()
        run_time = self.get_run_time()
        if target is None or run_time >= target[1]:
            return None
        return target[0], target[1], run_time


class StepShape(_TargetShape):
    """`steps` equal steps of users, each held for an equal share of the run time."""

    steps = 4

    def tick(self) -> tuple[int, float] | None:
        progress = self._progress()
        if progress is None:
            return None
        users, duration, run_time = progress
        step = min(self.steps, int(run_time // (duration / self.steps)) + 1)
        count = max(1, math.ceil(users * step / self.steps))
        return count, float(count)


class RampShape(_TargetShape):
    """From one user to `-u` users, linearly over the run time."""

    def tick(self) -> tuple[int, float] | None:
        progress = self._progress()
        if progress is None:
            return None
        users, duration, run_time = progress
        count = max(1, math.ceil(users * run_time / duration))
        return count, float(users)


SHAPES: dict[str, type[LoadTestShape]] = {"step": StepShape, "ramp": RampShape}
