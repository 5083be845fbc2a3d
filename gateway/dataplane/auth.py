"""API key authentication, shared by the REST app and the gRPC proxy.

A client presents a key as `x-api-key: <key>` or `Authorization: Bearer <key>` (HTTP headers
or gRPC metadata of those names). `x-api-key` is read first, so a client can keep
`Authorization` for a component behind the gateway. No key: `Unauthenticated` (401 /
UNAUTHENTICATED); a key that is not accepted: `PermissionDenied` (403 / PERMISSION_DENIED).

Only SHA-256 digests of the keys are kept, and a presented key is compared with every one of
them by `hmac.compare_digest`: the time taken says neither how much of a key matched, nor its
length, nor which key it was. No message or log line here ever holds a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from servers.errors import PermissionDenied, Unauthenticated

__all__ = ["API_KEY_HEADER", "ApiKeyAuth", "bearer_token"]

API_KEY_HEADER = "x-api-key"
MISSING_KEY = "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
WRONG_KEY = "API key not accepted"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None for any other value."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeyAuth:
    """Accepts requests carrying one of `keys`; names each accepted key's client `key-<n>`."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        if not self._digests:
            raise ValueError("API key auth needs at least one key")

    def identify(self, api_key: str | None, authorization: str | None) -> tuple[str, bool]:
        """The client a request's credentials name, and whether they came in `Authorization`.

        Raises `Unauthenticated` when the request carries no key, `PermissionDenied` when the
        key is not one of ours.
        """
        from_authorization = False
        presented = api_key.strip() if api_key is not None else ""
        if not presented:
            presented = bearer_token(authorization) or ""
            from_authorization = True
        if not presented:
            raise Unauthenticated(MISSING_KEY)
        digest = _digest(presented)
        matched: int | None = None
        for number, known in enumerate(self._digests, 1):
            # No early exit: every key is compared, so timing does not say which one matched.
            if hmac.compare_digest(known, digest) and matched is None:
                matched = number
        if matched is None:
            raise PermissionDenied(WRONG_KEY)
        return f"key-{matched}", from_authorization
