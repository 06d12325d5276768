"""RFC 9457 problem details: every error the API answers, in one shape.

`type` is a URI naming the kind of problem (documented on /api/docs#errors), `title` its
short summary, `detail` what happened this time, `errors` the fields at fault (422). `title`,
`detail` and each error's `message` are in the caller's language (billing/api/app.py sets it
from Accept-Language); `type`, field names and `errors[].field` stay English.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from billing.i18n import lazy_gettext


# Titles in the caller's language (Accept-Language: tr or English); `type` slugs stay as they are.
TITLES = {
    400: ("bad-request", lazy_gettext("The request could not be read")),
    401: ("unauthorized", lazy_gettext("A valid API key is required")),
    403: ("forbidden", lazy_gettext("This key may not do that")),
    404: ("not-found", lazy_gettext("Not found")),
    405: ("method-not-allowed", lazy_gettext("Method not allowed")),
    409: ("conflict", lazy_gettext("It already exists")),
    412: ("precondition-failed", lazy_gettext("Precondition failed")),
    413: ("too-large", lazy_gettext("The request body is too large")),
    415: ("unsupported-media-type", lazy_gettext("Send JSON")),
    422: ("validation", lazy_gettext("The request has invalid fields")),
    429: ("rate-limited", lazy_gettext("Too many requests")),
    500: ("server-error", lazy_gettext("Something went wrong on our side")),
}


class Problem(Exception):
    """Raised anywhere in an API handler; answered as application/problem+json."""

    def __init__(self, status: int, detail: str, *, errors: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def body(base_url: str, status: int, detail: str, errors: dict[str, str] | None = None, **extra) -> dict:
    slug, title = TITLES.get(status, ("error", lazy_gettext("Error")))
    document = {"type": f"{base_url}/api/docs#problem-{slug}", "title": str(title), "status": status,
                "detail": str(detail)}
    if errors is not None:
        document["errors"] = [{"field": field, "message": str(message)} for field, message in errors.items()]
    document.update(extra)
    return document


def response(base_url: str, problem: Problem) -> Response:
    content = json.dumps(body(base_url, problem.status, problem.detail, problem.errors, **problem.extra),
                         ensure_ascii=False).encode()
    return Response(content, status_code=problem.status, headers=problem.headers,
                    media_type="application/problem+json")
