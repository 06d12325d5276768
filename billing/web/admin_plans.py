"""/admin/plans: the operator's catalog. Staff read it; admins create, edit, archive and delete
plans (billing/plan_admin.py keeps the rules)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from billing import plan_admin, plans
from billing.accounts import FormError
from billing.i18n import gettext as _, lazy_gettext
from billing.web.common import (current_user, flash, form, fresh_auth_required, ip, now, redirect, requires, run,
                                settings)
from billing.web.templating import render


@requires("console.read")
async def index(request: Request):
    def load(db):
        return {"plans": plans.all_plans(db, hidden=True, archived=True), "counts": plan_admin.subscriber_counts(db),
                "pending": {code: plan_admin.pending_notice(db, code) for code in
                            (p.code for p in plans.all_plans(db, hidden=True, archived=True))}}

    return render(request, "admin/plans.html", await run(request, load))


def _form_values(plan: plans.Plan | None, trial_days: int = 14) -> dict:
    if plan is None:  # a new plan starts from TRIAL_DAYS; each plan then keeps its own trial length
        return {"currency": "TRY", "interval": "month", "public": "1", "trial_days": str(trial_days),
                "sort_order": "100"}
    from billing import money

    return {**{f: getattr(plan, f) for f in plan_admin.FIELDS if f not in ("price", "public", "featured")},
            "price": money.decimal_string(plan.price), "public": "1" if plan.public else "",
            "featured": "1" if plan.featured else "",
            "workspaces": "" if plan.workspaces is None else plan.workspaces}


async def _page(request: Request, plan: plans.Plan | None, values: dict, errors: dict, status: int = 200):
    used = await run(request, plan_admin.in_use, plan.code) if plan else False
    subscribers = (await run(request, plan_admin.subscriber_counts)).get(plan.code, {}) if plan else {}
    return render(request, "admin/plan_form.html", {
        "plan": plan, "values": values, "errors": errors, "used": used,
        "paying": subscribers.get("active", 0) + subscribers.get("past_due", 0),
        "notice_days": settings(request).price_change_notice_days, "vat_rate": settings(request).vat_rate,
        "currencies": plans.CURRENCIES}, status=status)


@requires("plans.manage")
@fresh_auth_required
async def new(request: Request):
    if request.method != "POST":
        return await _page(request, None, _form_values(None, settings(request).trial_days), {})
    data = await form(request)
    user = await current_user(request)
    try:
        code = await run(request, plan_admin.create, now(request), settings(request), user, data, ip(request))
    except FormError as exc:
        return await _page(request, None, data, exc.errors, status=422)
    flash(request, _("Plan %(code)s created. New customers can choose it now.", code=code)
          if data.get("public") == "1" else _("Plan %(code)s created. It is hidden: only staff can move a customer "
                                             "to it.", code=code))
    return redirect(request, "/admin/plans")


@requires("plans.manage")
@fresh_auth_required
async def edit(request: Request):
    plan = await run(request, plans.get, request.path_params["code"])
    if request.method != "POST":
        return await _page(request, plan, _form_values(plan), {})
    data = await form(request)
    user = await current_user(request)
    try:
        done = await run(request, plan_admin.update, now(request), settings(request), user, plan.code, data,
                         ip(request))
    except FormError as exc:
        return await _page(request, plan, {**_form_values(plan), **data}, exc.errors, status=422)
    if done["scheduled"]:
        flash(request, _("Saved. %(num)d subscribers were emailed; each renews at the new price from the first "
                         "renewal at least %(days)d days from now.", num=done["scheduled"],
                         days=settings(request).price_change_notice_days))
    elif done["price_changed"]:
        flash(request, _("Saved. The new price applies to new subscriptions; existing subscribers keep theirs."))
    else:
        flash(request, _("Saved."))
    return redirect(request, "/admin/plans")


def _state_change(change, done: str):
    @requires("plans.manage")
    @fresh_auth_required
    async def handler(request: Request):
        code = request.path_params["code"]
        plan = await run(request, plans.get, code)
        data = await form(request)
        user = await current_user(request)
        try:
            await run(request, change, now(request), user, code, data.get("reason", ""), ip(request))
        except FormError as exc:
            flash(request, next(iter(exc.errors.values())), "error")
            return redirect(request, f"/admin/plans/{code}")
        flash(request, str(done) % {"plan": plan.name})
        return redirect(request, "/admin/plans")

    return handler


routes = [
    Route("/admin/plans", index),
    Route("/admin/plans/new", new, methods=["GET", "POST"]),
    Route("/admin/plans/{code}", edit, methods=["GET", "POST"]),
    Route("/admin/plans/{code}/archive", _state_change(plan_admin.archive, lazy_gettext(
        "%(plan)s is archived: no longer offered; its subscribers keep it.")), methods=["POST"]),
    Route("/admin/plans/{code}/restore", _state_change(plan_admin.restore, lazy_gettext("%(plan)s is offered again.")),
          methods=["POST"]),
    Route("/admin/plans/{code}/delete", _state_change(plan_admin.delete, lazy_gettext("%(plan)s is deleted.")), methods=["POST"]),
]
