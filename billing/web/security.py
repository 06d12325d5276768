"""CSRF protection, security headers and the client's IP address.

CSRF: a random token lives in the signed session cookie (itsdangerous, via
Starlette's SessionMiddleware); every unsafe request must echo it in the
`csrf_token` form field or the `X-CSRF-Token` header (htmx sends the header).
Cross-site pages can neither read the cookie nor the token, so they cannot
forge a request. The few endpoints that other servers call are exempted in
one place: `CSRF_EXEMPT` below.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Only these change nothing, so only these skip the token. Their bodies are never read:
# Starlette answers HEAD with the GET endpoint, and a HEAD carrying a login form must not log in.
SAFE_METHODS = {"GET", "HEAD"}
MAX_BODY = 1_000_000  # bytes; forms here are small

# The only requests that need no CSRF token: PayTR's server-to-server callback
# (it proves itself with its hash) and the built-in PayTR emulator, which plays
# a different website and has no session of ours.
CSRF_EXEMPT_PATHS = ("/billing/callback",)
CSRF_EXEMPT_PREFIXES = ("/paytr-emulator/",)

# Pages of the emulator imitate PayTR's site: they may be framed by our checkout.
FRAMEABLE_PREFIXES = ("/paytr-emulator/",)


class BodyTooLarge(Exception):
    pass


class Disconnected(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body from raw ASGI messages, refusing more than `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def csrf_exempt(path: str) -> bool:
    return path in CSRF_EXEMPT_PATHS or path.startswith(CSRF_EXEMPT_PREFIXES)


def csrf_token(request: Request) -> str:
    """The session's token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def rotate_csrf_token(request: Request) -> None:
    request.session["csrf"] = secrets.token_urlsafe(32)


class CSRFMiddleware:
    def __init__(self, app: ASGIApp, deny: Callable[[Scope, str], Response]):
        self.app = app
        self.deny = deny  # builds the friendly 403 page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or csrf_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, _without_body(receive), send)
            return
        expected = scope.get("session", {}).get("csrf")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        supplied = headers.get("x-csrf-token")

        body: bytes | None = None  # read only when the token must come from the form
        if supplied is None:
            try:
                body = await read_body(receive, MAX_BODY)
            except Disconnected:
                return
            except BodyTooLarge:
                await PlainTextResponse("Request too large.", status_code=413)(scope, receive, send)
                return
            if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                values = parse_qs(body.decode("utf-8", "replace")).get("csrf_token")
                supplied = values[0] if values else None

        if not expected or not supplied or not hmac.compare_digest(str(expected), str(supplied)):
            # Keys for app.py's page, which words them in the visitor's language.
            reason = "expired" if not expected else "mismatch"
            await self.deny(scope, reason)(scope, receive, send)
            return

        if body is None:
            await self.app(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _without_body(receive: Receive) -> Receive:
    """A receive that reports an empty body (and then whatever the client does next)."""
    given = False

    async def empty() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return empty


HSTS = b"max-age=31536000"  # a year: browsers only ever reach the app over https after the first visit


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, frame_sources: str = "'self'", hsts: bool = False):
        self.app = app
        # frame_sources is PayTR's origin: its iframe is framed by the checkout, the checkout loads
        # PayTR's iframe resizer script from there (as PayTR's guide says), and the saved-card form
        # posts straight to PayTR's Direct API. Scripts, frames and forms: us and PayTR, nothing else.
        self.csp = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            f"script-src 'self' {frame_sources}; frame-src 'self' {frame_sources}; form-action 'self' {frame_sources}; "
            "frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
        ).replace(" 'self' 'self'", " 'self'")
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        frameable = scope["path"].startswith(FRAMEABLE_PREFIXES)

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
                if self.hsts:
                    extra.append((b"strict-transport-security", HSTS))
                # A response with its own policy (the mail viewer's frame) governs its own framing.
                if not frameable and b"content-security-policy" not in names:
                    extra.append((b"x-frame-options", b"DENY"))
                    extra.append((b"content-security-policy", self.csp.encode()))
                headers.extend(h for h in extra if h[0] not in names)
            await send(message)

        await self.app(scope, receive, add_headers)


def client_ip(request: Request, trusted_proxies: tuple[str, ...] = ()) -> str:
    """The customer's address. X-Forwarded-For counts only when the peer is a trusted proxy."""
    peer = request.client.host if request.client else "0.0.0.0"
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not networks or not trusted(peer):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    # Walk from the nearest hop outwards; the first one we don't trust is the client.
    for hop in reversed(hops):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return hops[0] if hops else peer
