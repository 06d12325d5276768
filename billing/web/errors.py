"""One place that maps errors to pages: friendly, no stack traces, the right status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse

from billing.i18n import gettext as _, lazy_gettext
from billing.plans import UnknownPlan
from billing.web.templating import is_htmx

log = logging.getLogger("billing.web")

TITLES = {
    400: lazy_gettext("That request didn't look right"),
    403: lazy_gettext("You can't open this page"),
    404: lazy_gettext("Page not found"),
    405: lazy_gettext("That action isn't allowed here"),
    410: lazy_gettext("This link no longer works"),
    413: lazy_gettext("That was too much to send"),
    429: lazy_gettext("Slow down a little"),
    500: lazy_gettext("Something went wrong on our side"),
}


def _page(request: Request, status: int, detail: str | None):
    templates = getattr(request.app.state, "templates", None)
    title = str(TITLES.get(status) or _("Something went wrong"))
    if templates is None:  # failed before start-up finished
        return PlainTextResponse(f"{status} {title}", status_code=status)
    name = "errors/_error.html" if is_htmx(request) else "errors/error.html"
    return templates.TemplateResponse(request, name, {"status": status, "title": title, "detail": detail},
                                      status_code=status)


async def http_error(request: Request, exc: HTTPException):
    detail = exc.detail if exc.detail and exc.detail != _default_phrase(exc.status_code) else None
    response = _page(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def unknown_plan(request: Request, exc: UnknownPlan):
    return _page(request, 404, _("We don't have a plan by that name. See the plans on the pricing page."))


async def server_error(request: Request, exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    try:
        return _page(request, 500, _("The error was logged. Please try again in a moment."))
    except Exception:  # the error page itself must never fail
        return HTMLResponse(f"<h1>{_('Something went wrong')}</h1><p>{_('Please try again in a moment.')}</p>",
                            status_code=500)


def _default_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


handlers = {
    HTTPException: http_error,
    UnknownPlan: unknown_plan,
    500: server_error,
}
