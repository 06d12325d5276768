"""Around every HTTP request: its id, its metrics and (LOG_FORMAT=json) its access line.

The outermost layer of BillingApp, so PayTR's callback, the JSON API, /metrics and the pages
are all counted the same way. Requests are labelled by route template (`/admin/companies/{id}`),
never by the raw URL: raw paths would carry tokens (reset links, portal links) and give every
customer a time series of their own.
"""

from __future__ import annotations

import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.ops import logs, metrics

UNMATCHED = "unmatched"  # a 404, a probe for /wp-login.php: one label for all of them


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered, with any Mount's prefix."""
    fixed = scope.get("billing.route")
    if fixed:
        return fixed
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    # A mounted app's router replaces scope["route"] with its own route; the mount's prefix is in root_path.
    prefix = scope.get("root_path", "")[len(root_path):]
    path = getattr(route, "path", "") or ""
    if isinstance(route, Mount):
        return (prefix or path) + "/…"
    return prefix + path


def _company_id(scope: Scope):
    state = scope.get("state") or {}
    user = state.get("user")
    if isinstance(user, dict):
        return user.get("company_id")
    return None


class Observe:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                offered = value.decode("latin-1")
                break
        request_id = logs.request_id(offered)
        context = {"request_id": request_id}
        token = logs.REQUEST.set(context)
        root_path = scope.get("root_path", "")
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_template(scope, root_path)
            method = scope["method"]
            metrics.REQUESTS.labels(route, method, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)
            if logs.ACCESS.isEnabledFor(20):
                company_id = _company_id(scope)
                context.update(route=route, company_id=company_id)
                logs.access(method, route, status, started, company_id)
            logs.REQUEST.reset(token)
