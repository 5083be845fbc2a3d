"""Manifests and images agree: every `image:` under inferenceservices/ and deploy/ is a name
`make images` builds (tools/images.py), and in that image the container's command takes every
flag the manifest passes (its `--help`, run in the image itself)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.test_dockerfile import manifest_containers, manifest_images
from tests.images.conftest import built_images
from tests.images.containers import Runtime

# Collected once: the parameters and their ids.
CONTAINERS = manifest_containers()


def test_every_manifest_image_is_one_make_images_builds() -> None:
    built = set(built_images().values())
    named = manifest_images()
    assert named, "no manifest names an image"
    assert {image: where for image, where in named.items() if image not in built} == {}


def _flags(args: list[str]) -> list[str]:
    return sorted({a.split("=", 1)[0] for a in args if a.startswith("--")})


@pytest.mark.parametrize(
    ("where", "container"),
    CONTAINERS,
    ids=[f"{w}:{c.get('name', '?')}" for w, c in CONTAINERS],
)
def test_the_image_entry_point_takes_the_manifest_flags(
    runtime: Runtime, images: dict[str, str], where: str, container: dict[str, Any]
) -> None:
    command = container.get("command")
    if not command:
        pytest.skip(f"{where}: no command (the image's CMD runs)")
    flags = _flags(container.get("args", []))
    usage = runtime.output(
        "run", "--rm", *runtime.run_flags("none"), container["image"], *command, "--help"
    )
    assert [flag for flag in flags if flag not in usage] == [], f"{where}: {usage}"
