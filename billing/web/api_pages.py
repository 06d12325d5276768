"""Staff's API keys page (/admin/api-keys) and the API reference (/api/docs).

The reference is rendered from the same OpenAPI document /api/v1/openapi.json serves, so the
page, the document and the routes cannot drift apart.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import events
from billing.accounts import FormError
from billing.api import keys, openapi, problems
from billing.api.resources import ENDPOINTS
from billing.i18n import gettext as _
from billing.web.common import current_user, flash, form, now, redirect, run, settings, fresh_auth_required, requires
from billing.web.templating import render


async def _keys_page(request: Request, *, values=None, errors=None, created=None, status=200):
    found = await run(request, lambda db: keys.list_keys(db))
    response = render(request, "admin/api_keys.html", {
        "keys": found, "values": values or {"scope": keys.DEFAULT_SCOPE}, "errors": errors or {},
        "created": created, "scopes": keys.SCOPES}, status=status)
    if created:
        response.headers["Cache-Control"] = "no-store"  # the page holds a key: no copy in any cache
    return response


@requires("api_keys.manage")
@fresh_auth_required
async def api_keys(request: Request):
    if request.method != "POST":
        return await _keys_page(request)
    data, user = await form(request), await current_user(request)
    try:
        row, key = await run(request, keys.create, now(request), settings(request), data.get("name", ""),
                             data.get("scope") or keys.DEFAULT_SCOPE, actor=events.user_actor(user))
    except FormError as exc:
        return await _keys_page(request, values=data, errors=exc.errors, status=422)
    return await _keys_page(request, created={"row": row, "key": key}, status=201)


async def _key_or_404(request: Request) -> dict:
    row = await run(request, lambda db: keys.one_key(db, request.path_params["key_id"]))
    if row is None:
        raise HTTPException(404, _("No API key with that number."))
    return row


@requires("api_keys.manage")
@fresh_auth_required
async def revoke_key(request: Request):
    row = await _key_or_404(request)
    if request.method != "POST":
        return render(request, "admin/api_key_revoke.html", {"key": row})
    user = await current_user(request)
    await run(request, keys.revoke, now(request), row["id"], actor=events.user_actor(user))
    if row["revoked_at"]:
        flash(request, _("%(name)s was already revoked.", name=row["name"]))
    else:
        flash(request, _("Revoked %(name)s (%(prefix)s…). Requests with it are refused from now on.", name=row["name"],
                         prefix=row["prefix"]))
    return redirect(request, "/admin/api-keys")


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def inline(text: str | None) -> Markup:
    """The document's light markup (`code`, **bold**) as HTML; everything else escaped."""
    html = str(escape(text or ""))
    return Markup(_BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", html)))


def _type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    kind = schema.get("type", "const" if "const" in schema else "object")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if schema.get("enum"):
        kind += ": " + ", ".join("null" if v is None else str(v) for v in schema["enum"])
    return kind


def _fields(schema: dict) -> list[dict]:
    required = set(schema.get("required", ()))
    return [{"name": name, "type": _type(prop), "required": name in required,
             "description": prop.get("description", "")} for name, prop in schema.get("properties", {}).items()]


async def api_docs(request: Request):
    document = openapi.document(settings(request), ENDPOINTS)
    components = document["components"]["schemas"]
    sections: dict[str, list] = {}
    for path, item in document["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            sections.setdefault(op["tags"][0], []).append({
                "method": method.upper(), "path": path, "op": op, "scope": op.get("x-scope"),
                "body": _type(body) if body else None,
                "responses": [{"status": status, "description": r["description"],
                               "schema": _type(next(iter(r["content"].values()))["schema"]) if r.get("content")
                               else None} for status, r in op["responses"].items()],
            })
    context = {
        "doc": document, "sections": sections, "intro": document["info"]["description"].split("\n\n"),
        "schemas": [{"name": name, "description": s.get("description", ""), "fields": _fields(s)}
                    for name, s in components.items() if s.get("properties")],
        "problems": [{"status": status, "slug": slug, "title": str(title)}
                     for status, (slug, title) in sorted(problems.TITLES.items())],
        "inline": inline,
    }
    return render(request, "api/docs.html", context)


routes = [
    Route("/admin/api-keys", api_keys, methods=["GET", "POST"]),
    Route("/admin/api-keys/{key_id:int}/revoke", revoke_key, methods=["GET", "POST"]),
    Route("/api/docs", api_docs),
]
