"""The Dockerfile and .dockerignore, read as text (no docker needed).

Every image a manifest names is built by a target the header comment documents, every such
target runs as a numeric non-root USER, and the build context leaves out venvs, models and
the rest of what no image needs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
MANIFEST_DIRS = (ROOT / "inferenceservices", ROOT / "deploy")
GATEWAY_SERVICE = ROOT / "deploy" / "gateway" / "knative-service.yaml"
_HEADER = re.compile(r"^#\s+docker build --target (\S+)\s+-t (\S+) \.(.*)$")
_FROM = re.compile(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)


@dataclass
class Stage:
    name: str
    parent: str  # a stage name or a base image
    user: str | None = None
    lines: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[str]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(image -> target from the header comment, the stages in order)."""
    images = {}
    for line in text.splitlines():
        if match := _HEADER.match(line):
            images[match[2]] = match[1]
    stages: list[Stage] = []
    for line in _instructions(text):
        if match := _FROM.match(line):
            stages.append(Stage(match[2] or f"stage-{len(stages)}", match[1]))
        elif not stages:  # a global ARG before the first FROM
            continue
        elif line.split()[0].upper() == "USER":
            stages[-1].user = line.split()[1]
        stages[-1].lines.append(line)
    return images, stages


def _chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    chain = [by_name[name]]
    while chain[-1].parent in by_name:
        chain.append(by_name[chain[-1].parent])
    return chain


def user_of(stages: list[Stage], name: str) -> str | None:
    return next((s.user for s in _chain(stages, name) if s.user is not None), None)


def venv_of(stages: list[Stage], name: str) -> str | None:
    """The stage whose /opt/venv the target copies (`COPY --from=STAGE /opt/venv ...`)."""
    for stage in _chain(stages, name):
        for line in stage.lines:
            if match := re.match(r"COPY\s+--from=(\S+)\s+/opt/venv\b", line):
                return match[1]
    return None


def extras_of(stages: list[Stage], name: str) -> set[str]:
    """The extras of the venv the target copies (`RUN image-venv deps EXTRAS [UNUSED...]`)."""
    venv = venv_of(stages, name)
    for stage in stages:
        if stage.name != venv:
            continue
        for line in stage.lines:
            if match := re.match(r"RUN\s+image-venv\s+deps\s+(\S+)", line):
                return set(match[1].split(","))
    return set()


