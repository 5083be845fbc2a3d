"""The admin door's checks, in front of every control-plane route (an ASGI wrapper).

A web page the developer opens can make the browser send requests to 127.0.0.1; the checks
make sure such a request changes nothing and reads nothing:

1. **Host** must be an IP address, `localhost`, or a name the operator allowed
   (`MODELSERVE_ADMIN_ALLOWED_HOSTS`): a DNS-rebinding page (evil.example resolving to
   127.0.0.1) sends `Host: evil.example` and is refused.
2. **No cross-site request**: a request whose `Origin` is not this door's own, or that the
   browser marks `Sec-Fetch-Site: cross-site` / `same-site` (another port of localhost is
   "same-site"), is refused.
3. **An admin token** in a header (`Authorization: Bearer`, or `x-modelserve-token`), never a
   cookie, so the browser never attaches it by itself. Inference API keys are not tokens.
4. **Only JSON, YAML and the patch types** as request bodies: `text/plain` and forms are the
   types a foreign page may send without a CORS preflight. The repository extension's
   routes (`/v2/repository/...`) also take a body with no type, read as JSON: Triton's
   clients send none, and check 3 already stops a foreign page there.

The page itself (`/ui`, `/ui/static/*`) holds no data: it passes check 1 only, so that a link
opens it; everything it shows comes from the JSON API behind all four.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.controlplane.api.documents import BODY_MEDIA_TYPES, media_type
from gateway.controlplane.api.tokens import TOKEN_HEADER, AdminTokens
from gateway.dataplane.answers import error_response
from servers.errors import ModelServeError, PermissionDenied, UnsupportedMediaType

__all__ = ["AdminGuard", "is_page"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAME_ORIGIN = frozenset({"same-origin", "none"})
_TOKEN = TOKEN_HEADER.encode()
_REPOSITORY = "/v2/repository/"  # Triton's clients send these bodies without a type


def is_page(path: str) -> bool:
    """Whether `path` is the dashboard page or one of its static files (no data in them)."""
    return path in ("/ui", "/ui/") or path.startswith("/ui/static/")


def _hostname(host: str) -> str:
    """The name or address of a Host header value, without port and brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AdminGuard:
    """Wraps the control plane's ASGI app with the module's four checks."""

    def __init__(self, app: ASGIApp, tokens: AdminTokens, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.tokens = tokens
        self.allowed_hosts = frozenset({"localhost", *(h.lower() for h in allowed_hosts)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except ModelServeError as exc:
            response = error_response(exc)
            if exc.http_status == 401:
                response.headers["www-authenticate"] = 'Bearer realm="modelserve-admin"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)
        host = headers.get(b"host", b"").decode("latin-1")
        name = _hostname(host)
        if not (_is_ip(name) or name in self.allowed_hosts):
            raise PermissionDenied(
                f"Host {host!r} is not this control plane's: use its address or localhost "
                "(or list the name in MODELSERVE_ADMIN_ALLOWED_HOSTS)"
            )
        if is_page(scope["path"]) and scope["method"] in ("GET", "HEAD"):
            return
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
        if site and site not in _SAME_ORIGIN:
            raise PermissionDenied(f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1").strip()
            if text.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
                raise PermissionDenied(
                    f"cross-origin request refused (Origin {text[:100]!r} is not this "
                    "control plane's)"
                )
        authorization = headers.get(b"authorization")
        token = headers.get(_TOKEN)
        if authorization is None and token is None and b"x-api-key" in headers:
            raise PermissionDenied(
                "inference API keys do not open the control plane: send an admin token as "
                "'Authorization: Bearer <token>'"
            )
        self.tokens.check(
            authorization.decode("latin-1") if authorization is not None else None,
            token.decode("latin-1") if token is not None else None,
        )
        if scope["method"] in _BODY_METHODS:
            media = media_type(headers.get(b"content-type", b"").decode("latin-1"))
            untyped_ok = not media and scope["path"].startswith(_REPOSITORY)
            if media not in BODY_MEDIA_TYPES and not untyped_ok:
                allowed = ", ".join(sorted(BODY_MEDIA_TYPES))
                raise UnsupportedMediaType(
                    f"content type {media or '(none)'!r} is not accepted by the control "
                    f"plane; send one of {allowed}"
                )
