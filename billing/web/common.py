"""What every handler uses: run a domain function, who is logged in, guards, flash, redirects."""

from __future__ import annotations

import functools
import logging
import threading
from datetime import datetime, timedelta
from urllib.parse import quote, urlsplit

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import Request, empty_receive
from starlette.responses import RedirectResponse, Response

from billing import accounts, clock, i18n, payments, roles
from billing.db import ClientGone, stop_reads_when
from billing.ops import logs
from billing.web.security import client_ip
from billing.web.templating import is_htmx

log = logging.getLogger("billing.web")


# How often a page's read checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.05


class ClientClosed(HTTPException):
    """The client went away while its page was being read; nobody sees this answer (499, as
    nginx logs it), the access log does."""

    def __init__(self):
        super().__init__(499, "client closed request")


async def run(request: Request, fn, *args, **kwargs):
    """Call a domain function `fn(db, ...)` on a worker thread with that thread's connection.

    Keeps the event loop free while SQLite waits for a lock or an fsync, and
    while argon2 does its deliberately slow work.

    For a GET (a read) the query stops once the client has gone: a staff member who types
    the next search letter abandons the previous request, and its scan should not keep a
    worker thread and its connection busy. Writes (POST) always run to the end.
    """
    store = request.app.state.store
    if request.method not in ("GET", "HEAD") or request.receive is empty_receive:  # a write; a middleware's Request
        return await anyio.to_thread.run_sync(lambda: fn(store.db(), *args, **kwargs))
    gone = threading.Event()

    def call():
        if gone.is_set():  # gave up while this waited for a worker thread: nothing to do
            raise ClientGone()
        db = store.db()
        with stop_reads_when(db, gone):
            return fn(db, *args, **kwargs)

    async def watch():
        # Asked only once the read has run a poll interval: nearly every read is done by then, and
        # asking the connection on every call cost a page of many reads a tenth of its CPU.
        while True:
            await anyio.sleep(DISCONNECT_POLL_SECONDS)
            if await request.is_disconnected():
                break
        gone.set()

    if await request.is_disconnected():
        raise ClientClosed()
    failed: list[Exception] = []
    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            result = await anyio.to_thread.run_sync(call)
        except Exception as exc:  # raised below, outside the group, so not wrapped in an ExceptionGroup
            failed.append(exc)
        group.cancel_scope.cancel()
    if failed:
        if isinstance(failed[0], ClientGone):
            log.info("stopped a read for %s %s: the client went away", request.method, request.url.path)
            raise ClientClosed() from None
        raise failed[0]
    return result


async def in_thread(fn, *args, **kwargs):
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def now(request: Request) -> datetime:
    return request.app.state.clock.now()


def session_now(request: Request) -> datetime:
    """Sessions age in real time: moving the test clock a month does not log everyone out."""
    return request.app.state.clock.real_now()


def settings(request: Request):
    return request.app.state.settings


def ip(request: Request) -> str:
    return client_ip(request, settings(request).trusted_proxies)


async def current_user(request: Request) -> dict | None:
    if "user" not in request.state._state:
        token = request.session.get("sid")
        user = await run(request, accounts.session_user, session_now(request), token) if token else None
        if token and user is None:
            request.session.pop("sid", None)  # ended elsewhere (logout, password reset)
        request.state.user = user
    return request.state.user


# A staff member without two-factor, in production, may open only these until they enrol.
ENROL_PATH = "/auth/two-factor/setup"
ENROL_ALLOWED = (ENROL_PATH, "/auth/confirm", "/auth/logout")

DEVICE_COOKIE = "device"
DEVICE_MAX_AGE = 2 * 365 * 24 * 3600


def must_enrol(request: Request, user: dict | None) -> bool:
    """Production staff must have two-factor on before they see anything of the console."""
    return bool(user and user["role"] == "staff" and settings(request).is_production
                and not user.get("totp_enabled_at"))


class CurrentUserMiddleware:
    """Load who is logged in before any page renders, so every page's navigation
    (error pages included) knows. Static files and server-to-server calls skip it.
    Also the guard that sends production staff without two-factor to enrol first, and the
    one place that sets the browser's long-lived `device` cookie after a login chose one."""

    SKIP = ("/static/", "/billing/callback", "/paytr-emulator/", "/healthz")
    QUIET = ("/static/", "/billing/callback", "/healthz")  # no language to choose

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope["path"].startswith(self.QUIET):
            request = Request(scope)
            user = None if scope["path"].startswith(self.SKIP) else await current_user(request)
            if user and user.get("company_id"):
                logs.bind(company_id=user["company_id"])  # every log line of this request, not only the access line
            # Every page speaks the visitor's language (the emulator's too), chosen before anything renders.
            scope["billing.locale"] = choose_locale(request, user)
            i18n.activate(scope["billing.locale"])
            if must_enrol(request, user) and not scope["path"].startswith(ENROL_ALLOWED):
                await redirect(request, ENROL_PATH)(scope, receive, send)
                return
            if user and user.get("subscription_status") == "past_due" and not await run(
                    request, payments.renewal_confirming, now(request), user["company_id"]):
                # While PayTR confirms a payment for it, "pay now" would invite paying twice.
                request.state.billing_alert = past_due_alert(request, user)
            send = _device_cookie_sender(scope, send, settings(request).https)
        await self.app(scope, receive, send)


