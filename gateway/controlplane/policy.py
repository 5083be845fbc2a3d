"""What an InferenceService may make the local platform run and read: the launch and storage
policy, checked while a component is planned, before anything starts.

In a cluster, creating an InferenceService needs Kubernetes RBAC, and what its pods may run
is the admission controllers' business (Pod Security, image policies). Locally the platform
runs processes as the user who started it, so the policy stands in for both:

- **Launch.** By default a component runs only what we ship: a ServingRuntime of ours
  (`model:` with a model format, `gateway.controlplane.runtimes`) or one of our entry
  points, `python -m servers.<backend>` with nothing before `-m`. Any other command (a shell,
  `python -c`, a binary on PATH) is refused with 403 unless the operator opted in: every
  command (`up --allow-custom-containers`) or the commands listed in an allow-list file
  (`up --allowed-commands FILE`: one command per line, shell words; a container's command must
  start with one of them). Environment variables that make a shipped entry point load other
  code (`PYTHONPATH`, `LD_PRELOAD`, ...) and server flags that load files as configuration
  are refused as well.
- **Storage.** A local path, `file://` or `pvc://` URI must resolve (symlinks followed, `..`
  refused) inside one of the models roots (`--models-dir`, repeatable). Remote URIs (`http(s)`,
  `s3`, `gs`, ...) only with `--allow-remote-storage`, and the component then refuses pickle
  formats (`.joblib`, `.pkl`) from them unless `--trust-remote-pickles`: skops is the safe
  format. A refused path gets the same answer, in the same words, whether it exists or not.
- **Payload logging.** A component's `logger.url` receives every request and response it
  logs: by default only a sink on this machine (a loopback address or `localhost`), over
  http(s), without credentials in the URL; other hosts only when the operator names them
  (`up --allow-logger-host HOST`). The logger's settings reach a component only from the
  platform: a manifest's env may not set them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from servers.backends import code_running_suffixes, entry_points
from servers.payload_logger import LOGGER_ENV

__all__ = [
    "ENTRY_POINTS",
    "LaunchPolicy",
    "PolicyRefused",
    "read_allowed_commands",
]

# Our own entry points (the backend registry's and the transformers'): what `python -m` may
# run without an opt-in.
ENTRY_POINTS = entry_points()
REMOTE_SCHEMES = ("http://", "https://", "gs://", "s3://", "hf://", "azure://", "oci://")
# Model files whose loading runs the code they hold, as the backends declare them.
PICKLE_SUFFIXES = code_running_suffixes()
TRUST_PICKLES_ENV = "MODELSERVE_TRUST_REMOTE_PICKLES"
_PYTHON = re.compile(r"python(3(\.\d+)?)?")
# Variables that change which code a shipped entry point loads or runs.
_CODE_ENV = re.compile(
    r"(PYTHON(?!UNBUFFERED$).*|LD_.*|DYLD_.*|PATH|BASH_ENV|ENV|PERL5OPT|NODE_OPTIONS|"
    r"GCONV_PATH|MODELSERVE_TRUST_REMOTE_PICKLES)",
    re.IGNORECASE,
)
# Variables only the platform sets: a manifest setting them would pass the logger's URL policy by.
_PLATFORM_ENV = frozenset({LOGGER_ENV})
# Server flags that load a file as configuration (logging's dictConfig can call any callable).
_CODE_FLAGS = frozenset({"--log_config_file", "--log-config-file"})


class PolicyRefused(ValueError):
    """A spec the launch or storage policy refuses (403 on the rollout API)."""


def read_allowed_commands(path: Path) -> tuple[tuple[str, ...], ...]:
    """The allow-list file: one command per line in shell words, `#` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--allowed-commands {path}: cannot read it ({exc})") from exc
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ValueError(f"--allowed-commands {path}, line {number}: {exc}") from exc
        if words:
            commands.append(tuple(words))
    return tuple(commands)


