"""The door both local servers share: who may ask.

Without a token, only requests whose ``Host`` names this machine (or an ``--allow-host``) are
answered (``HostAllowList``: a page the user visits cannot reach the server by DNS rebinding). With
a token, every request must carry it (``token_matches``: constant time, never echoed); the explorer
also accepts it once in ``?token=`` and keeps it in a cookie (``TokenGate``), the gateway takes it
as ``Authorization: Bearer``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

# starlette is imported where it is used: the commands read ``is_loopback`` without the extras
#: ``Host`` names always accepted without a token (the bound address and ``--allow-host`` add more).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """``example.com:8400`` → ``example.com``; ``[::1]:8400`` → ``[::1]``; lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names a server without a token answers: loopback names, the address it is bound
    to, and ``extra``."""
    names = set(LOOPBACK_HOSTS)
    bound = bound.strip().lower()
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound)
        if ":" in bound and not bound.startswith("["):
            names.add(f"[{bound}]")
    names.update(host_name(h) for h in extra if h.strip())
    return frozenset(names)


class HostAllowList:
    """ASGI middleware: a request whose ``Host`` is not in ``hosts`` gets 421 (a page the user
    visits cannot reach the server by DNS rebinding). ``hosts=None`` lets everything through (a
    token guards the server instead)."""

    def __init__(self, app: Any, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.hosts is not None and scope["type"] in ("http", "websocket"):
            host = ""
            for key, value in scope.get("headers", ()):
                if key == b"host":
                    host = value.decode("latin-1")
                    break
            if host_name(host) not in self.hosts:
                if scope["type"] == "http":
                    body = b"misdirected request: this Host is not served here\n"
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 421,
                            "headers": [
                                (b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def bearer_of(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" for any other)."""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def token_matches(given: str, token: str | bytes) -> bool:
    """``given`` is the token (constant-time comparison)."""
    expected = token.encode() if isinstance(token, str) else token
    return hmac.compare_digest(given.encode(), expected)


#: The cookie the explorer keeps the token in after ``?token=``.
TOKEN_COOKIE = "otel_pg_ui_token"


class TokenGate:
    """ASGI middleware for a page server: nothing without the token (bearer header, cookie, or
    ``?token=`` once, which sets the cookie and redirects to the same URL without it)."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request
        from starlette.responses import RedirectResponse, Response

        request = Request(scope)
        from_query = request.query_params.get("token")
        if from_query is not None and token_matches(from_query, self.token):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        given = bearer_of(request.headers.get("authorization", "")) or request.cookies.get(TOKEN_COOKIE) or ""
        if not token_matches(given, self.token):
            await Response("token required", status_code=401, media_type="text/plain")(scope, receive, send)
            return
        await self.app(scope, receive, send)
