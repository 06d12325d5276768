"""`create_app(settings) -> Starlette`: routes, middleware, and the lifespan.

Nothing happens at import time. Constructing the app builds objects only; the
lifespan opens the database, applies migrations and starts the mail sender
(and, as the product grows, the PayTR client and the scheduler).
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from billing import mail, migrations
from billing.clock import Clock
from billing.db import Store, write
from billing.settings import Settings
from billing.web import account, admin, auth, dev, errors, public
from billing.web.common import CurrentUserMiddleware
from billing.web.security import CSRFMiddleware, SecurityHeadersMiddleware, csrf_token
from billing.web.templating import TEMPLATES_DIR, is_htmx, make_templates

log = logging.getLogger("billing")

STATIC_DIR = TEMPLATES_DIR.parent / "static"
SESSION_COOKIE = "billing_session"
SESSION_MAX_AGE = 30 * 24 * 3600


def _template_context(request: Request) -> dict:
    settings: Settings = request.app.state.settings
    context = {
        "app_name": settings.app_name,
        "is_production": settings.is_production,
        "tz": settings.timezone,
        "htmx_available": request.app.state.htmx_available,
        "user": request.state._state.get("user"),
        "csrf_token": "",
        "flashes": [],
    }
    if "session" in request.scope:
        context["csrf_token"] = csrf_token(request)
        if request.session.get("flash"):
            context["flashes"] = request.session.pop("flash")
    return context


def _csrf_denied(scope, reason: str):
    request = Request(scope)
    templates = request.app.state.templates
    detail = f"{reason} Go back, reload the page and try again."
    name = "errors/_error.html" if is_htmx(request) else "errors/error.html"
    return templates.TemplateResponse(request, name, {"status": 403, "title": "This form has expired",
                                                      "detail": detail}, status_code=403)


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    store = Store(settings.database_path)
    sender = mail.Sender(store, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        db = store.db()
        with write(db):
            applied = migrations.apply(db)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        sender.start(app.state.clock)
        try:
            yield
        finally:
            await sender.stop()
            store.close()

    routes = [*public.routes, *auth.routes, *account.routes, *admin.routes]
    if not settings.is_production:
        routes += dev.routes
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))

    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(SessionMiddleware, secret_key=settings.secret_key, session_cookie=SESSION_COOKIE,
                   max_age=SESSION_MAX_AGE, same_site="lax", https_only=settings.https),
        Middleware(CSRFMiddleware, deny=_csrf_denied),
        Middleware(CurrentUserMiddleware),
    ]

    app = Starlette(routes=routes, middleware=middleware, exception_handlers=errors.handlers, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.clock = clock or Clock()
    app.state.sender = sender
    app.state.templates = make_templates(_template_context)
    app.state.htmx_available = (STATIC_DIR / "vendor" / "htmx.min.js").is_file()
    return app
