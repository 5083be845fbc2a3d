"""Running the built images for real: podman (as measured here: runc, slirp4netns, explicit
ulimits, since crun and the default rlimits fail on this kernel) or docker where a daemon
answers. Every container listens on 127.0.0.1 only, runs with a read-only root filesystem as
the image's user, and is removed afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import free_ports

# The rlimits a container gets: explicit, as podman's defaults (the host's hard limits) fail
# with EPERM here.
ULIMITS = ("nofile=4096:4096", "nproc=4096:4096")
START_TIMEOUT_S = 180  # TensorFlow's import in a fresh container, on a busy 2-core machine


@dataclass(frozen=True)
class Runtime:
    """The container CLI and the flags every run takes."""

    cli: str
    storage: tuple[str, ...] = ()  # podman's store flags (the driver `make images` built with)

    def command(self, *args: str) -> list[str]:
        return [self.cli, *self.storage, *args]

    def run_flags(self, network: str | None = None) -> list[str]:
        """Every run's flags; `network` replaces the default network (podman's slirp4netns,
        docker's bridge)."""
        flags = ["--read-only", *(f"--ulimit={u}" for u in ULIMITS)]
        if self.cli == "podman":
            # --read-only gives podman tmpfs /tmp, /var/tmp and /run; docker needs /tmp asked.
            flags += ["--runtime=runc", f"--network={network or 'slirp4netns'}"]
        else:
            flags += ["--tmpfs=/tmp", *([f"--network={network}"] if network else [])]
        return flags

    def has_image(self, image: str) -> bool:
        found = subprocess.run(
            self.command("image", "inspect", image), capture_output=True, timeout=60
        )
        return found.returncode == 0

    def output(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done.stdout


def find_runtime() -> Runtime | None:
    """podman when installed (what `make images` builds into with buildah), else docker when
    its daemon answers, else None."""
    if shutil.which("podman"):
        driver = os.environ.get("STORAGE_DRIVER", "overlay")
        return Runtime("podman", ("--storage-driver", driver))
    if shutil.which("docker"):
        answer = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
        if answer.returncode == 0:
            return Runtime("docker")
    return None


@dataclass
class Container:
    """A started container: its name and the host ports of its container ports."""

    runtime: Runtime
    name: str
    ports: dict[int, int]

    def url(self, port: int = 8080) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def logs(self) -> str:
        done = subprocess.run(
            self.runtime.command("logs", self.name), capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr

    def exec(self, *args: str) -> str:
        return self.runtime.output("exec", self.name, *args)

    def running(self) -> bool:
        state = self.runtime.output("inspect", "--format", "{{.State.Running}}", self.name)
        return state.strip() == "true"

    def wait_ready(self, path: str, port: int = 8080, timeout: float = START_TIMEOUT_S) -> None:
        """Until GET `path` answers 200; fails with the container's logs if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url(port) + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.running():
                raise AssertionError(f"{self.name} exited before it was ready:\n{self.logs()}")
            time.sleep(0.5)
        raise AssertionError(f"{self.name} not ready in {timeout:.0f} s:\n{self.logs()}")

    def stop(self, grace_s: int) -> int:
        """SIGTERM, SIGKILL after `grace_s` (the runtime's stop, as the kubelet does); the exit
        code: 137 when the grace period ran out."""
        self.runtime.output("stop", "--time", str(grace_s), self.name, timeout=grace_s + 60)
        code = self.runtime.output("inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(code.strip())


@contextmanager
def run_container(
    runtime: Runtime,
    image: str,
    args: Sequence[str] = (),
    *,
    ports: Sequence[int] = (8080,),
    mounts: Sequence[tuple[Path, str]] = (),
    tmpfs: Sequence[str] = (),
    env: dict[str, str] | None = None,
    network_of: Container | None = None,
) -> Iterator[Container]:
    """`image` started with `args` (its CMD when empty), `ports` published on 127.0.0.1 (free
    host ports), host folders mounted read-only, `tmpfs` folders writable for uid 1000; in
    the network namespace of `network_of` (a pod's shared loopback) when given."""
    name = f"modelserve-test-{uuid.uuid4().hex[:10]}"
    published = dict(zip(ports, free_ports(len(ports)), strict=True)) if network_of is None else {}
    shared = None if network_of is None else f"container:{network_of.name}"
    command = ["run", "--detach", "--name", name, *runtime.run_flags(shared)]
    for port, host in published.items():
        command.append(f"--publish=127.0.0.1:{host}:{port}")
    for source, target in mounts:
        command.append(f"--volume={source}:{target}:ro")
    for folder in tmpfs:
        command.append(f"--tmpfs={folder}:rw,mode=1777")
    for key, value in (env or {}).items():
        command.append(f"--env={key}={value}")
    runtime.output(*command, image, *args)
    container = Container(runtime, name, published if network_of is None else network_of.ports)
    try:
        yield container
    finally:
        quick = ["--time", "0"] if runtime.cli == "podman" else []
        subprocess.run(runtime.command("rm", "--force", *quick, name),
                       capture_output=True, timeout=120)
