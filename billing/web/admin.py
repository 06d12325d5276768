"""The operator's admin console (staff only)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing import (audit, cards, clock, clock_report, customer_search, events, i18n, jobs, money,
                     payments, plans, refunds, roles, staff, staff_actions, subscriptions)
from billing import timeline as timeline_view
from billing.i18n import gettext as _, ngettext
from billing.accounts import FormError
from billing.ops import data_requests
from billing.paytr.client import PaytrError, PaytrRefused, PaytrUnavailable
from billing.changes import ChangeError
from billing.payments import CheckoutError
from billing.staff_actions import ActionError
from billing.web import admin_audit
from billing.web.common import (current_user, flash, form, ip, now, redirect, run, safe_next, settings,
                                fresh_auth_required, requires)
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


async def _company_page(request: Request, errors: dict | None = None, status: int = 200,
                        values: dict | None = None):
    """The customer's console page. `errors` {form: {field: message}} show inline beside the form
    that was sent (with `values`, what was typed), with a 4xx status."""
    company_id = request.path_params["company_id"]
    config, at = settings(request), now(request)
    show = request.query_params.get("show")  # the timeline's filter

    def load(db):
        # One trip to a worker thread for the whole page (each trip costs about 0.1 ms of the event loop).
        data = staff.company(db, company_id)
        if data is None:
            return None
        sub = data["subscription"]
        # The same entries the customer reads, plus their technical detail (the template shows it).
        data["timeline"] = timeline_view.page(db, company_id, config, at, show=show, staff_view=True)
        data["plan"] = plans.get(db, sub["plan"])
        data["scheduled"] = plans.get(db, sub["scheduled_plan"]) if sub["scheduled_plan"] else None
        data["plan_choices"] = staff_actions.plan_choices(db, at, config, sub)
        data["unused_refund"] = sum(amount for _p, amount in staff_actions.unused_time_refund(db, at, sub)) \
            if sub["status"] == subscriptions.ACTIVE else 0
        data["audit_entries"] = admin_audit.described(db, audit.for_company(db, company_id, 20), config.tz)
        data["erase_refusal"] = data_requests.refusal(db, data["company"])
        return data

    data = await run(request, load)
    if data is None:
        raise HTTPException(404, _("No customer with that number."))
    user = await current_user(request)
    data["status_label"] = subscriptions.STATUS_LABELS[data["subscription"]["status"]]
    data["renews_by_card"] = bool(config.paytr_recurring and cards.renews_by_card(data["company"]))
    data.update(errors=errors or {}, values=values or {}, payment_labels=payments.STATUS_LABELS,
                refund_labels=refunds.STATUS_LABELS, refund_message=refunds.message_text,
                anomaly_label=refunds.anomaly_label, anomaly_explanation=refunds.anomaly_explanation,
                can_refund=roles.can(user, "refund"), max_days=staff_actions.MAX_DAYS,
                erased=data_requests.is_erased(data["company"]))
    return render(request, "admin/company.html", data, status=status)


@requires("console.read")
async def company(request: Request):
    return await _company_page(request)


async def _staff_action(request: Request, form_name: str, call):
    """Run one of billing/staff_actions.py for this customer, `call(db, now, settings, staff, company_id,
    form, ip)`: the flash says what happened; a refusal or a missing reason shows beside the form
    (409 / 422) and nothing changed. Refunds and an upgrade's charge go to PayTR after the commit,
    as from the refund form and the customer's own upgrade."""
    user, data = await current_user(request), await form(request)
    company_id = request.path_params["company_id"]
    try:
        outcome = await run(request, call, now(request), settings(request), user, company_id, data, ip(request))
    except LookupError:
        raise HTTPException(404, _("No customer with that number.")) from None
    except FormError as exc:
        return await _company_page(request, {form_name: exc.errors}, 422, {form_name: data})
    except (ActionError, subscriptions.TransitionError, ChangeError, CheckoutError) as exc:
        return await _company_page(request, {form_name: {"form": str(exc)}}, 409, {form_name: data})
    flash(request, outcome.message)
    for made in outcome.refunds:
        level, message = await _send_refund(request, made)
        if level != "success":
            flash(request, message, level)
    if outcome.charge is not None:
        # PayTR answers the charge by callback, which changes the plan and emails the receipt.
        await jobs.charge_now(request.app.state.jobs, now(request), outcome.charge["id"])
    return redirect(request, f"/admin/companies/{company_id}")


