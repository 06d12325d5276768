"""The JSON API's own small Starlette app, answered before the web middleware.

Requests under /api/v1 carry a Bearer key, not a session: they need no session cookie,
CSRF token, current user or templates, so BillingApp hands them here first (as it does
PayTR's callback). Each `Endpoint` in the route table declares its method, path, scope and
schemas once; this module turns them into routes and openapi.py into the document.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing import i18n
from billing.api import keys, problems
from billing.api.problems import Problem
from billing.api.ratelimit import TokenBuckets, retry_after
from billing.i18n import gettext as _

log = logging.getLogger("billing.api")

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
HSTS = b"max-age=31536000"


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # path, query or header
    description: str
    schema: dict = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below PREFIX
    handler: Callable[[Request], Awaitable[Response]]
    operation_id: str
    summary: str
    tag: str
    scope: str | None  # "read", "write", or None: no key needed
    response: str | None = None  # component schema of the success body
    status: int = 200
    request: str | None = None  # component schema of the JSON body
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""

    @property
    def full_path(self) -> str:
        return PREFIX + self.path


def dispatch(scope: Scope) -> bool:
    """Is this request for the JSON API (answered ahead of the web middleware)?"""
    return scope["type"] == "http" and (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/"))


# --- what handlers use ------------------------------------------------------------------


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


async def run(request: Request, fn, *args, **kwargs):
    """A domain function `fn(db, ...)` on a worker thread with that thread's connection."""
    store = request.app.state.store
    return await anyio.to_thread.run_sync(lambda: fn(store.db(), *args, **kwargs))


def read(request: Request, fn, *args, **kwargs):
    """A read-only domain function `fn(db, ...)` right here on the event loop.

    For the hot GETs (the key, entitlements): in WAL mode a reader never waits for the writer,
    and an indexed lookup in pages the OS has cached takes microseconds, less than the hop to
    a worker thread and back. Anything that writes, or reads a lot, goes through `run`.
    """
    return fn(request.app.state.store.db(), *args, **kwargs)


def now(request: Request):
    """The request's one instant (the test clock's, outside production), read once per request."""
    at = request.scope.get("billing.now")
    if at is None:
        at = request.scope["billing.now"] = request.app.state.clock.now()
    return at


def actor(request: Request) -> str:
    """Who did it, in the audit trail: the key's name and visible prefix, never the key."""
    key = request.state.api_key
    return f"api:{key['prefix']} ({key['name']})"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")  # Python's own parser message follows it: stays English


async def json_object(request: Request, allowed: tuple[str, ...]) -> dict:
    """The body as a JSON object with only `allowed` fields; 413, 415, 400 or 422 otherwise."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Problem(415, _("Send the body as application/json, not %(media)s.", media=media))
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise Problem(413, _("The body may be at most %(size)d KiB.", size=MAX_BODY // 1024))
    chunks, size = [], 0
    async for chunk in request.stream():  # a chunked body has no Content-Length: count as it comes
        size += len(chunk)
        if size > MAX_BODY:
            raise Problem(413, _("The body may be at most %(size)d KiB.", size=MAX_BODY // 1024))
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise Problem(400, _("The body is empty: send a JSON object."))
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, _("The body is not valid JSON: %(error)s", error=str(exc)[:200])) from None
    if not isinstance(data, dict):
        raise Problem(400, _("The body must be a JSON object ({...}), not %(kind)s.", kind=type(data).__name__))
    unknown = [name for name in data if name not in allowed]
    if unknown:
        raise Problem(422, _("The body has fields this route does not take."),
                      errors={name[:100]: _("Unknown field; this route takes %(fields)s.", fields=", ".join(allowed))
                              for name in unknown})
    return data


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise Problem(422, _("%(name)s must be a whole number from %(low)d to %(high)d.", name=name, low=low,
                             high=high),
                      errors={name: _("A whole number from %(low)d to %(high)d.", low=low, high=high)})
    return int(value)


# --- authentication, scope, rate limit ----------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="billing-api"'})


def guarded(endpoint: Endpoint):
    """The route's ASGI endpoint: the key checked, the scope, the rate; then the handler."""

    async def call(request: Request) -> Response:
        if endpoint.scope is not None:
            presented = _bearer(request)
            if presented is None:
                raise _unauthorized(_("Send your API key as `Authorization: Bearer <key>`."))
            key = read(request, keys.authenticate, presented)
            if key is None:
                # The presented key is never repeated back: it may be a live secret pasted in the wrong place.
                raise _unauthorized(_("This API key is not valid: unknown, mistyped or revoked."))
            if keys.needs_touch(key, now(request)):
                await run(request, keys.touch, now(request), key["id"])
            request.state.api_key = key
            wait = request.app.state.buckets.take(key["id"])
            if wait:
                settings = request.app.state.settings
                # a rate, not a count: "requests a second" whatever the number
                raise Problem(429, _("This key may send %(rate)s requests a second (bursts of %(burst)s). Wait and "
                                     "try again.", rate=settings.api_rate_per_second, burst=settings.api_rate_burst),
                              headers={"Retry-After": retry_after(wait)})
            if endpoint.scope == "write" and key["scope"] != "write":
                raise Problem(403, _("This key (%(prefix)s…) is read-only; %(method)s %(path)s needs a write key.",
                                     prefix=key["prefix"], method=endpoint.method, path=endpoint.full_path))
        return await endpoint.handler(request)

    call.__name__ = endpoint.operation_id
    return call


