"""One place that maps errors to pages: friendly, no stack traces, the right status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse

from billing.plans import UnknownPlan
from billing.web.templating import is_htmx

log = logging.getLogger("billing.web")

TITLES = {
    400: "That request didn't look right",
    403: "You can't open this page",
    404: "Page not found",
    405: "That action isn't allowed here",
    410: "This link no longer works",
    413: "That was too much to send",
    429: "Slow down a little",
    500: "Something went wrong on our side",
}


def _page(request: Request, status: int, detail: str | None):
    templates = getattr(request.app.state, "templates", None)
    title = TITLES.get(status, "Something went wrong")
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
    return _page(request, 404, "We don't have a plan by that name. See the plans on the pricing page.")


async def server_error(request: Request, exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    try:
        return _page(request, 500, "The error was logged. Please try again in a moment.")
    except Exception:  # the error page itself must never fail
        return HTMLResponse("<h1>Something went wrong</h1><p>Please try again in a moment.</p>", status_code=500)


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
