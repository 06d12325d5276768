"""Staff manage the host product's webhook endpoints: /admin/webhooks."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import events
from billing.i18n import gettext as _
from billing.notify import webhooks
from billing.web.common import current_user, flash, now, redirect, run, settings, fresh_auth_required, requires
from billing.web.templating import render

PAGE = 25


def _types(endpoint: dict) -> list[str] | None:
    return json.loads(endpoint["event_types"]) if endpoint.get("event_types") else None


async def _chosen_types(request: Request) -> list[str]:
    submitted = await request.form()
    return [value for value in submitted.getlist("events") if isinstance(value, str)]


async def _list_page(request: Request, *, values: dict | None = None, error: str | None = None, status: int = 200,
                     added: dict | None = None):
    endpoints = await run(request, lambda db: webhooks.listing(db))
    for endpoint in endpoints:
        endpoint["types"] = _types(endpoint)
    return render(request, "admin/webhooks.html", {
        "endpoints": endpoints, "types": webhooks.TYPE_DESCRIPTIONS, "values": values or {}, "error": error,
        "added": added}, status=status)


@requires("webhooks.manage")
async def index(request: Request):
    return await _list_page(request)


@requires("webhooks.manage")
@fresh_auth_required
async def add(request: Request):
    submitted = await request.form()
    url = str(submitted.get("url", ""))
    chosen = await _chosen_types(request)
    user = await current_user(request)
    try:
        endpoint, secret = await run(request, webhooks.add, now(request), settings(request), url, chosen,
                                     actor=events.user_actor(user))
    except webhooks.WebhookError as exc:
        return await _list_page(request, values={"url": url, "events": chosen}, error=str(exc), status=422)
    # The secret is shown on this answer only (not in a redirect's flash, which the session cookie would carry).
    return await _list_page(request, added={"endpoint": endpoint, "secret": secret, "rotated": False}, status=201)


async def _endpoint_page(request: Request, endpoint_id: int, *, error: str | None = None, status: int = 200,
                         secret: str | None = None):
    endpoint = await run(request, webhooks.get, endpoint_id)
    if endpoint is None:
        raise HTTPException(404, _("No webhook endpoint with that number."))
    try:
        before = int(request.query_params["before"]) if "before" in request.query_params else None
    except ValueError:
        before = None
    messages = await run(request, lambda db: webhooks.deliveries(db, endpoint_id, before=before, limit=PAGE + 1))
    more = len(messages) > PAGE
    messages = messages[:PAGE]
    endpoint["types"] = _types(endpoint)
    return render(request, "admin/webhook.html", {
        "endpoint": endpoint, "messages": messages, "older": messages[-1]["id"] if more else None,
        "paged": before is not None, "types": webhooks.TYPE_DESCRIPTIONS, "error": error, "secret": secret,
        "previous_signs": len(webhooks.signing_secrets(endpoint, now(request))) > 1}, status=status)


@requires("webhooks.manage")
async def endpoint(request: Request):
    return await _endpoint_page(request, request.path_params["endpoint_id"])


async def _change(request: Request, fn, *args, **kwargs):
    user = await current_user(request)
    try:
        return await run(request, fn, now(request), request.path_params["endpoint_id"], *args,
                         actor=events.user_actor(user), **kwargs)
    except LookupError:
        raise HTTPException(404, _("No webhook endpoint with that number.")) from None


@requires("webhooks.manage")
@fresh_auth_required
async def set_events(request: Request):
    chosen = await _chosen_types(request)
    try:
        await _change(request, webhooks.set_events, chosen)
    except webhooks.WebhookError as exc:
        return await _endpoint_page(request, request.path_params["endpoint_id"], error=str(exc), status=422)
    types = webhooks.parse_types(chosen)
    flash(request, _("Saved: %(types)s.", types=", ".join(types)) if types else _("Saved: every event."))
    return redirect(request, f"/admin/webhooks/{request.path_params['endpoint_id']}")


@requires("webhooks.manage")
@fresh_auth_required
async def set_enabled(request: Request):
    enable = (await request.form()).get("enabled") == "1"
    await _change(request, webhooks.set_enabled, enable)
    flash(request, _("Enabled: what was waiting goes out now.") if enable else
          _("Disabled: nothing is sent to it, and new events are not queued for it."))
    return redirect(request, f"/admin/webhooks/{request.path_params['endpoint_id']}")


@requires("webhooks.manage")
@fresh_auth_required
async def rotate(request: Request):
    _, secret = await _change(request, webhooks.rotate)
    return await _endpoint_page(request, request.path_params["endpoint_id"], secret=secret)


@requires("webhooks.manage")
@fresh_auth_required
async def delete(request: Request):
    if (await request.form()).get("confirm") != "yes":
        return await _endpoint_page(request, request.path_params["endpoint_id"], status=422,
                                    error=_("Tick the box to confirm that the endpoint and its delivery log go."))
    await _change(request, webhooks.delete)
    flash(request, _("Endpoint deleted."))
    return redirect(request, "/admin/webhooks")


@requires("webhooks.manage")
async def send_again(request: Request):
    user = await current_user(request)
    endpoint_id, message_id = request.path_params["endpoint_id"], request.path_params["message_id"]

    def again(db, at):
        message = webhooks.get_message(db, message_id)
        if message is None or message["endpoint_id"] != endpoint_id:
            raise LookupError(message_id)
        return webhooks.send_again(db, at, message_id, actor=events.user_actor(user))

    try:
        await run(request, again, now(request))
    except LookupError:
        raise HTTPException(404, _("No such message for this endpoint.")) from None
    except webhooks.PayloadPruned:
        flash(request, _("This event's payload was removed under the retention rule, so it cannot be sent "
                         "again."), "error")
        return redirect(request, f"/admin/webhooks/{endpoint_id}")
    flash(request, _("Queued to be sent again now."))
    return redirect(request, f"/admin/webhooks/{endpoint_id}")


routes = [
    Route("/admin/webhooks", index),
    Route("/admin/webhooks", add, methods=["POST"]),
    Route("/admin/webhooks/{endpoint_id:int}", endpoint),
    Route("/admin/webhooks/{endpoint_id:int}/events", set_events, methods=["POST"]),
    Route("/admin/webhooks/{endpoint_id:int}/enabled", set_enabled, methods=["POST"]),
    Route("/admin/webhooks/{endpoint_id:int}/rotate", rotate, methods=["POST"]),
    Route("/admin/webhooks/{endpoint_id:int}/delete", delete, methods=["POST"]),
    Route("/admin/webhooks/{endpoint_id:int}/messages/{message_id:int}/send-again", send_again, methods=["POST"]),
]
