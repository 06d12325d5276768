"""`create_app(settings) -> Starlette`: routes, middleware, and the lifespan.

Nothing happens at import time. Constructing the app builds objects only; the
lifespan opens the database, applies migrations and starts the mail sender
(and, as the product grows, the PayTR client and the scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from billing import clock as clock_module
from billing.api import app as api_app
from billing.api.resources import ENDPOINTS as API_ENDPOINTS
from billing import i18n, jobs, mail, migrations, roles
from billing.callbacks import CallbackWriter, Checkpointer
from billing.paytr.client import PaytrClient
from billing.paytr.client import timeouts as paytr_timeouts
from billing.clock import Clock
from billing.db import Store, write
from billing.notify.delivery import WebhookSender
from billing.ops import metrics
from billing.ops.observe import Observe
from billing.settings import Settings
from billing.web import account, admin, admin_staff, admin_webhooks, auth, checkout, dev, errors, portal, public, subscription
from billing.web import admin_audit, admin_metrics, admin_payments, admin_plans, api_pages, callback, exports, language
from billing.web import credit_notes as credit_note_pages
from billing.web.common import CurrentUserMiddleware, choose_locale
from billing.web.security import CSRFMiddleware, SecurityHeadersMiddleware, csrf_token
from billing.web.templating import TEMPLATES_DIR, is_htmx, make_templates

log = logging.getLogger("billing")

STATIC_DIR = TEMPLATES_DIR.parent / "static"
SESSION_COOKIE = "billing_session"
EMULATOR_PREFIX = "/paytr-emulator"
SESSION_MAX_AGE = 30 * 24 * 3600


def _template_context(request: Request) -> dict:
    settings: Settings = request.app.state.settings
    context = {
        "locale": request.scope.get("billing.locale") or i18n.current(),
        "app_name": settings.app_name,
        "host_app_name": settings.host_app_name,
        "is_production": settings.is_production,
        "tz": settings.timezone,
        "htmx_available": request.app.state.htmx_available,
        "emulator_mounted": request.app.state.emulator is not None,
        "user": request.state._state.get("user"),
        # Pages offer only what the viewer's role may do (billing.roles).
        "can": lambda permission: roles.can(request.state._state.get("user"), permission),
        "csrf_token": "",
        "flashes": [],
    }
    if "session" in request.scope:
        context["csrf_token"] = csrf_token(request)
        if request.session.get("flash"):
            context["flashes"] = request.session.pop("flash")
        if context["user"] and request.session.get("portal"):
            # Arrived through a portal link: every page offers the way back to the host product.
            context["portal_return_url"] = request.session["portal"]["return_url"]
    offset = request.app.state.clock.offset()
    if offset:
        context["test_clock"] = {"now": request.app.state.clock.now(), "ahead": _duration(offset)}
    context["billing_alert"] = request.state._state.get("billing_alert")
    return context


def _duration(delta) -> str:
    days, seconds = delta.days, delta.seconds
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    if seconds // 3600:
        parts.append(f"{seconds // 3600} h")
    if (seconds % 3600) // 60:
        parts.append(f"{(seconds % 3600) // 60} min")
    return " ".join(parts) or "less than a minute"


def _csrf_denied(scope, reason: str):
    request = Request(scope)
    templates = request.app.state.templates
    # This runs ahead of the middleware that picks the language: pick it here (no user yet).
    locale = choose_locale(request, None)
    scope["billing.locale"] = locale
    i18n.activate(locale)
    if reason == "expired":
        detail = i18n.gettext("Your session has expired or the form was opened in another browser. "
                              "Go back, reload the page and try again.")
    else:
        detail = i18n.gettext("The security token on this form does not match your session. "
                              "Go back, reload the page and try again.")
    name = "errors/_error.html" if is_htmx(request) else "errors/error.html"
    return templates.TemplateResponse(request, name, {"status": 403, "title": i18n.gettext("This form has expired"),
                                                      "detail": detail}, status_code=403)


class BillingApp(Starlette):
    """Starlette, except that PayTR's callback, the JSON API, /metrics and /readyz are answered
    before any middleware runs; around all of them, billing.ops.observe counts and logs each request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._observed = Observe(self._dispatch)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._observed(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _dispatch(self, scope, receive, send) -> None:
        if callback.dispatch(scope):
            scope["app"] = self
            scope["billing.route"] = callback.PATH
            await callback.endpoint(scope, receive, send)
            return
        if metrics.dispatch(scope):
            scope["app"] = self
            scope["billing.route"] = scope["path"]
            await metrics.endpoint(scope, receive, send)
            return
        if api_app.dispatch(scope):
            await self.state.api(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    # WAL checkpoints run in the background (Checkpointer), never on a commit PayTR waits for.
    store = Store(settings.database_path, autocheckpoint=False, settings=settings)
    if clock is None:
        # Outside production the test clock's offset (kept in the database) shifts "now".
        clock = Clock() if settings.is_production else Clock(lambda: clock_module.load_offset(store.db()))
    sender = mail.Sender(store, settings)
    webhook_sender = WebhookSender(store, settings)
    writer = CallbackWriter(store, settings, clock)
    checkpointer = Checkpointer(store)
    sender.busy = writer.recently_active
    emulator_app = _emulator(settings) if settings.uses_emulator and not settings.is_production else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # The fixed pool: every to_thread call (requests, the tick, the senders, /metrics) waits
        # for one of DB_THREADS worker threads, so at most that many connections serve them
        # (docs/scaling.md, "Memory"). anyio's default of 40 let memory grow with load.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.db_threads
        db = store.db()
        with write(db):
            applied = migrations.apply(db)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        check_catalog(db, settings)
        checkpointer.start()
        writer.start()
        sender.start(app.state.clock)
        webhook_sender.start(app.state.clock)
        async with contextlib.AsyncExitStack() as stack:
            app.state.paytr = PaytrClient(settings, await stack.enter_async_context(_paytr_http(settings, emulator_app)))
            if emulator_app is not None:
                callbacks_http = await stack.enter_async_context(_callback_http(settings, app))
                emulator_app.state.emulator.attach_callback_client(callbacks_http)
                stack.push_async_callback(emulator_app.state.emulator.aclose)
                emulator_app.state.emulator.resume_deliveries()
            app.state.jobs = jobs.Context(store=store, settings=settings, clock=app.state.clock,
                                          paytr=app.state.paytr)
            scheduler = lane = None
            if settings.scheduler:
                # Renewal charges go on their own lane, so the tick never waits for PayTR's answers.
                lane = app.state.jobs.lane = jobs.ChargeLane(app.state.jobs).start()
                scheduler = _start_scheduler(app.state.jobs, app.state.ticks)
            try:
                yield
            finally:
                # SIGTERM: uvicorn has stopped accepting and answered every request in flight
                # (callbacks included) before this runs; now the running tick stops at its next
                # safe point and the charge lane's sent charges get their answers (unsent ones are
                # released), both at once; then the senders stop, then the callback writer commits
                # whatever is still queued.
                await asyncio.gather(scheduler.stop() if scheduler else asyncio.sleep(0),
                                     lane.stop(TICK_STOP_SECONDS) if lane else asyncio.sleep(0))
                await webhook_sender.stop()
                await sender.stop()
        await writer.stop()
        await anyio.to_thread.run_sync(checkpointer.stop)
        store.close()

    routes = [*public.routes, *auth.routes, *account.routes, *checkout.routes, *subscription.routes, *admin.routes, *admin_plans.routes,
              *credit_note_pages.routes,
              *admin_audit.routes, *admin_staff.routes,
              *portal.routes, *api_pages.routes, *admin_webhooks.routes, *exports.routes, *admin_metrics.routes,
              *admin_payments.routes,
              *language.routes]
    if not settings.is_production:
        routes += dev.routes
    if emulator_app is not None:
        routes.append(Mount(EMULATOR_PREFIX, app=emulator_app, name="paytr-emulator"))
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))

    middleware = [
        Middleware(SecurityHeadersMiddleware, frame_sources=_origin(settings), hsts=settings.https),
        Middleware(SessionMiddleware, secret_key=settings.secret_key, session_cookie=SESSION_COOKIE,
                   max_age=SESSION_MAX_AGE, same_site="lax", https_only=settings.https),
        Middleware(CSRFMiddleware, deny=_csrf_denied),
        Middleware(CurrentUserMiddleware),
    ]

    app = BillingApp(routes=routes, middleware=middleware, exception_handlers=errors.handlers, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.clock = clock
    app.state.sender = sender
    app.state.webhook_sender = webhook_sender
    app.state.callback_writer = writer
    app.state.emulator = emulator_app.state.emulator if emulator_app is not None else None
    # Production does not stat every template file on every render to see whether it changed.
    app.state.templates = make_templates(_template_context, auto_reload=not settings.is_production)
    app.state.api = api_app.create_api(settings, store, clock, API_ENDPOINTS)
    app.state.htmx_available = (STATIC_DIR / "vendor" / "htmx.min.js").is_file()
    metrics.setup(app.state)
    return app


def check_catalog(db, settings: Settings) -> None:
    """Start-up refuses a catalog whose invoices could not show VAT as exactly the rate of the net."""
    from billing import plans
    from billing.settings import ConfigError

    unsplittable = plans.prices_that_do_not_split(db, settings.vat_rate)
    if unsplittable:
        rate = settings.vat_rate
        raise ConfigError(f"at VAT_RATE {rate} % no net price gives exactly these prices, so their invoices "
                          f"could not show VAT as {rate} % of the net: {', '.join(unsplittable)}. "
                          "Change the prices or the rate.")


# How long shutdown waits for a running tick to reach its next safe point (a tick checks between
# steps and batches; renewal charges are the charge lane's, which has the same allowance), then for
# the lane's charges already sent to PayTR to be answered. A tick cut short is safe (jobs claim
# rows, the next start redoes what is due); a charge whose answer never came is settled by the
# status query. With uvicorn's GRACEFUL_SECONDS for requests the process exits within 10 s.
TICK_STOP_SECONDS = 5


class Ticker:
    """The scheduler's tick, and the one running now, so shutdown can let it finish."""

    def __init__(self, context: jobs.Context, ticks: metrics.TickStatus):
        self.context = context
        self.ticks = ticks
        self.running: asyncio.Task | None = None
        self.scheduler = AsyncIOScheduler(timezone=UTC)

    async def tick(self) -> None:
        self.running = asyncio.current_task()
        started, ok = time.perf_counter(), False
        try:
            # Mail is the sender's (woken by every commit that queues one, and it yields to callbacks):
            # a tick rendering a batch of receipt PDFs could not stop at shutdown until it was done.
            await jobs.tick(self.context, mail_batches=0)
            ok = True
        except Exception:  # one bad tick must not stop the next ones
            log.exception("scheduled tick failed")
        finally:
            self.running = None
        # /metrics shows the duration and the last good tick; /readyz fails after 3 intervals without one.
        # (A tick cancelled at shutdown raised past this line: it is neither.)
        self.ticks.record(time.perf_counter() - started, ok)

    def start(self) -> "Ticker":
        """APScheduler is only the tick; what is due lives in the database. The first tick runs
        at start-up, so work missed while the app was down is done once, right away."""
        self.scheduler.add_job(self.tick, "interval", seconds=self.context.settings.tick_seconds, id="tick",
                               name="tick", max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        self.scheduler.start()
        return self

    async def stop(self, timeout: float = TICK_STOP_SECONDS) -> None:
        """No new tick starts; the running one (if any) stops at its next safe point (between steps
        and batches), within `timeout`. Only then is the scheduler shut down: its asyncio executor
        cancels the coroutines still running."""
        self.scheduler.pause()
        self.context.stop.set()
        running = self.running
        if running is not None and not running.done():
            log.info("waiting for the running tick to finish before exit")
            done, _pending = await asyncio.wait({running}, timeout=timeout)
            if not done:
                log.warning("the tick did not finish within %s s; stopping it (the next start redoes what is due)",
                            timeout)
                running.cancel()
                await asyncio.wait({running})
        self.scheduler.shutdown(wait=False)


def _start_scheduler(context: jobs.Context, ticks: metrics.TickStatus) -> Ticker:
    return Ticker(context, ticks).start()


def _origin(settings: Settings) -> str:
    """PayTR's origin, which the checkout frames, posts the card form to and loads PayTR's iframe
    resizer script from ('self' covers the built-in emulator)."""
    if settings.uses_emulator:
        return "'self'"
    parts = urlsplit(settings.paytr_api_base)
    return f"{parts.scheme}://{parts.netloc}"


def _emulator(settings: Settings):
    from billing.paytr.emulator import EmulatorConfig, create_emulator

    return create_emulator(EmulatorConfig(
        merchant_id=settings.paytr_merchant_id, merchant_key=str(settings.paytr_merchant_key),
        merchant_salt=str(settings.paytr_merchant_salt),
        notification_url=settings.paytr_notification_url or settings.url("/billing/callback"),
        app_url=settings.url("/"), app_name=settings.app_name),
        state_path=settings.data_dir / "paytr-emulator.pickle")


def _paytr_http(settings: Settings, emulator_app) -> httpx.AsyncClient:
    """The client for PayTR's API, owned by the lifespan; always with timeouts."""
    if emulator_app is not None:
        # The built-in emulator is called in-process: no port, no network.
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator_app), base_url="http://paytr-emulator",
                                 timeout=paytr_timeouts(settings))
    return httpx.AsyncClient(base_url=settings.paytr_api_base, timeout=paytr_timeouts(settings))


def _callback_http(settings: Settings, app: Starlette) -> httpx.AsyncClient:
    """How the mounted emulator reaches the notification URL: in-process when it is our own."""
    if settings.paytr_notification_url:
        return httpx.AsyncClient(timeout=10.0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.base_url, timeout=10.0)