def _device_cookie_sender(scope, send, secure: bool):
    async def sending(message):
        token = scope.get("billing.device_cookie")
        if message["type"] == "http.response.start" and token:
            cookie = (f"{DEVICE_COOKIE}={token}; Max-Age={DEVICE_MAX_AGE}; Path=/; HttpOnly; SameSite=Lax"
                      + ("; Secure" if secure else ""))
            message.setdefault("headers", []).append((b"set-cookie", cookie.encode("latin-1")))
        await send(message)

    return sending


LANG_COOKIE = "lang"


def choose_locale(request: Request, user: dict | None) -> str:
    """The user's saved language; else the switch's cookie; else the browser's Accept-Language
    (Turkish for tr, English for anything else); with no header at all, DEFAULT_LOCALE."""
    saved = i18n.normalize((user or {}).get("locale"))
    if saved:
        return saved
    chosen = i18n.normalize(request.cookies.get(LANG_COOKIE))
    if chosen:
        return chosen
    return i18n.from_accept_language(request.headers.get("accept-language"), settings(request).default_locale)


def locale(request: Request) -> str:
    return request.scope.get("billing.locale") or i18n.current()


def past_due_alert(request: Request, user: dict) -> dict:
    """The banner every page shows while a renewal is unpaid."""
    due = clock.parse(user["subscription_period_end"])
    grace_end = due + timedelta(days=settings(request).grace_days)
    tz = settings(request).tz
    return {"message": i18n.gettext("Your payment was due on %(due)s. Pay by %(grace_end)s to keep your subscription.",
                                    due=i18n.date_text(due.astimezone(tz)),
                                    grace_end=i18n.date_text(grace_end.astimezone(tz)))}


def safe_next(target: str | None, default: str = "/billing/") -> str:
    """Only paths inside this app: '/billing/x' yes; '//evil.com', 'https://evil.com', '/\\evil' no."""
    if not target or not isinstance(target, str):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:  # '//[x': an unclosed IPv6 host
        return default
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(ch) < 32 for ch in target)):
        return default
    # Percent-encoded like RedirectResponse does: htmx gets it in a header, which must be ASCII.
    return quote(target, safe=":/%#?=@[]!$&'()*+,;")


def redirect(request: Request, url: str) -> Response:
    """303 for a plain form; htmx gets HX-Redirect so it navigates instead of swapping a page in."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(request, f"/auth/login?next={quote(target, safe='/')}")


def flash(request: Request, message: str, level: str = "success") -> None:
    messages = list(request.session.get("flash", []))
    messages.append([level, message])
    request.session["flash"] = messages[-5:]


def _guard(allowed: set[str], refuse):
    """A decorator letting only users with one of `allowed` roles through;
    `refuse(request, user)` answers everyone else who is logged in."""

    def decorator(handler):
        @functools.wraps(handler)
        async def wrapper(request: Request):
            user = await current_user(request)
            if user is None:
                return login_redirect(request)
            if user["role"] not in allowed:
                return refuse(request, user)
            return await handler(request)

        return wrapper

    return decorator


def _forbid(message: str):
    def refuse(request, user):
        raise HTTPException(403, str(message))  # in the language of the request

    return refuse


# Customers only (owner or member); staff are sent to their admin console.
login_required = _guard({"owner", "member"}, lambda request, user: redirect(request, "/admin/"))
owner_required = _guard({"owner"}, _forbid(i18n.lazy_gettext("Only the account owner can do this.")))
staff_required = _guard({"staff"}, _forbid(i18n.lazy_gettext("This page is for the operator's staff.")))


def requires(permission: str):
    """Staff whose role has `permission` (billing.roles) get through; other staff get 403 naming
    their role, customers are sent home, visitors to the login page."""

    def decorator(handler):
        @staff_required
        @functools.wraps(handler)
        async def wrapper(request: Request):
            user = await current_user(request)
            if not roles.can(user, permission):
                raise HTTPException(403, i18n.gettext(
                    "Your role (%(role)s) cannot do this. Ask an admin if you need it.",
                    role=roles.LABELS[roles.role_of(user)]))
            return await handler(request)

        return wrapper

    return decorator


REAUTH_WINDOW = timedelta(minutes=10)


def recently_authenticated(request: Request, user: dict) -> bool:
    """Did this session give its password (or a second factor) within the last 10 minutes?"""
    at = user.get("authenticated_at")
    return bool(at) and session_now(request) - clock.parse(at) < REAUTH_WINDOW


def fresh_auth_required(handler):
    """Before a sensitive action (refunds, price changes, staff, API keys, webhook endpoints) the
    person proves again who they are. A stale session is sent to /auth/confirm and comes back:
    to this page for a GET, to the page the form was on for a POST (nothing is done on the way)."""

    @functools.wraps(handler)
    async def wrapper(request: Request):
        user = await current_user(request)
        if user is None:
            return login_redirect(request)
        if recently_authenticated(request, user):
            return await handler(request)
        if request.method == "GET":
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        else:
            referer = urlsplit(request.headers.get("referer", ""))
            same_site = referer.netloc == request.url.netloc
            back = referer.path + (f"?{referer.query}" if referer.query else "") if same_site else ""
        return redirect(request, f"/auth/confirm?next={quote(safe_next(back, '/'), safe='/')}")

    return wrapper


async def form(request: Request) -> dict[str, str]:
    """The submitted form as plain strings (first value of each field)."""
    data = await request.form()
    return {key: value for key, value in data.items() if isinstance(value, str)}


def user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:300]
