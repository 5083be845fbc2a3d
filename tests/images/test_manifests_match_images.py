"""Manifests and images agree: every `image:` under inferenceservices/ and deploy/ is a name
`make images` builds (tools/images.py), and in that image the container's command takes every
flag the manifest passes (its `--help`, run in the image itself)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_dockerfile import MANIFEST_DIRS, manifest_images
from tests.images.conftest import built_images
from tests.images.containers import Runtime
from tests.support import ROOT


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container spec (a mapping with `image:`) in a manifest document."""
    if isinstance(node, dict):
        if isinstance(node.get("image"), str):
            yield node
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def manifest_containers() -> list[tuple[str, dict[str, Any]]]:
    """(manifest path, container) for every container with an image."""
    found = []
    for folder in MANIFEST_DIRS:
        for path in sorted(folder.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                for container in _containers(doc or {}):
                    found.append((str(Path(path).relative_to(ROOT)), container))
    return found


def test_every_manifest_image_is_one_make_images_builds() -> None:
    built = set(built_images().values())
    named = manifest_images()
    assert named, "no manifest names an image"
    assert {image: where for image, where in named.items() if image not in built} == {}


def _flags(args: list[str]) -> list[str]:
    return sorted({a.split("=", 1)[0] for a in args if a.startswith("--")})


@pytest.mark.parametrize(
    ("where", "container"),
    manifest_containers(),
    ids=[f"{w}:{c.get('name', '?')}" for w, c in manifest_containers()],
)
def test_the_image_entry_point_takes_the_manifest_flags(
    runtime: Runtime, images: dict[str, str], where: str, container: dict[str, Any]
) -> None:
    command = container.get("command")
    if not command:
        pytest.skip(f"{where}: no command (the image's CMD runs)")
    flags = _flags(container.get("args", []))
    usage = runtime.output(
        "run", "--rm", "--network=none", *[f for f in runtime.run_flags()
                                           if not f.startswith("--network")],
        container["image"], *command, "--help",
    )
    assert [flag for flag in flags if flag not in usage] == [], f"{where}: {usage}"
