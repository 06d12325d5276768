"""The operator's admin console (staff only)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from billing import clock, customer_search, dashboard, events, i18n, jobs, money, payments, plans, refunds, staff
from billing import subscriptions
from billing.i18n import gettext as _, ngettext
from billing.accounts import FormError
from billing.paytr.client import PaytrRefused, PaytrUnavailable
from billing.db import write
from billing.web.common import current_user, flash, form, now, redirect, run, safe_next, settings, fresh_auth_required, requires
from billing.web.templating import is_htmx, render

log = logging.getLogger("billing.admin")


@requires("console.read")
async def home(request: Request):
    """The customer list (billing.customer_search). A filter or search typed with htmx gets the
    list alone; the rest of the home (counts, anomalies, failed emails) only comes with the page."""
    tz, whole_page = settings(request).tz, not is_htmx(request)

    def load(db, at):
        catalog = plans.all_plans(db, hidden=True, archived=True)
        query = customer_search.parse(request.query_params, {plan.code for plan in catalog})
        data = customer_search.page(db, query, at, tz)
        if whole_page:
            data.update(staff.overview(db))
        return {**data, "catalog": catalog, "plan_names": {plan.code: plan for plan in catalog}}

    data = await run(request, load, now(request))
    data.update(anomaly_label=refunds.anomaly_label, anomaly_explanation=refunds.anomaly_explanation,
                status_labels=subscriptions.STATUS_LABELS, presets=customer_search.PRESETS,
                orders=customer_search.ORDERS, currencies=customer_search.CURRENCIES,
                min_substring=customer_search.MIN_SUBSTRING)
    return render(request, "admin/home.html", data, fragment="admin/_companies.html")


async def _company_page(request: Request, error: str | None = None, status: int = 200):
    company_id = request.path_params["company_id"]
    data = await run(request, staff.company, company_id)
    if data is None:
        raise HTTPException(404, _("No customer with that number."))
    data["entries"] = await run(request, dashboard.timeline, company_id, settings(request))
    data["status_label"] = subscriptions.STATUS_LABELS[data["subscription"]["status"]]
    data.update(error=error, payment_labels=payments.STATUS_LABELS, refund_labels=refunds.STATUS_LABELS,
                refund_message=refunds.message_text, anomaly_label=refunds.anomaly_label,
                anomaly_explanation=refunds.anomaly_explanation)
    return render(request, "admin/company.html", data, status=status)


@requires("console.read")
async def company(request: Request):
    return await _company_page(request)


@requires("trial.extend")
async def extend_trial(request: Request):
    data = await form(request)
    try:
        days = int(data.get("days", ""))
        if not 1 <= days <= 90:
            raise ValueError
    except ValueError:
        return await _company_page(request, _("Enter a number of days from 1 to 90."), status=422)
    user = await current_user(request)

    def extend(db, at):
        with write(db):
            sub = subscriptions.for_company(db, request.path_params["company_id"])
            if sub is None:
                raise LookupError
            return subscriptions.extend_trial(db, at, sub, days, events.user_actor(user))

    try:
        sub = await run(request, extend, now(request))
    except LookupError:
        raise HTTPException(404, _("No customer with that number.")) from None
    except subscriptions.TransitionError as exc:
        return await _company_page(request, str(exc), status=409)
    ends = clock.parse(sub["trial_ends_at"]).astimezone(settings(request).tz)
    flash(request, ngettext("Trial extended by %(num)d day, to %(date)s. New reminders will go out.",
                            "Trial extended by %(num)d days, to %(date)s. New reminders will go out.", days,
                            date=i18n.date_text(ends)))
    return redirect(request, f"/admin/companies/{request.path_params['company_id']}")


async def _refund_page(request: Request, values: dict | None = None, errors: dict | None = None,
                       status: int = 200):
    data = await run(request, staff.refund_form, request.path_params["payment_id"])
    if data is None:
        raise HTTPException(404, _("No payment with that number."))
    if values is None:
        values = {"amount": money.decimal_string(data["refundable"]) if data["refundable"] else ""}
    # A fresh key per form: submitting this form twice makes one refund, never two.
    data.update(values={"request_key": refunds.new_request_key(), **values}, errors=errors or {},
                refund_labels=refunds.STATUS_LABELS, anomaly_label=refunds.anomaly_label)
    return render(request, "admin/refund.html", data, status=status, fragment="admin/_refund_form.html")


@requires("refund")
@fresh_auth_required
async def refund_page(request: Request):
    return await _refund_page(request)


@requires("refund")
@fresh_auth_required
async def make_refund(request: Request):
    """Record the refund, ask PayTR (outside any transaction), record what PayTR said."""
    user, data = await current_user(request), await form(request)
    try:
        refund, created = await run(request, refunds.start, now(request),
                                    payment_id=request.path_params["payment_id"], amount=data.get("amount", ""),
                                    reason=data.get("reason", ""), request_key=data.get("request_key", ""),
                                    actor=events.user_actor(user))
    except LookupError:
        raise HTTPException(404, _("No payment with that number.")) from None
    except FormError as exc:
        return await _refund_page(request, values=data, errors=exc.errors, status=422)
    back = f"/admin/companies/{refund['company_id']}"
    amount = money.format(refund["amount"], refund["currency"])
    if not created:  # the same form sent again (a double click): the first request sends it, once
        flash(request, _("This refund of %(amount)s was already sent (%(status)s).", amount=amount,
                         status=refunds.STATUS_LABELS[refund["status"]]))
        return redirect(request, back)
    oid = (await run(request, staff.refund_form, refund["payment_id"]))["payment"]["merchant_oid"]
    try:
        await request.app.state.paytr.refund(oid, refund["amount"], refund["reference_no"])
    except PaytrRefused as exc:
        await run(request, refunds.settle, now(request), settings(request), refund["id"], ok=False,
                  message=exc.reason)
        flash(request, _("PayTR refused the refund of %(amount)s: %(reason)s. Nothing was refunded.", amount=amount,
                         reason=exc.reason), "error")
    except Exception as exc:  # PayTR did not answer (or we broke after asking): only its status query can tell
        if not isinstance(exc, PaytrUnavailable):
            log.exception("refund %s: unexpected error while asking PayTR", refund["reference_no"])
        await run(request, refunds.unknown, now(request), refund["id"], str(exc))
        minutes = int(refunds.CHECK_AFTER.total_seconds() // 60)
        flash(request, ngettext("PayTR did not answer, so we don't know yet whether %(amount)s went back. Don't "
                                "refund again: within %(num)d minute we ask PayTR's status query and record the "
                                "outcome here.",
                                "PayTR did not answer, so we don't know yet whether %(amount)s went back. Don't "
                                "refund again: within %(num)d minutes we ask PayTR's status query and record the "
                                "outcome here.", minutes, amount=amount), "error")
    else:
        await run(request, refunds.settle, now(request), settings(request), refund["id"], ok=True,
                  message=refunds.ACCEPTED)
        flash(request, _("Refunded %(amount)s. The customer gets an email.", amount=amount))
    return redirect(request, back)


@requires("refund")
async def settle_refund(request: Request):
    """Staff checked PayTR's merchant panel for a refund whose outcome is unknown."""
    user, data = await current_user(request), await form(request)
    made = data.get("outcome") == "made"
    if data.get("outcome") not in ("made", "not_made"):
        raise HTTPException(400, _("Say whether PayTR's panel shows the refund."))

    def go(db, at):
        refund = refunds.one_refund(db, request.path_params["refund_id"])
        if refund is None:
            raise LookupError
        if refund["status"] != refunds.UNKNOWN:
            return refund
        who = f"{user['name']} ({events.user_actor(user)})"
        return refunds.settle(db, at, settings(request), refund["id"], ok=made,
                              message=f"{who} found it {'in' if made else 'missing from'} PayTR's panel.")

    try:
        refund = await run(request, go, now(request))
    except LookupError:
        raise HTTPException(404, _("No refund with that number.")) from None
    flash(request, _("Recorded.") if refund["status"] in (refunds.SUCCEEDED, refunds.FAILED) else _("Nothing to record."))
    return redirect(request, f"/admin/companies/{refund['company_id']}")


