"""The owner's self-service: renew, cancel and resume, change plan, the saved card, the timeline."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, cards, changes, jobs, lifecycle, mail, payments, plans, subscriptions
from billing import timeline as timeline_view
from billing.cards import CardError
from billing.i18n import gettext as _
from billing.changes import ChangeError
from billing.payments import CheckoutError
from billing.paytr.client import PaytrError
from billing.web.checkout import open_checkout, still_open
from billing.web.common import (current_user, flash, form, ip, login_required, now, owner_required, redirect, run,
                                settings)
from billing.web.templating import render

log = logging.getLogger("billing.web")


async def _subscription(request: Request) -> dict:
    user = await current_user(request)
    return await run(request, subscriptions.for_company, user["company_id"])


@login_required
async def renew(request: Request):
    sub = await _subscription(request)
    if not subscriptions.is_paid(sub):
        return redirect(request, "/billing/#plans")
    plan = await run(request, lifecycle.renewal_plan, sub)
    start, end, _anchor = subscriptions.next_period(sub, now(request), settings(request).tz, plan.months)
    _plan, price = await run(request, subscriptions.renewal_price, sub, start)
    company = await run(request, accounts.company, sub["company_id"])
    return render(request, "billing/renew.html", {
        "subscription": sub, "plan": plan, "price": price, "period_start": start, "period_end": end,
        "grace_ends": subscriptions.grace_ends(sub, settings(request).grace_days),
        "can_save_card": settings(request).paytr_recurring, "renews_by_card": cards.renews_by_card(company),
        "card_label": cards.shown(company.get("paytr_card_label")),
        "change_begins": subscriptions.waits_for_scheduled_change(sub, now(request))})


async def _change(request: Request, change, *args, done: str):
    """Run one of the owner's changes; either way back to the dashboard with a message."""
    user = await current_user(request)
    try:
        await run(request, change, now(request), settings(request), user, *args)
    except ChangeError as exc:
        flash(request, str(exc), "error")
    else:
        flash(request, done)
    return redirect(request, "/billing/")


@owner_required
async def cancel(request: Request):
    if request.method == "POST":
        return await _change(request, changes.cancel_at_period_end,
                             done=_("Your subscription will end at the end of the paid period. "
                                    "You can resume it until then."))
    sub = await _subscription(request)
    if sub["status"] != subscriptions.ACTIVE or sub["cancel_at_period_end"]:
        return redirect(request, "/billing/")
    return render(request, "billing/cancel.html", {"subscription": sub, "plan": await run(request, plans.get, sub["plan"])})


@owner_required
async def resume(request: Request):
    return await _change(request, changes.resume, done=_("Welcome back! Your subscription renews as usual."))


@owner_required
async def change_plan(request: Request):
    new = await run(request, plans.offered, request.path_params["plan"])
    sub = await _subscription(request)
    context = {"subscription": sub, "old": await run(request, plans.get, sub["plan"]), "new": new, "error": None, "card": None}
    try:
        context["kind"], context["quote"] = await run(request, changes.preview, now(request), settings(request), sub["company_id"],
                                                      new.code)
    except ChangeError as exc:
        context["error"] = str(exc)
        return render(request, "billing/change_plan.html", context, status=409)
    context["can_save_card"] = settings(request).paytr_recurring
    company = await run(request, accounts.company, sub["company_id"])
    if await _renews_by_card(request, company) and context["quote"] and context["quote"].amount:
        # The stored list, not PayTR's (no page view calls PayTR); the charge itself lists first and
        # fails plainly if the card is gone.
        box = await run(request, cards.box, company)
        context["card"] = box["card"]  # None: the stored list says PayTR no longer has it
        if box["card"] is None and box["cards_pending"]:  # a card just saved: PayTR decides when charged
            context["card"] = {"brand": cards.shown(company.get("paytr_card_label")) or _("Saved card"), "last4": ""}
    return render(request, "billing/change_plan.html", context)


async def _renews_by_card(request: Request, company: dict | int) -> bool:
    """Does the operator charge saved cards, and has the company one that renewals charge?"""
    if not settings(request).paytr_recurring:
        return False
    if isinstance(company, int):
        company = await run(request, accounts.company, company)
    return cards.renews_by_card(company)


@owner_required
async def upgrade(request: Request):
    data = await form(request)
    new = await run(request, plans.offered, data.get("plan", ""))
    user = await current_user(request)
    try:
        quote = await run(request, changes.upgrade_quote, now(request), settings(request), user["company_id"], new.code)
        if not quote.amount:
            await run(request, changes.upgrade_for_free, now(request), settings(request), user, new.code)
            flash(request, _("You're now on %(plan)s. The difference for the time left was below PayTR's minimum, "
                             "so there was nothing to pay.", plan=new.name))
            return redirect(request, "/billing/")
        on_card = data.get("pay_with") == "saved_card" and await _renews_by_card(request, user["company_id"])
        # A new card is saved through PayTR's Direct API form, which the operator must have enabled.
        save_new = data.get("pay_with") == "new_card" and settings(request).paytr_recurring
        if not on_card and (unchanged := await still_open(request, data.get("current", ""),
                                                          "direct" if save_new else "iframe", new.code)):
            return unchanged
        checkout = await run(request, payments.start_checkout, now(request), settings(request), user=user,
                             plan_code=new.code, ip=ip(request), upgrade=quote,
                             method="recurring" if on_card else "direct" if save_new else "iframe")
    except (ChangeError, CheckoutError) as exc:
        flash(request, str(exc), "error")
        return redirect(request, "/billing/")
    if on_card:
        # PayTR answers the charge by callback; the status page waits for it like any payment.
        await jobs.charge_now(request.app.state.jobs, now(request), checkout.payment["id"])
        return redirect(request, f"/billing/payment/success?oid={checkout.payment['merchant_oid']}")
    return await open_checkout(request, checkout, new)


