"""The OpenAPI 3.1 document, built from the route table (resources.ENDPOINTS) and schemas.py.

Nothing here describes a route by hand: add an Endpoint and it is in the document and on
/api/docs.
"""

from __future__ import annotations

from http import HTTPStatus

from billing import i18n
from billing.api import problems, schemas
from billing.api.app import Endpoint

VERSION = "1.0.0"


def description(settings) -> str:
    return (
        f"The JSON API of {settings.app_name}: customers, their entitlements and usage, invoices, payments, "
        "plans and portal links.\n\n"
        "**Authentication.** Send a key as `Authorization: Bearer bk_test_…` (`bk_live_…` in production). "
        "Staff create keys in the admin console (API keys) or with `python main.py api-key create NAME "
        "[--scope read|write]`; a key is shown once and stored only as a hash. A missing, wrong or revoked key "
        "answers 401; a `read` key may only GET, and answers 403 on the other routes.\n\n"
        f"**Rate limit.** {settings.api_rate_per_second} requests a second per key, with bursts of up to "
        f"{settings.api_rate_burst}; beyond that, 429 with `Retry-After` (seconds).\n\n"
        "**Conventions.** Ids are prefixed strings (`cus_42`, `pay_7`; invoices by their number). Times are "
        "RFC 3339 in UTC. Money is an integer in minor units beside its `currency`. Lists are "
        "`{object: \"list\", data, has_more}`, newest first; page with `limit` and `starting_after`. "
        "Request bodies are JSON objects of at most 64 KiB; unknown fields are refused (422).\n\n"
        "**Errors** are RFC 9457 problem details (`application/problem+json`) with `type`, `title`, "
        "`status`, `detail`, and for 422 `errors: [{field, message}]`. Bad JSON answers 400, an unknown "
        "route 404, a wrong method 405, a body over 64 KiB 413."
    )


def _parameter(param) -> dict:
    return {"name": param.name, "in": param.location, "description": param.description,
            "required": param.required or param.location == "path", "schema": param.schema}


def _problem_response(status: int) -> dict:
    with i18n.using("en"):  # the document is written in English, like its descriptions
        title = str(problems.TITLES[status][1])
    return {"description": title, "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}


def operation(endpoint: Endpoint) -> dict:
    op = {"operationId": endpoint.operation_id, "summary": endpoint.summary, "tags": [endpoint.tag]}
    if endpoint.description:
        op["description"] = endpoint.description
    if endpoint.params:
        op["parameters"] = [_parameter(p) for p in endpoint.params]
    if endpoint.request:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{endpoint.request}"}}}}
    success = {"description": HTTPStatus(endpoint.status).phrase}
    if endpoint.response:
        success["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{endpoint.response}"}}}
    responses = {str(endpoint.status): success}
    if any(p.name == "If-None-Match" for p in endpoint.params):
        responses["304"] = {"description": "Not modified: the ETag you sent is still current."}
    errors = set(endpoint.errors)
    if endpoint.scope is not None:
        errors |= {401, 429}
        op["security"] = [{"bearerKey": []}]
        op["x-scope"] = endpoint.scope
        if endpoint.scope == "write":
            errors.add(403)
    else:
        op["security"] = []
    for status in sorted(errors):
        responses[str(status)] = _problem_response(status)
    op["responses"] = responses
    return op


def document(settings, endpoints: list[Endpoint]) -> dict:
    paths: dict[str, dict] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.full_path, {})[endpoint.method.lower()] = operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{settings.app_name} API", "version": VERSION, "description": description(settings)},
        "servers": [{"url": settings.base_url}],
        "security": [{"bearerKey": []}],
        "tags": [{"name": t} for t in dict.fromkeys(e.tag for e in endpoints)],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerKey": {"type": "http", "scheme": "bearer",
                                              "description": "An API key: bk_test_… or bk_live_…"}},
            "schemas": schemas.COMPONENTS,
        },
    }