# --- errors --------------------------------------------------------------------------------------


def _base_url(request: Request) -> str:
    return request.app.state.settings.base_url


async def _problem(request: Request, exc: Problem) -> Response:
    return problems.response(_base_url(request), exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        detail = _("There is no %(path)s in this API; see %(document)s.", path=request.url.path,
                   document=f"{PREFIX}/openapi.json")
    elif exc.status_code == 405:
        detail = _("%(method)s is not allowed on %(path)s; allowed: %(allowed)s.", method=request.method,
                   path=request.url.path, allowed=(exc.headers or {}).get("Allow", ""))
    else:
        detail = str(exc.detail)
    return problems.response(_base_url(request), Problem(exc.status_code, detail, headers=exc.headers))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Method and path only: headers (the key) and bodies stay out of the log.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Answered outside ApiLanguage (Starlette's outermost middleware): choose the language again.
    with i18n.using(language(request.headers.get("accept-language"))):
        return problems.response(_base_url(request), Problem(500, _("The error was logged. Try again in a moment.")))


def language(accept_language: str | None) -> str:
    """The caller's language for problem details: Turkish for `tr`, English for anything else
    (no header at all included: an API's callers are programs, and its document is English)."""
    return i18n.from_accept_language(accept_language, "en")


class ApiLanguage:
    """Problem titles and details in the caller's language, from Accept-Language. The API is
    answered ahead of the web app's middleware, so it chooses here; a user's saved language and
    the `lang` cookie are for pages, not for a program holding an API key."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = None
        for name, value in scope.get("headers") or ():
            if name == b"accept-language":
                header = value.decode("latin-1")
                break
        with i18n.using(language(header)):
            await self.app(scope, receive, send)


class JsonSecurityHeaders:
    """What a JSON answer needs: no sniffing, no framing, nothing to run, not cached by proxies."""

    def __init__(self, app: ASGIApp, hsts: bool = False):
        self.app = app
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
                        (b"x-frame-options", b"DENY")]
        if hsts:
            self.headers.append((b"strict-transport-security", HSTS))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in self.headers if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
            await send(message)

        await self.app(scope, receive, add)


def create_api(settings, store, clock, endpoints: list[Endpoint]) -> Starlette:
    # Routes are tried in order: the GET hosts poll most is matched first (no two paths overlap).
    hot_first = sorted(endpoints, key=lambda e: e.operation_id != "getEntitlements")
    routes = [Route(e.full_path, guarded(e), methods=[e.method], name=e.operation_id) for e in hot_first]
    app = Starlette(routes=routes, middleware=[Middleware(JsonSecurityHeaders, hsts=settings.https),
                                               Middleware(ApiLanguage)],
                    exception_handlers={Problem: _problem, HTTPException: _http_error, 500: _server_error})
    app.state.settings = settings
    app.state.store = store
    app.state.clock = clock
    app.state.endpoints = endpoints
    app.state.buckets = TokenBuckets(settings.api_rate_per_second, settings.api_rate_burst)
    return app
