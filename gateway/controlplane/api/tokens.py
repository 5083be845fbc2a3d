"""Admin tokens: checked in constant time, and, when none is configured, generated at start.

As Jupyter does: `modelserve up` with no `MODELSERVE_ADMIN_TOKENS` generates a random token,
writes it to a file only the user can read and prints the dashboard's URL with it. The
file is per admin port (`admin-<port>.json` under `$XDG_RUNTIME_DIR/modelserve/`, else
`~/.config/modelserve/`), so several platforms on one machine do not overwrite each other,
and the CLI finds the token of the platform it talks to from the admin URL alone. The file
is removed when `up` stops.

Only SHA-256 digests of the tokens are kept for checking; no message or log line holds one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from gateway.dataplane.auth import ApiKeyAuth, bearer_token
from servers.errors import PermissionDenied, Unauthenticated

__all__ = [
    "TOKEN_HEADER",
    "AdminTokens",
    "find_token",
    "generate_token",
    "token_dir",
    "token_file",
    "write_token_file",
]

TOKEN_HEADER = "x-modelserve-token"


def generate_token() -> str:
    """A new random admin token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_dir(environ: dict[str, str] | None = None) -> Path:
    """Where generated tokens are kept: `$XDG_RUNTIME_DIR/modelserve` (a per-user tmpfs on
    systemd machines), else `~/.config/modelserve`."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "modelserve"
    home = Path(env.get("HOME") or Path.home())
    return home / ".config" / "modelserve"


def token_file(port: int, environ: dict[str, str] | None = None) -> Path:
    """The token file of the platform whose admin door listens on `port`."""
    return token_dir(environ) / f"admin-{port}.json"


def write_token_file(
    port: int, url: str, token: str, environ: dict[str, str] | None = None
) -> Path:
    """Write `token` (and the URL it opens) to the port's file, readable by the user only."""
    path = token_file(port, environ)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    # Created 0600 from the start (never world-readable, whatever the umask), then renamed.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, out)
    os.replace(temporary, path)
    return path


def remove_token_file(path: Path) -> None:
    """Remove a token file `write_token_file` wrote (gone already: nothing to do)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def find_token(admin_url: str, environ: dict[str, str] | None = None) -> str | None:
    """The token `modelserve up` generated for the platform at `admin_url`, if this user's
    token file for its port is there and readable."""
    port = urlsplit(admin_url).port or 8082
    try:
        doc = json.loads(token_file(port, environ).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = doc.get("token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) and token else None


class AdminTokens:
    """Accepts requests carrying one of the admin tokens, as `Authorization: Bearer <token>`
    or `x-modelserve-token: <token>` (compared in constant time, by digest)."""

    def __init__(self, tokens: tuple[str, ...], where: str) -> None:
        self._auth = ApiKeyAuth(tokens)
        self._missing = (
            "missing admin token: send 'Authorization: Bearer <token>' (the control plane's "
            f"token, not an inference API key; {where})"
        )

    def check(self, authorization: str | None, token_header: str | None) -> None:
        """Raise Unauthenticated (no token) or PermissionDenied (not an admin token)."""
        presented = (token_header or "").strip() or bearer_token(authorization)
        if not presented:
            raise Unauthenticated(self._missing)
        try:
            self._auth.identify(presented, None)
        except PermissionDenied:
            raise PermissionDenied(
                "not an admin token of this control plane (inference API keys do not open the "
                "control plane)"
            ) from None
