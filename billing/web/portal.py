"""Portal links in the browser: the host product's user arrives logged in as their company's owner.

Opening a link spends it (billing.portal.open_link) and starts a fresh session exactly as a
login does; the session remembers the host's return URL, so every page offers "← Back to
{host}". A spent, expired or unknown link gets a friendly page that sends the person back
to the host, never a login form: they have no password here, and need none.

Link previews must not spend a link meant for a person: a HEAD request, a browser's
speculative prefetch or prerender, and the well-known preview bots get a page with a
button instead (a POST, which bots do not send), and the link stays unspent.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing import payments, plans, portal, subscriptions
from billing.i18n import gettext as _
from billing.payments import CheckoutError
from billing.web.auth import _log_in
from billing.web.checkout import open_checkout
from billing.web.common import flash, ip, now, redirect, run, settings
from billing.web.templating import render

# Chat apps, mail scanners and search engines that fetch a pasted link to preview it.
PREVIEW_AGENTS = ("slackbot", "slack-imgproxy", "facebookexternalhit", "facebookcatalog", "twitterbot",
                  "linkedinbot", "discordbot", "telegrambot", "whatsapp", "skypeuripreview", "microsoftpreview",
                  "googlebot", "google-pagerenderer", "bingbot", "bingpreview", "applebot", "embedly",
                  "iframely", "pinterestbot", "redditbot", "mattermost", "zoominfobot", "yahoo! slurp", "duckduckbot")
# A portal page must never be cached, indexed, or leak its token to another site.
PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow", "Referrer-Policy": "no-referrer"}


def _speculative(request: Request) -> bool:
    purpose = " ".join(request.headers.get(h, "") for h in ("sec-purpose", "purpose", "x-purpose", "x-moz"))
    return "prefetch" in purpose.lower() or "prerender" in purpose.lower() or "preview" in purpose.lower()


def _preview_bot(request: Request) -> bool:
    agent = request.headers.get("user-agent", "").lower()
    return any(bot in agent for bot in PREVIEW_AGENTS)


async def open_portal(request: Request):
    token = request.path_params["token"]
    if request.method == "GET" and _speculative(request):
        # Not stored: the browser fetches the link for real when the person actually opens it.
        return Response(status_code=503, headers={**PRIVATE, "Retry-After": "0"})
    if request.method == "HEAD" or (request.method == "GET" and _preview_bot(request)):
        link = await run(request, portal.find, token)
        return render(request, "portal/continue.html", {"token": token, "link": link}, headers=PRIVATE)

    opened = await run(request, portal.open_link, now(request), token)
    if opened is None:
        link = await run(request, portal.find, token)
        return render(request, "portal/expired.html", {"return_url": link and link["return_url"]}, status=410,
                      headers=PRIVATE)
    link, owner = opened
    # A fresh session, as a login gives: whoever was logged in in this browser is logged out.
    old = request.session.get("sid")
    request.session.clear()
    if old:
        request.session["sid"] = old  # _log_in ends it in the database too
    await _log_in(request, owner)
    request.session["portal"] = {"return_url": link["return_url"]}
    response = await _land(request, link, owner)
    response.headers.update(PRIVATE)
    return response


async def _land(request: Request, link: dict, owner: dict) -> Response:
    """The dashboard, or with flow=subscribe the chosen plan's payment page."""
    plan = await run(request, plans.subscribable, link["plan"]) if link["flow"] == "subscribe" else None
    if plan is None:
        return redirect(request, "/billing/")
    sub = await run(request, subscriptions.for_company, owner["company_id"])
    if sub["status"] in (subscriptions.ACTIVE, subscriptions.PAST_DUE) and sub["plan"] != plan.code:
        return redirect(request, f"/billing/plan/{plan.code}")  # already paying: an upgrade or downgrade
    if sub["status"] == subscriptions.ACTIVE:
        flash(request, _("You're already subscribed to %(plan)s.", plan=plan.name))
        return redirect(request, "/billing/")
    try:
        checkout = await run(request, payments.start_checkout, now(request), settings(request), user=owner,
                             plan_code=plan.code, ip=ip(request))
    except CheckoutError as exc:
        flash(request, str(exc), "error")
        return redirect(request, "/billing/")
    return await open_checkout(request, checkout, plan)


routes = [
    # POST: the "Continue" button of the page link previews get, for a person whose browser looked like one.
    Route("/portal/{token}", open_portal, methods=["GET", "POST"]),
]