def _refusing_refund(user: dict, data: dict) -> None:
    if data.get("settle") == "refund" and not roles.can(user, "refund"):
        raise ActionError(_("Your role cannot refund; choose “no refund”, or ask finance to refund."))


@requires("subscription.manage")
@fresh_auth_required  # it can move money: a charge to the saved card, or a refund
async def change_plan_now(request: Request):
    def call(db, at, s, user, company_id, data, address):
        _refusing_refund(user, data)
        return staff_actions.change_plan_now(db, at, s, user, company_id, data.get("plan", ""),
                                             settle=data.get("settle", ""), reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "plan_now", call)


@requires("subscription.manage")
async def schedule_plan(request: Request):
    def call(db, at, s, user, company_id, data, address):
        return staff_actions.schedule_change(db, at, s, user, company_id, data.get("plan", ""),
                                             reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "plan_later", call)


@requires("subscription.manage")
@fresh_auth_required  # it can refund
async def cancel_now(request: Request):
    def call(db, at, s, user, company_id, data, address):
        _refusing_refund(user, data)
        return staff_actions.cancel_now(db, at, s, user, company_id, settle=data.get("settle", ""),
                                        reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "cancel_now", call)


@requires("subscription.manage")
async def cancel_at_period_end(request: Request):
    def call(db, at, s, user, company_id, data, address):
        return staff_actions.cancel_at_period_end(db, at, s, user, company_id, reason=data.get("reason", ""),
                                                  ip=address)

    return await _staff_action(request, "cancel_later", call)


@requires("subscription.manage")
async def resume(request: Request):
    def call(db, at, s, user, company_id, data, address):
        return staff_actions.resume(db, at, s, user, company_id, reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "resume", call)


@requires("trial.extend")
async def extend_trial(request: Request):
    def call(db, at, s, user, company_id, data, address):
        return staff_actions.extend_trial(db, at, s, user, company_id, data.get("days", ""),
                                          reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "trial", call)


@requires("days.grant")
async def grant_days(request: Request):
    def call(db, at, s, user, company_id, data, address):
        return staff_actions.grant_days(db, at, s, user, company_id, data.get("days", ""),
                                        reason=data.get("reason", ""), ip=address)

    return await _staff_action(request, "days", call)


@requires("email.resend")
async def resend_email(request: Request):
    def call(db, at, s, user, company_id, data, address):
        copy = staff_actions.resend_email(db, at, user, company_id, request.path_params["outbox_id"],
                                          reason=data.get("reason", ""), ip=address)
        return staff_actions.Outcome(subscriptions.for_company(db, company_id),
                                     _("The email goes out again to %(address)s.", address=copy["to_addr"]))

    return await _staff_action(request, f"resend_{request.path_params['outbox_id']}", call)


async def _refund_page(request: Request, values: dict | None = None, errors: dict | None = None,
                       status: int = 200, preview: dict | None = None):
    data = await run(request, staff.refund_form, request.path_params["payment_id"])
    if data is None:
        raise HTTPException(404, _("No payment with that number."))
    if values is None:
        values = {"amount": money.decimal_string(data["refundable"]) if data["refundable"] else ""}
    # A fresh key per form: submitting this form twice makes one refund, never two. The confirmation
    # step carries the key of the form it came from.
    data.update(values={"request_key": refunds.new_request_key(), **values}, errors=errors or {},
                refund_labels=refunds.STATUS_LABELS, anomaly_label=refunds.anomaly_label, preview=preview)
    return render(request, "admin/refund.html", data, status=status, fragment="admin/_refund_form.html")


@requires("refund")
@fresh_auth_required
async def refund_page(request: Request):
    return await _refund_page(request)


