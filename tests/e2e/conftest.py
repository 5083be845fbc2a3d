"""`modelserve up` started once for the e2e tests: every demo service behind the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Platform, run_platform

__all__ = ["Platform"]


@pytest.fixture(scope="session")
def platform(models_root: Path, logs: Path) -> Iterator[Platform]:
    with run_platform(models_root, logs) as running:
        yield running
