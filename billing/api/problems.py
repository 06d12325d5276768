"""RFC 9457 problem details: every error the API answers, in one shape.

`type` is a URI naming the kind of problem (documented on /api/docs#errors), `title` its
short summary, `detail` what happened this time, `errors` the fields at fault (422).
"""

from __future__ import annotations

import json

from starlette.responses import Response


TITLES = {
    400: ("bad-request", "The request could not be read"),
    401: ("unauthorized", "A valid API key is required"),
    403: ("forbidden", "This key may not do that"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "It already exists"),
    412: ("precondition-failed", "Precondition failed"),
    413: ("too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Send JSON"),
    422: ("validation", "The request has invalid fields"),
    429: ("rate-limited", "Too many requests"),
    500: ("server-error", "Something went wrong on our side"),
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
    slug, title = TITLES.get(status, ("error", "Error"))
    document = {"type": f"{base_url}/api/docs#problem-{slug}", "title": title, "status": status, "detail": detail}
    if errors is not None:
        document["errors"] = [{"field": field, "message": message} for field, message in errors.items()]
    document.update(extra)
    return document


def response(base_url: str, problem: Problem) -> Response:
    content = json.dumps(body(base_url, problem.status, problem.detail, problem.errors, **problem.extra),
                         ensure_ascii=False).encode()
    return Response(content, status_code=problem.status, headers=problem.headers,
                    media_type="application/problem+json")
