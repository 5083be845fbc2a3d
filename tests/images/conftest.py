"""The image tier: the images `make images` built, run with podman or docker.

`make test` builds the images first where buildah or Docker is present and sets
MODELSERVE_IMAGE_TIER=1: then a missing image or runtime fails the tier. Without it (no
builder, `pytest` alone) the tier skips, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.images.containers import Runtime, find_runtime
from tests.support import ROOT

TIER_ENV = "MODELSERVE_IMAGE_TIER"


def built_images() -> dict[str, str]:
    """Dockerfile target -> image name, as `make images` names them (tools/images.py)."""
    listed = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "images.py"), "--list"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    return dict(line.split() for line in listed.splitlines() if line.strip())


def _unavailable(reason: str) -> None:
    if os.environ.get(TIER_ENV) == "1":
        pytest.fail(f"{TIER_ENV}=1 but {reason}")
    pytest.skip(f"{reason} (`make images` builds them; `make test` then runs this tier)")


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    found = find_runtime()
    if found is None:
        _unavailable("neither podman nor a docker daemon is here")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def images(runtime: Runtime) -> dict[str, str]:
    """target -> image, every one of them built."""
    wanted = built_images()
    missing = [image for image in wanted.values() if not runtime.has_image(image)]
    if missing:
        _unavailable(f"images not built: {', '.join(missing)}")
    return wanted


@pytest.fixture(scope="session")
def manifests() -> dict[str, dict[str, Any]]:
    """Every InferenceService under inferenceservices/ by name (the containers the tests run
    take the manifests' own commands and flags)."""
    found = {}
    for path in sorted((ROOT / "inferenceservices").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "InferenceService":
                found[doc["metadata"]["name"]] = doc
    return found


def container_of(manifest: dict[str, Any], component: str) -> dict[str, Any]:
    """The kserve-container of `component` (predictor, transformer) in an InferenceService."""
    (container,) = [
        c for c in manifest["spec"][component]["containers"] if c["name"] == "kserve-container"
    ]
    return container


def with_ports(args: list[str], http: int, grpc: int) -> list[str]:
    """The manifest's args with its ports replaced (two components sharing one network)."""
    kept = [a for a in args if not a.startswith(("--http_port=", "--grpc_port="))]
    return [*kept, f"--http_port={http}", f"--grpc_port={grpc}"]


@pytest.fixture(scope="session")
def models_dir(models_root: Path) -> Iterator[Path]:
    """The demo models in a folder the images' uid 1000 can read (pytest's temp dirs are
    0700, their owner's alone), removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="modelserve-image-models-"))
    try:
        shutil.copytree(models_root, where, dirs_exist_ok=True)
        for path in [where, *where.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
