"""The owner's self-service: renew, cancel and resume, change plan, the saved card, the timeline."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from billing import accounts, cards, changes, dashboard, jobs, lifecycle, payments, plans, subscriptions
from billing.changes import ChangeError
from billing.payments import CheckoutError
from billing.paytr.client import PaytrError
from billing.web.checkout import open_checkout
from billing.web.common import (current_user, flash, form, ip, login_required, now, owner_required, redirect, run,
                                settings)
from billing.web.templating import render


async def _subscription(request: Request) -> dict:
    user = await current_user(request)
    return await run(request, subscriptions.for_company, user["company_id"])


@login_required
async def renew(request: Request):
    sub = await _subscription(request)
    if not subscriptions.is_paid(sub):
        return redirect(request, "/billing/#plans")
    start, end, _ = subscriptions.next_period(sub, now(request), settings(request).tz)
    return render(request, "billing/renew.html", {
        "subscription": sub, "plan": lifecycle.renewal_plan(sub), "period_start": start, "period_end": end,
        "grace_ends": subscriptions.grace_ends(sub, settings(request).grace_days)})


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
                             done="Your subscription will end at the end of the paid period. "
                                  "You can resume it until then.")
    sub = await _subscription(request)
    if sub["status"] != subscriptions.ACTIVE or sub["cancel_at_period_end"]:
        return redirect(request, "/billing/")
    return render(request, "billing/cancel.html", {"subscription": sub, "plan": plans.get(sub["plan"])})


@owner_required
async def resume(request: Request):
    return await _change(request, changes.resume, done="Welcome back! Your subscription renews as usual.")


@owner_required
async def change_plan(request: Request):
    new = plans.get(request.path_params["plan"])
    sub = await _subscription(request)
    context = {"subscription": sub, "old": plans.get(sub["plan"]), "new": new, "error": None, "card": None}
    try:
        context["kind"], context["quote"] = await run(request, changes.preview, now(request), sub["company_id"],
                                                      new.code)
    except ChangeError as exc:
        context["error"] = str(exc)
        return render(request, "billing/change_plan.html", context, status=409)
    utoken = await _saved_card_token(request, sub["company_id"])
    if utoken and context["quote"] and context["quote"].amount:
        try:
            context["card"] = await cards.saved_card(request.app.state.paytr, utoken)
        except PaytrError:  # offer the card anyway; PayTR decides when charged
            context["card"] = {"brand": "Saved card", "last4": ""}
    return render(request, "billing/change_plan.html", context)


async def _saved_card_token(request: Request, company_id: int) -> str | None:
    """The saved card's token when the operator charges saved cards at all."""
    if not settings(request).paytr_recurring:
        return None
    company = await run(request, accounts.company, company_id)
    return company.get("paytr_utoken") or None


@owner_required
async def upgrade(request: Request):
    data = await form(request)
    new = plans.get(data.get("plan", ""))
    user = await current_user(request)
    try:
        quote = await run(request, changes.upgrade_quote, now(request), user["company_id"], new.code)
        if not quote.amount:
            await run(request, changes.upgrade_for_free, now(request), settings(request), user, new.code)
            flash(request, f"You're now on {new.name}. The difference for the time left was below PayTR's minimum, "
                           "so there was nothing to pay.")
            return redirect(request, "/billing/")
        on_card = data.get("pay_with") == "saved_card" and await _saved_card_token(request, user["company_id"])
        checkout = await run(request, payments.start_checkout, now(request), settings(request), user=user,
                             plan_code=new.code, ip=ip(request), upgrade=quote,
                             method="recurring" if on_card else "iframe")
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
    new = plans.get((await form(request)).get("plan", ""))
    return await _change(request, changes.schedule_downgrade, new.code,
                         done=f"Done: you move to {new.name} when the current period ends. "
                              "You can undo this until then.")


@owner_required
async def undo_change(request: Request):
    return await _change(request, changes.undo_scheduled_change,
                         done="The scheduled plan change is off; your plan stays as it is.")


@owner_required
async def remove_card(request: Request):
    user = await current_user(request)
    company = await run(request, accounts.company, user["company_id"])
    if not company.get("paytr_utoken"):
        return redirect(request, "/billing/")
    try:
        label = await cards.remove_at_paytr(request.app.state.paytr, company["paytr_utoken"])
    except PaytrError as exc:
        flash(request, f"PayTR could not remove the card right now ({exc}). Please try again in a minute.", "error")
        return redirect(request, "/billing/")
    await run(request, cards.forget, now(request), settings(request), user, label)
    flash(request, "Your saved card was removed. We'll email you a link to pay before the next renewal.")
    return redirect(request, "/billing/")


@login_required
async def timeline(request: Request):
    user = await current_user(request)
    company = await run(request, accounts.company, user["company_id"])
    entries = await run(request, dashboard.timeline, user["company_id"], settings(request))
    return render(request, "billing/timeline.html", {"company": company, "entries": entries})


routes = [
    Route("/billing/renew", renew),
    Route("/billing/cancel", cancel, methods=["GET", "POST"]),
    Route("/billing/resume", resume, methods=["POST"]),
    Route("/billing/plan/upgrade", upgrade, methods=["POST"]),
    Route("/billing/plan/downgrade", downgrade, methods=["POST"]),
    Route("/billing/plan/undo", undo_change, methods=["POST"]),
    Route("/billing/plan/{plan}", change_plan),
    Route("/billing/card/remove", remove_card, methods=["POST"]),
    Route("/billing/timeline", timeline),
]