@requires("refund")
@fresh_auth_required
async def make_refund(request: Request):
    """Two steps. The first submit checks the form and shows the amount and the email the customer
    will get, writing and sending nothing; "Confirm" records the refund (with its audit row), asks
    PayTR (outside any transaction) and records what PayTR said."""
    user, data = await current_user(request), await form(request)
    payment_id = request.path_params["payment_id"]
    values = {k: data.get(k, "") for k in ("amount", "reason", "request_key")}
    try:
        if data.get("step") != "confirm" or data.get("back"):
            if data.get("back"):  # "Go back": the form again, as typed, with the same key
                return await _refund_page(request, values=values)
            preview = await run(request, staff_actions.refund_preview, now(request), settings(request),
                                payment_id=payment_id, **values)
            if "already" not in preview:
                return await _refund_page(request, values=values, preview=preview)
            refund, created = preview["already"], False
        else:
            refund, created = await run(request, staff_actions.refund, now(request), user, payment_id=payment_id,
                                        ip=ip(request), **values)
    except LookupError:
        raise HTTPException(404, _("No payment with that number.")) from None
    except FormError as exc:
        return await _refund_page(request, values=values, errors=exc.errors, status=422)
    back = f"/admin/companies/{refund['company_id']}"
    amount = money.format(refund["amount"], refund["currency"])
    if not created:  # the same form sent again (a double click): the first request sends it, once
        flash(request, _("This refund of %(amount)s was already sent (%(status)s).", amount=amount,
                         status=refunds.STATUS_LABELS[refund["status"]]))
        return redirect(request, back)
    level, message = await _send_refund(request, refund)
    flash(request, message, level)
    return redirect(request, back)


async def _send_refund(request: Request, refund: dict) -> tuple[str, str]:
    """Ask PayTR to make a refund already recorded as pending; record its answer. -> (flash level, sentence)."""
    amount = money.format(refund["amount"], refund["currency"])
    oid = (await run(request, staff.refund_form, refund["payment_id"]))["payment"]["merchant_oid"]
    try:
        await request.app.state.paytr.refund(oid, refund["amount"], refund["reference_no"])
    except PaytrRefused as exc:
        await run(request, refunds.settle, now(request), settings(request), refund["id"], ok=False,
                  message=exc.reason)
        return "error", _("PayTR refused the refund of %(amount)s: %(reason)s. Nothing was refunded.", amount=amount,
                          reason=exc.reason)
    except Exception as exc:  # PayTR did not answer (or we broke after asking): only its status query can tell
        if not isinstance(exc, PaytrUnavailable):
            log.exception("refund %s: unexpected error while asking PayTR", refund["reference_no"])
        await run(request, refunds.unknown, now(request), refund["id"], str(exc))
        minutes = int(refunds.CHECK_AFTER.total_seconds() // 60)
        return "error", ngettext("PayTR did not answer, so we don't know yet whether %(amount)s went back. Don't "
                                 "refund again: within %(num)d minute we ask PayTR's status query and record the "
                                 "outcome here.",
                                 "PayTR did not answer, so we don't know yet whether %(amount)s went back. Don't "
                                 "refund again: within %(num)d minutes we ask PayTR's status query and record the "
                                 "outcome here.", minutes, amount=amount)
    await run(request, refunds.settle, now(request), settings(request), refund["id"], ok=True,
              message=refunds.ACCEPTED)
    return "success", _("Refunded %(amount)s. The customer gets an email.", amount=amount)


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
            before = await run(request, clock_report.mark)
            await run(request, clock.save_offset, offset)
        except ValueError as exc:
            context["error"] = str(exc)
        else:
            app_clock.forget()
            # Jobs run as of the new time at once, so the effect shows right away; the report counts
            # what they queued, which the mail sender and charge lane send within seconds.
            ran = await jobs.tick(request.app.state.jobs)
            context["report"] = {**ran, **await run(request, clock_report.since, before)}
            context["mail_captured"] = not settings(request).smtp_host
    context.update(app_now=app_clock.now(), real_now=clock.utcnow(),
                   ahead=_ahead(app_clock.offset()))
    return render(request, "admin/clock.html", context, status=422 if context["error"] else 200)


@requires("customer.data")
@fresh_auth_required  # a copy of everything about a customer leaves the system
async def export_data(request: Request):
    """KVKK/GDPR access request: everything about the customer as one JSON file (audited)."""
    user, data = await current_user(request), await form(request)
    company_id = request.path_params["company_id"]
    try:
        document = await run(request, data_requests.export, now(request), user, company_id,
                             reason=data.get("reason", ""), ip=ip(request))
    except LookupError:
        raise HTTPException(404, _("No customer with that number.")) from None
    except FormError as exc:
        return await _company_page(request, {"data_export": exc.errors}, 422, {"data_export": data})
    stamp = document["exported_at"][:10]
    return Response(data_requests.export_json(document), media_type="application/json; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="customer-{company_id}-{stamp}.json"',
                             "Cache-Control": "no-store"})