@requires("anomaly.resolve")
async def resolve_anomaly(request: Request):
    user, data = await current_user(request), await form(request)
    try:
        anomaly = await run(request, refunds.resolve_anomaly, now(request), request.path_params["anomaly_id"],
                            data.get("note", ""), events.user_actor(user))
    except LookupError:
        raise HTTPException(404, _("No such anomaly.")) from None
    except FormError as exc:
        flash(request, exc.errors["note"], "error")
        anomaly = None
    back = safe_next(data.get("back"), "/admin/")
    if anomaly is not None:
        flash(request, _("Marked as resolved."))
    return redirect(request, back)


@requires("clock.manage")
async def test_clock(request: Request):
    if settings(request).is_production:
        raise HTTPException(404)
    app_clock = request.app.state.clock
    context = {"error": None, "report": None}
    if request.method == "POST":
        data = await form(request)
        offset = app_clock.offset()
        try:
            if data.get("action") == "reset":
                offset = type(offset)(0)
            else:
                offset = offset + clock.parse_duration(data.get("advance", ""))
            await run(request, clock.save_offset, offset)
        except ValueError as exc:
            context["error"] = str(exc)
        else:
            app_clock.forget()
            # Jobs run as of the new time at once, so the effect shows right away.
            context["report"] = await jobs.tick(request.app.state.jobs)
    context.update(app_now=app_clock.now(), real_now=clock.utcnow(),
                   ahead=_ahead(app_clock.offset()))
    return render(request, "admin/clock.html", context, status=422 if context["error"] else 200)


def _ahead(offset) -> str:
    if not offset:
        return ""
    days = ngettext("%(num)d day", "%(num)d days", offset.days)
    hours = offset.seconds // 3600
    return _("%(days)s %(hours)d h", days=days, hours=hours) if hours else days


routes = [
    Route("/admin/", home),
    Route("/admin/companies/{company_id:int}", company),
    Route("/admin/companies/{company_id:int}/extend-trial", extend_trial, methods=["POST"]),
    Route("/admin/payments/{payment_id:int}/refund", refund_page),
    Route("/admin/payments/{payment_id:int}/refund", make_refund, methods=["POST"]),
    Route("/admin/refunds/{refund_id:int}/settle", settle_refund, methods=["POST"]),
    Route("/admin/anomalies/{anomaly_id:int}/resolve", resolve_anomaly, methods=["POST"]),
    Route("/admin/clock", test_clock, methods=["GET", "POST"]),
]
