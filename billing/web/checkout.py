"""Subscribing and paying: the checkout with PayTR's iframe, the result pages and invoices.
PayTR's callback itself is handled in web/callback.py."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import logging

from billing import accounts, clock, credit_notes, i18n, invoices, payments, plans
from billing.documents import invoice_pdf as invoice_documents
from billing.i18n import gettext as _
from billing.payments import CheckoutError
from billing.paytr import protocol
from billing.paytr.client import PaytrRefused, PaytrUnavailable
from billing.web.common import (current_user, flash, form, ip, login_redirect, login_required, now, owner_required,
                                redirect, run, settings)
from billing.web import wallet
from billing.web.templating import render

log = logging.getLogger("billing.web")

def paytr_url(request: Request, path: str) -> str:
    """An address on PayTR's site, as the customer's browser reaches it."""
    s = settings(request)
    base = "/paytr-emulator" if s.uses_emulator else s.paytr_api_base
    return f"{base}{path}"


@owner_required
async def subscribe(request: Request):
    plan = await run(request, plans.offered, request.path_params["plan"])
    user = await current_user(request)
    data = await form(request)
    # Saving the card takes PayTR's Direct API form instead of the iframe (the operator must enable it).
    method = "direct" if data.get("save_card") == "1" and settings(request).paytr_recurring else "iframe"
    if unchanged := await still_open(request, data.get("current", ""), method, plan.code):
        return unchanged
    try:
        checkout = await run(request, payments.start_checkout, now(request), settings(request), user=user,
                             plan_code=plan.code, ip=ip(request), method=method)
    except CheckoutError as exc:
        flash(request, str(exc), "error")
        return redirect(request, "/billing/")
    return await open_checkout(request, checkout, plan)


def is_open(request: Request, payment: dict) -> bool:
    """Can this payment still be paid on its checkout page?"""
    expired = (now(request) - clock.parse(payment["created_at"])).total_seconds() > payments.TOKEN_MINUTES * 60
    return payment["status"] == payments.PENDING and not expired and (
        payment["method"] == "direct" or bool(payment["paytr_token"]))


async def still_open(request: Request, oid: str, method: str, plan_code: str) -> Response | None:
    """The checkout's "how do you want to pay" form names the checkout it was on. Sent again with
    the same choice (without JavaScript the customer presses its button), that checkout is still the
    right one: back to it, with no new order at PayTR. A changed choice makes a new checkout, which
    replaces this one (payments.start_checkout), so there is never more than one to pay."""
    if not oid:
        return None
    user = await current_user(request)
    payment = await run(request, payments.for_company_by_oid, user["company_id"], oid)
    if payment is None or payment["method"] != method or payment["plan"] != plan_code or not is_open(request, payment):
        return None
    return redirect(request, f"/billing/checkout/{oid}")


async def open_checkout(request: Request, checkout: payments.Checkout, plan: plans.Plan):
    """Ask PayTR for the iframe token (the Direct API form needs none) and show the checkout."""
    oid = checkout.payment["merchant_oid"]
    if checkout.payment["method"] == "direct":
        return redirect(request, f"/billing/checkout/{oid}")
    try:
        token = await request.app.state.paytr.get_token(checkout.request)
    except PaytrRefused as exc:
        # PayTR's reason (Turkish, about our store's setup) is for staff: the payment's record and
        # the timeline keep it; the customer gets our own sentence in their language.
        log.warning("PayTR refused to open the payment page for %s: %s", oid, exc.reason)
        await run(request, payments.abandon, now(request), oid, f"PayTR refused: {exc.reason}")
        return render(request, "billing/checkout_error.html", {
            "plan": plan, "title": _("PayTR could not start your payment"),
            "message": str(payments.CHECKOUT_REFUSED)}, status=502)
    except PaytrUnavailable as exc:
        await run(request, payments.abandon, now(request), oid, str(exc))
        return render(request, "billing/checkout_error.html", {
            "plan": plan, "title": _("PayTR is not answering right now"),
            "message": _("We could not reach the payment page in time. Nothing was charged. "
                         "Please try again in a minute.")}, status=504)
    await run(request, payments.token_received, now(request), oid, token)
    return redirect(request, f"/billing/checkout/{oid}")


async def _own_payment(request: Request, oid: str) -> dict:
    user = await current_user(request)
    payment = await run(request, payments.for_company_by_oid, user["company_id"], oid or "")
    if payment is None:
        raise HTTPException(404, _("We couldn't find that payment."))
    return payment


@login_required
async def checkout_page(request: Request):
    payment = await _own_payment(request, request.path_params["oid"])
    if payment["status"] == payments.SUCCEEDED:
        return redirect(request, f"/billing/payment/success?oid={payment['merchant_oid']}")
    s = settings(request)
    expired = (now(request) - clock.parse(payment["created_at"])).total_seconds() > payments.TOKEN_MINUTES * 60
    payable = is_open(request, payment)
    company = await run(request, accounts.company, payment["company_id"])
    context = {"payment": payment, "plan": payment["plan_obj"], "open": payable, "expired": expired,
               "recurring_enabled": s.paytr_recurring, "has_saved_cards": bool(company.get("paytr_utoken")),
               "failure_reason": payments.failure_reason(payment), "line_text": invoices.line_text}
    if payable and payment["method"] == "direct":
        context["direct_action"] = paytr_url(request, protocol.API_PATHS["direct"])
        context["direct_fields"] = await run(request, payments.direct_form, s, payment)
    elif payable:
        context["iframe_src"] = paytr_url(request, protocol.API_PATHS["iframe"] + payment["paytr_token"])
        # PayTR's resizer, from PayTR's own host (the emulator in development), sizes the iframe.
        context["resizer_src"] = paytr_url(request, protocol.RESIZER_SCRIPT_PATH)
    return render(request, "billing/checkout.html", context)


@login_required
async def payment_result(request: Request):
    payment = await _own_payment(request, request.query_params.get("oid", ""))
    came_back = "success" if request.url.path.endswith("/success") else "fail"
    context = {"payment": payment, "plan": payment["plan_obj"], "came_back": came_back,
               "status_url": f"/billing/payment/{payment['merchant_oid']}/status?from={came_back}",
               "saved_card": await wallet.after_saving_payment(request, payment),
               "failure_reason": payments.failure_reason(payment)}
    return render(request, "billing/payment_result.html", context, fragment="billing/_payment_status.html")


@login_required
async def payment_status(request: Request):
    payment = await _own_payment(request, request.path_params["oid"])
    came_back = "fail" if request.query_params.get("from") == "fail" else "success"
    return render(request, "billing/_payment_status.html", {
        "payment": payment, "plan": payment["plan_obj"], "came_back": came_back,
        "status_url": f"/billing/payment/{payment['merchant_oid']}/status?from={came_back}",
        "saved_card": await wallet.after_saving_payment(request, payment),
        "failure_reason": payments.failure_reason(payment)})


@login_required
async def invoice_page(request: Request):
    user = await current_user(request)
    invoice = await run(request, invoices.document, request.path_params["number"], user["company_id"])
    if invoice is None:
        raise HTTPException(404, _("We couldn't find that invoice."))
    # Shown on the page only: the invoice itself (and its PDF) never changes after a refund.
    notes = await run(request, credit_notes.for_invoice, invoice["id"])
    return render(request, "billing/invoice.html", {"invoice": invoice, "line_text": invoices.line_text,
                                                    "credit_notes": notes})


async def invoice_pdf(request: Request):
    """The invoice as a PDF in the reader's language, for its company's members and for staff;
    anyone else gets the same 404 as for a number that does not exist. Rendered (or read from the
    cache) on a worker thread with the database read, never on the event loop."""
    user = await current_user(request)
    if user is None:
        return login_redirect(request)
    if user["role"] not in ("owner", "member", "staff"):
        raise HTTPException(404, _("We couldn't find that invoice."))
    company_id = None if user["role"] == "staff" else user["company_id"]
    number = request.path_params["number"]
    locale = request.scope.get("billing.locale") or i18n.current()
    document = await run(request, invoice_documents.invoice_pdf, settings(request), number, locale, company_id)
    if document is None:
        raise HTTPException(404, _("We couldn't find that invoice."))
    name = invoice_documents.filename(number)
    return Response(document, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}"',
        # A member's invoice: never kept by a shared cache; the browser may keep it briefly.
        "Cache-Control": "private, max-age=300"})


routes = [
    Route("/billing/subscribe/{plan}", subscribe, methods=["POST"]),
    Route("/billing/checkout/{oid}", checkout_page),
    Route("/billing/payment/success", payment_result),
    Route("/billing/payment/fail", payment_result),
    Route("/billing/payment/{oid}/status", payment_status),
    # Before the page's route, whose {number} would also match "INV-2026-000001.pdf".
    Route("/billing/invoices/{number}.pdf", invoice_pdf),
    Route("/billing/invoices/{number}", invoice_page),
]