@requires("customer.data")
@fresh_auth_required  # it cannot be undone
async def erase_data(request: Request):
    """KVKK/GDPR erasure: the saved cards are deleted at PayTR first (outside any transaction),
    then the personal data in one transaction; refused while money could still move."""
    user, data = await current_user(request), await form(request)
    company_id = request.path_params["company_id"]
    try:  # a refusal first: the form is not even offered while money can move
        await run(request, data_requests.check, company_id)
    except LookupError:
        raise HTTPException(404, _("No customer with that number.")) from None
    except data_requests.DataRequestError as exc:
        return await _company_page(request, {"data_erase": {"form": str(exc)}}, 409, {"data_erase": data})
    errors = {}
    if data.get("confirm") != "yes":
        errors["confirm"] = _("Tick the box to confirm: an erasure cannot be undone.")
    try:
        audit.check_reason(data.get("reason"))
    except FormError as exc:
        errors.update(exc.errors)
    if errors:
        return await _company_page(request, {"data_erase": errors}, 422, {"data_erase": data})
    try:
        company = await run(request, data_requests.check, company_id)
        try:
            deleted = await data_requests.delete_cards_at_paytr(request.app.state.paytr, company["paytr_utoken"])
        except PaytrError:
            log.warning("erasing company %s: PayTR's saved cards could not be deleted", company_id, exc_info=True)
            raise data_requests.DataRequestError(_(
                "PayTR did not delete the customer's saved cards, so nothing was erased. Try again in a few "
                "minutes.")) from None
        done = await run(request, data_requests.erase, now(request), user, company_id, reason=data["reason"],
                         ip=ip(request), cards_deleted_at_paytr=deleted)
    except LookupError:
        raise HTTPException(404, _("No customer with that number.")) from None
    except data_requests.DataRequestError as exc:
        return await _company_page(request, {"data_erase": {"form": str(exc)}}, 409, {"data_erase": data})
    flash(request, ngettext("The customer's personal data was erased (%(num)d person removed). Invoices and "
                            "credit notes are kept as issued.",
                            "The customer's personal data was erased (%(num)d people removed). Invoices and "
                            "credit notes are kept as issued.", done["users"]))
    return redirect(request, f"/admin/companies/{company_id}")


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
    Route("/admin/companies/{company_id:int}/grant-days", grant_days, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/plan/now", change_plan_now, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/plan/later", schedule_plan, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/cancel/now", cancel_now, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/cancel/later", cancel_at_period_end, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/resume", resume, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/emails/{outbox_id:int}/resend", resend_email, methods=["POST"]),
    Route("/admin/payments/{payment_id:int}/refund", refund_page),
    Route("/admin/payments/{payment_id:int}/refund", make_refund, methods=["POST"]),
    Route("/admin/refunds/{refund_id:int}/settle", settle_refund, methods=["POST"]),
    Route("/admin/anomalies/{anomaly_id:int}/resolve", resolve_anomaly, methods=["POST"]),
    Route("/admin/clock", test_clock, methods=["GET", "POST"]),
    Route("/admin/companies/{company_id:int}/data/export", export_data, methods=["POST"]),
    Route("/admin/companies/{company_id:int}/data/erase", erase_data, methods=["POST"]),
]
