#!/usr/bin/env python3
"""`make images`: every Dockerfile target built under the name the manifests use.

With `docker build` where a Docker daemon answers, else with Debian's buildah
(tools/container-tools.sh installs it when missing), from the one Dockerfile a cluster user
builds with Docker: nothing machine-specific is passed to it. The base image comes first
(tools/base-image.sh: the real python:3.11-slim-bookworm where a registry answers, a Debian
stand-in under that name where none does). buildah keeps its layers (`--layers`), so a second
run rebuilds only what changed; `--prune` afterwards removes the build containers left behind
and the cached layers no build has used for a day (those of older code), so the store holds
the images and the cache of the current ones.

    python tools/images.py [--builder auto|docker|buildah] [--only TARGET ...] [--prune]
    python tools/images.py --list        # target and image name, one a line (read by tests)

Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "ghcr.io/modelserve"


def version() -> str:
    """The package's version: every image is tagged with it."""
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


# Dockerfile target -> repository under REGISTRY; tagged with the package version.
TARGETS: dict[str, str] = {
    "sklearn": "servers",
    "transformers": "transformers",
    "gateway": "gateway",
    "tensorflow": "tensorflow",
}


def image_name(target: str) -> str:
    """The full name the manifests use for `target`'s image."""
    return f"{REGISTRY}/{TARGETS[target]}:{version()}"


def storage_driver() -> str:
    """overlay where this kernel mounts it for the store (measured here: it does, on ext4),
    else vfs (copies every layer: ~5 GB for the sklearn image's build)."""
    return os.environ.get("STORAGE_DRIVER", "overlay")


def pick_builder(wanted: str) -> str:
    """`docker` where a daemon answers, else `buildah` (installed from Debian when missing)."""
    if wanted != "auto":
        return wanted
    found = subprocess.run(
        [str(ROOT / "tools" / "container-tools.sh")], check=True, capture_output=True, text=True
    )
    return found.stdout.strip()


def build_command(builder: str, target: str) -> list[str]:
    """The build of one target, run in the repository root."""
    if builder == "docker":
        return ["docker", "build", "--target", target, "-t", image_name(target), "."]
    return [
        "buildah", "--storage-driver", storage_driver(), "bud", "--layers", "--isolation",
        "chroot", "--target", target, "-t", image_name(target), "-f", "Dockerfile", ".",
    ]


STALE = "until=24h"  # untagged layers older than this are no current build's cache


def prune(builder: str) -> None:
    """Drop build containers and stale untagged layers; the images and the layers the last
    builds made (the next build's cache) stay."""
    if builder == "docker":
        subprocess.run(["docker", "image", "prune", "-f", "--filter", STALE], check=False)
        return
    driver = ["--storage-driver", storage_driver()]
    subprocess.run(["buildah", *driver, "rm", "--all"], check=False, capture_output=True)
    subprocess.run(["podman", *driver, "container", "prune", "-f"], check=False,
                   capture_output=True)
    subprocess.run(["podman", *driver, "image", "prune", "-f", "--filter", STALE], check=False,
                   capture_output=True)


def image_size(builder: str, target: str) -> int:
    """The image's size in bytes, as the builder reports it (uncompressed)."""
    if builder == "docker":
        command = ["docker", "image", "inspect", "--format", "{{.Size}}", image_name(target)]
    else:
        command = ["podman", "--storage-driver", storage_driver(), "image", "inspect",
                   "--format", "{{.Size}}", image_name(target)]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builder", choices=["auto", "docker", "buildah"], default="auto")
    parser.add_argument("--only", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--prune", action="store_true", help="clean the store afterwards")
    parser.add_argument("--list", action="store_true", help="print target and image, and stop")
    args = parser.parse_args()
    if args.list:
        for target in TARGETS:
            print(target, image_name(target))
        return 0
    builder = pick_builder(args.builder)
    if builder == "buildah" and not shutil.which("buildah"):
        print("images: buildah is not installed", file=sys.stderr)
        return 1
    subprocess.run([str(ROOT / "tools" / "base-image.sh"), builder], check=True, cwd=ROOT)
    report = []
    for target in args.only:
        started = time.monotonic()
        print(f"images: {target} -> {image_name(target)} ({builder})", file=sys.stderr, flush=True)
        done = subprocess.run(build_command(builder, target), cwd=ROOT)
        if done.returncode != 0:
            print(f"images: building {target} failed ({done.returncode})", file=sys.stderr)
            return done.returncode
        report.append((target, time.monotonic() - started, image_size(builder, target)))
    if args.prune:
        prune(builder)
    for target, seconds, size in report:
        name = image_name(target)
        print(f"{name}  target {target}  {size / 1e6:.0f} MB  built in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