class LaunchPolicy(BaseModel):
    """The operator's choices; the defaults refuse everything we do not ship."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models_roots: tuple[Path, ...] = Field(
        (Path("models"),), min_length=1, description="where local model storage may be"
    )
    allow_custom_containers: bool = False
    allowed_commands: tuple[tuple[str, ...], ...] = ()
    allow_remote_storage: bool = False
    trust_remote_pickles: bool = False
    allowed_logger_hosts: tuple[str, ...] = Field(
        (), description="hosts besides loopback that payload loggers may send events to"
    )

    # --- launch --------------------------------------------------------------------------

    def check_command(self, command: list[str], where: str) -> None:
        """Refuse a container command we do not ship, unless the operator allowed it."""
        if self.allow_custom_containers or _is_entry_point(command):
            return
        if any(tuple(command[: len(allowed)]) == allowed for allowed in self.allowed_commands):
            return
        shown = shlex.join(command)[:200]
        raise PolicyRefused(
            f"{where}: command {shown!r} is refused by the launch policy: only the shipped "
            "runtimes and `python -m servers.<backend>` run by default "
            f"({', '.join(sorted(ENTRY_POINTS))}); the operator can allow others with "
            "`modelserve up --allow-custom-containers` or `--allowed-commands FILE`"
        )

    def check_env(self, names: Iterable[str], where: str) -> None:
        """Refuse environment variables that change the code a component runs, and those only
        the platform sets."""
        names = list(names)
        owned = sorted(set(names) & _PLATFORM_ENV)
        if owned:
            raise PolicyRefused(
                f"{where}: environment variable(s) {', '.join(owned)} are the platform's to "
                "set (use the component's `logger:` spec)"
            )
        if self.allow_custom_containers:
            return
        bad = sorted(name for name in names if _CODE_ENV.fullmatch(name))
        if bad:
            raise PolicyRefused(
                f"{where}: environment variable(s) {', '.join(bad)} are refused by the launch "
                "policy (they change which code runs); `modelserve up "
                "--allow-custom-containers` allows them"
            )

    def check_args(self, flags: Iterable[str], where: str) -> None:
        """Refuse server flags that load a file as configuration."""
        if self.allow_custom_containers:
            return
        bad = sorted(set(flags) & _CODE_FLAGS)
        if bad:
            raise PolicyRefused(
                f"{where}: flag(s) {', '.join(bad)} are refused by the launch policy (they load "
                "a file as code or configuration); `--allow-custom-containers` allows them"
            )

    def check_logger_url(self, url: str, where: str) -> None:
        """Refuse a payload logger URL that is not http(s) to loopback or an allowed host."""
        shown = url[:200]
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise PolicyRefused(f"{where}: logger url {shown!r} is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise PolicyRefused(f"{where}: logger url {shown!r}: only http(s) URLs are allowed")
        if parsed.userinfo:
            raise PolicyRefused(
                f"{where}: logger url {shown!r} carries credentials: refused by the policy"
            )
        host = parsed.host.lower().rstrip(".")
        if not _is_loopback(host) and host not in self.allowed_logger_hosts:
            raise PolicyRefused(
                f"{where}: logger url {shown!r} sends payloads to {host!r}, refused by the "
                "policy: only this machine's sinks by default; the operator can allow a host "
                "with `modelserve up --allow-logger-host HOST`"
            )

    # --- storage -------------------------------------------------------------------------

    def local_path(self, uri: str, where: str) -> str:
        """Where a storage URI is read from: a directory inside a models root (its real path),
        or a remote URI the server downloads. Raises PolicyRefused otherwise."""
        if uri.startswith(REMOTE_SCHEMES):
            return self._remote(uri, where)
        if uri.startswith("pvc://"):
            _claim, _, sub = uri[len("pvc://") :].partition("/")
            return self._inside(uri, sub, relative=True, where=where)
        if uri.startswith("file://"):
            return self._inside(uri, uri[len("file://") :], relative=False, where=where)
        if "://" in uri:
            raise PolicyRefused(f"{where}: storage URI {uri[:200]!r}: scheme not supported")
        return self._inside(uri, uri, relative=False, where=where)

    def component_env(self) -> dict[str, str]:
        """What the components are told (the storage side of the policy they enforce)."""
        return {TRUST_PICKLES_ENV: "1" if self.trust_remote_pickles else "0"}

    def _remote(self, uri: str, where: str) -> str:
        if not self.allow_remote_storage:
            raise PolicyRefused(
                f"{where}: remote storage {uri[:200]!r} is refused by the storage policy: "
                "models are read from the models roots (--models-dir) unless the operator "
                "allows downloads with `modelserve up --allow-remote-storage`"
            )
        if uri.split("?", 1)[0].lower().endswith(PICKLE_SUFFIXES) and not (
            self.trust_remote_pickles
        ):
            raise PolicyRefused(
                f"{where}: {uri[:200]!r} is a pickle (loading it runs code) from remote "
                "storage, refused by the storage policy: export the model with skops, or "
                "start `modelserve up --trust-remote-pickles`"
            )
        return uri

    def _inside(self, uri: str, path: str, relative: bool, where: str) -> str:
        refused = PolicyRefused(
            f"{where}: storage {uri[:200]!r} is outside the models roots "
            f"({', '.join(str(r) for r in self.models_roots)}): refused by the storage policy"
        )
        if not path and not relative:
            raise refused
        if ".." in Path(path).parts:
            raise refused
        roots = [Path(os.path.realpath(root)) for root in self.models_roots]
        if relative:
            # pvc://<claim>/<path>: the first root that has it, else the first one.
            candidates = [Path(os.path.realpath(root / path)) for root in roots]
            found = next((c for c in candidates if c.exists()), candidates[0])
            pairs = [(found, roots)]
        else:
            pairs = [(Path(os.path.realpath(Path(path).expanduser())), roots)]
        for real, allowed in pairs:
            if any(real == root or real.is_relative_to(root) for root in allowed):
                return str(real)
        raise refused


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_entry_point(command: list[str]) -> bool:
    """`python -m servers.<backend>` exactly (a path to python is fine: it is replaced by the
    platform's own interpreter)."""
    return (
        len(command) == 3
        and _PYTHON.fullmatch(Path(command[0]).name) is not None
        and command[1] == "-m"
        and command[2] in ENTRY_POINTS
    )
