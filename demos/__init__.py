"""The demo models, trained from data that ships with scikit-learn (nothing is downloaded).

Not part of what runs in a pod (the runtime images leave this package out): `modelserve
build-models`, the tests and the benchmarks train them. One module per demo, found by
looking: a module with `build(out) -> Path` (the model directory it wrote), `REQUIRES` (the
modules it needs; without them it is skipped with a warning naming the extra) and
`BUILD_ORDER` (demos built from others' output come later).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
from pathlib import Path
from types import ModuleType

__all__ = ["build_all", "demo_modules"]

log = logging.getLogger("modelserve.models")

# The pip extra that brings each required module.
_EXTRAS = {
    "tensorflow": "tensorflow", "tf2onnx": "triton", "onnxruntime": "triton",
    "xgboost": "xgboost", "lightgbm": "lightgbm",
}


def demo_modules() -> list[ModuleType]:
    """The demo modules of this package, in build order."""
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
    ]
    demos = [m for m in modules if callable(getattr(m, "build", None))]
    return sorted(demos, key=lambda m: (getattr(m, "BUILD_ORDER", 100), m.__name__))


def build_all(out: Path) -> list[Path]:
    """Build every demo model under `out` whose requirements are installed; returns the model
    directories. A demo whose modules are missing is skipped with a warning."""
    built = []
    for module in demo_modules():
        missing = [r for r in module.REQUIRES if importlib.util.find_spec(r) is None]
        if missing:
            extras = sorted({_EXTRAS.get(m, m) for m in missing})
            log.warning("%s is not installed: skipping the %s demo (pip install '.[%s]')",
                        ", ".join(missing), module.__name__.rsplit(".", 1)[-1], ",".join(extras))
            continue
        built.append(module.build(out))
    return built