@owner_required
async def downgrade(request: Request):
    new = await run(request, plans.offered, (await form(request)).get("plan", ""))
    return await _change(request, changes.schedule_downgrade, new.code,
                         done=_("Done: you move to %(plan)s when the current period ends. "
                                "You can undo this until then.", plan=new.name))


@owner_required
async def undo_change(request: Request):
    return await _change(request, changes.undo_scheduled_change,
                         done=_("The scheduled plan change is off; your plan stays as it is."))


@owner_required
async def choose_card(request: Request):
    """The owner picks which saved card renewals charge."""
    user = await current_user(request)
    ctoken = (await form(request)).get("ctoken", "")
    company = await run(request, accounts.company, user["company_id"])
    if not (settings(request).paytr_recurring and company.get("paytr_utoken")):
        flash(request, _("There is no saved card to choose. You can save one when you pay."), "error")
        return redirect(request, "/billing/")
    try:
        found = await request.app.state.paytr.list_cards(company["paytr_utoken"])
        card = await run(request, cards.choose, now(request), user, company, found, ctoken)
    except PaytrError as exc:
        log.warning("choosing a card for company %s: PayTR did not answer: %s", user["company_id"], exc)
        flash(request, _("PayTR did not answer, so nothing changed. Please try again in a minute."), "error")
    except CardError as exc:
        flash(request, str(exc), "error")
    else:
        flash(request, _("Renewals are now charged to %(card)s.", card=cards.shown(cards.label(card))))
    return redirect(request, "/billing/")


@owner_required
async def remove_card(request: Request):
    """Delete one saved card at PayTR; renewals charged to it go back to pay links."""
    user = await current_user(request)
    ctoken = (await form(request)).get("ctoken", "")
    company = await run(request, accounts.company, user["company_id"])
    if not company.get("paytr_utoken"):
        return redirect(request, "/billing/")
    client = request.app.state.paytr
    try:
        found = await client.list_cards(company["paytr_utoken"])
        # A form without a card names the one renewals charge, or the only one.
        ctoken = ctoken or company.get("paytr_ctoken") or (found[0].get("ctoken", "") if len(found) == 1 else "")
        if cards.find(found, ctoken) is None:
            await run(request, cards.sync, now(request), company, found)
            raise CardError(_("That card is no longer saved at PayTR. Here are the cards it has now."))
        await client.delete_card(company["paytr_utoken"], ctoken)
        outcome = await run(request, cards.removed, now(request), settings(request), user, company, found, ctoken)
    except PaytrError as exc:
        log.warning("removing a card of company %s: PayTR said: %s", user["company_id"], exc)
        flash(request, _("PayTR could not remove the card right now. Please try again in a minute."), "error")
    except CardError as exc:
        flash(request, str(exc), "error")
    else:
        if not outcome["remaining"]:
            flash(request, _("Your saved card was removed. We'll email you a link to pay before the next renewal."))
        elif outcome["renewals_card"]:
            flash(request, _("%(card)s was removed. Renewals are still charged to %(renewals_card)s.",
                             card=outcome["label"], renewals_card=outcome["renewals_card"]))
        else:
            flash(request, _("%(card)s was removed. No card is charged for renewals now: choose one of your saved "
                             "cards, or we'll email you a link to pay before the next renewal.", card=outcome["label"]))
    return redirect(request, "/billing/")


@login_required
async def timeline(request: Request):
    """The company's history in sentences, by day; `?show=payments` (…) filters it. A filter link
    followed by htmx gets the timeline alone."""
    user, config, at = await current_user(request), settings(request), now(request)
    show = request.query_params.get("show")

    def load(db):  # one trip to a worker thread
        return {"company": accounts.company(db, user["company_id"]),
                "timeline": timeline_view.page(db, user["company_id"], config, at, show=show,
                                               viewer_email=user["email"])}

    return render(request, "billing/timeline.html", await run(request, load), fragment="_timeline.html")


@login_required
async def email(request: Request):
    """One email from the timeline. Only the person it was sent to reads its body here (a password reset
    to a colleague carries their link); everyone in the company sees to whom it went, what and when."""
    user = await current_user(request)
    found = await run(request, mail.for_company, user["company_id"], request.path_params["outbox_id"])
    if found is None:
        raise HTTPException(404, _("No such email."))
    return render(request, "billing/email.html", {
        "email": found, "status_label": timeline_view.email_status_label(found["status"]),
        "readable": found["to_addr"].casefold() == user["email"].casefold(),
        "retention_days": settings(request).mail_body_retention_days})


routes = [
    Route("/billing/emails/{outbox_id:int}", email),
    Route("/billing/renew", renew),
    Route("/billing/cancel", cancel, methods=["GET", "POST"]),
    Route("/billing/resume", resume, methods=["POST"]),
    Route("/billing/plan/upgrade", upgrade, methods=["POST"]),
    Route("/billing/plan/downgrade", downgrade, methods=["POST"]),
    Route("/billing/plan/undo", undo_change, methods=["POST"]),
    Route("/billing/plan/{plan}", change_plan),
    Route("/billing/card/choose", choose_card, methods=["POST"]),
    Route("/billing/card/remove", remove_card, methods=["POST"]),
    Route("/billing/timeline", timeline),
]
