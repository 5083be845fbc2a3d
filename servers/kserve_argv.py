"""kserve parses `sys.argv` when it is first imported (`kserve.model_server` builds its flags at
import time, with argparse's prefix matching: pytest's `--co` reads as `--configure_logging`).
Processes that are not KServe model servers import it with their own arguments hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["argv_hidden"]


@contextmanager
def argv_hidden() -> Iterator[None]:
    """Within this block `sys.argv` holds only the program name."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