def containers_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every container spec (a mapping with a string `image:`) in a manifest document."""
    if isinstance(node, dict):
        if isinstance(node.get("image"), str):
            yield node
        for value in node.values():
            yield from containers_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers_in(item)


def _images(node: Any) -> Iterator[str]:
    return (container["image"] for container in containers_in(node))


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_containers() -> list[tuple[str, dict[str, Any]]]:
    """(manifest path, container) for every container with an image in every YAML under
    inferenceservices/ and deploy/."""
    return [
        (str(path.relative_to(ROOT)), container)
        for folder in MANIFEST_DIRS
        for path in sorted(folder.rglob("*.yaml"))
        for doc in _docs(path)
        for container in containers_in(doc)
    ]


def manifest_images() -> dict[str, list[str]]:
    """image -> the manifests naming it, for every YAML under inferenceservices/ and deploy/."""
    found: dict[str, list[str]] = {}
    for where, container in manifest_containers():
        found.setdefault(container["image"], []).append(where)
    return found


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_every_manifest_image_is_built_by_a_documented_target(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    images, stages = dockerfile
    names = {s.name for s in stages}
    assert set(images.values()) <= names, "header names a target the Dockerfile lacks"
    used = manifest_images()
    assert "ghcr.io/modelserve/gateway:0.1.0" in used
    missing = {image: where for image, where in used.items() if image not in images}
    assert not missing, f"images no documented target builds: {missing}"


def test_components_the_issue_names_have_targets(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    # sklearn, tensorflow, transformers (also in front of Triton: the Triton predictor itself
    # is KServe's kserve-tritonserver runtime, NVIDIA's image) and the gateway.
    images, _ = dockerfile
    assert {"sklearn", "tensorflow", "transformers", "gateway"} <= set(images.values())


def test_the_default_target_is_the_servers_image(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    images, stages = dockerfile
    header = DOCKERFILE.read_text().splitlines()
    default = [m[1] for line in header if (m := _HEADER.match(line)) and "default target" in m[3]]
    assert default == [stages[-1].name]  # a plain `docker build .` builds the last stage
    assert images["ghcr.io/modelserve/servers:0.1.0"] == stages[-1].name


def test_every_target_runs_as_a_numeric_non_root_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    images, stages = dockerfile
    for target in sorted(set(images.values())):
        user = user_of(stages, target)
        # Numeric: the kubelet can only check runAsNonRoot against a numeric image USER.
        assert user is not None and user.split(":")[0].isdigit(), f"{target}: USER {user!r}"
        assert int(user.split(":")[0]) != 0, f"{target} runs as root"
    service = _docs(GATEWAY_SERVICE)[0]
    security = service["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert str(security["runAsUser"]) == user_of(stages, "gateway")


def test_the_gateway_image_can_run_the_services_it_serves(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    # The Knative Service's `modelserve up` runs each component in the gateway's own image:
    # its venv must hold the extras of its components' images (no TensorFlow-only image, no
    # ServingRuntime `model:` predictor).
    images, stages = dockerfile
    gateway = next(s for s in stages if s.name == "gateway")
    assert any(
        re.match(r"COPY\s.*\binferenceservices\s+/app/inferenceservices$", line)
        for line in gateway.lines
    )
    service = _docs(GATEWAY_SERVICE)[0]
    files = [
        a
        for a in service["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.endswith(".yaml")
    ]
    assert files
    for file in files:
        doc = _docs(ROOT / file.removeprefix("/app/"))[0]
        for component in ("predictor", "transformer"):
            spec = doc["spec"].get(component)
            if spec is None:
                continue
            assert "model" not in spec, f"{file}: {component} needs a ServingRuntime's image"
            for image in _images(spec):
                missing = extras_of(stages, images[image]) - extras_of(stages, "gateway")
                assert not missing, (
                    f"{file}: {component} image {image} needs extras {missing} the gateway's "
                    "venv lacks"
                )


def env_of(stages: list[Stage], name: str, variable: str) -> str | None:
    """The value `variable` has in the target (the nearest stage's `ENV` that sets it)."""
    for stage in _chain(stages, name):
        for line in reversed(stage.lines):
            if line.split()[0].upper() != "ENV":
                continue
            pairs = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            if variable in pairs:
                return pairs[variable]
    return None


def test_component_images_listen_on_every_address(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    # Components bind 127.0.0.1 by default; in a pod their ports must be reachable. The
    # gateway image's components sit behind the gateway, in its pod: loopback there.
    images, stages = dockerfile
    for target in sorted(set(images.values()) - {"gateway"}):
        assert env_of(stages, target, "MODELSERVE_BIND_ADDRESS") == "0.0.0.0", target
    assert env_of(stages, "gateway", "MODELSERVE_BIND_ADDRESS") == "127.0.0.1"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent excludes below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(p, body) for p in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        ".venv-triton",
        ".venv-mlserver",
        ".venv-anything/bin/python",
        "models",
        "models/iris/model.skops",
        ".git",
        "tests",
        "tests/artifacts",
        "loadtest-reports",
        "modelserve.egg-info",
        "servers/__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _ignored(path, patterns), path


def test_dockerignore_keeps_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(
        r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+?)\s+\S+$", DOCKERFILE.read_text(), re.M
    )
    sources = {src for line in copied for src in line.split()}
    assert {"pyproject.toml", "README.md", "servers", "gateway", "inferenceservices"} <= sources
    for source in sources:
        assert not _ignored(source, patterns), source
    for venv in ROOT.glob(".venv*"):  # whatever venvs this checkout holds
        assert _ignored(venv.name, patterns), venv.name
