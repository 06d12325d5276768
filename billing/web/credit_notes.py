"""Credit notes: the page and its PDF, for the members of the company it was issued to and for
staff; anyone else gets 404, as if it did not exist."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing import credit_notes
from billing.documents.credit_note_pdf import credit_note_pdf, filename
from billing.i18n import gettext as _
from billing.web.common import current_user, locale, login_redirect, run, settings
from billing.web.templating import render


async def _readable(request: Request, number: str) -> tuple[dict, dict]:
    """(the credit note, the reader), or the login page / 404."""
    user = await current_user(request)
    if user is None:
        raise _LoginFirst
    company_id = None if user["role"] == "staff" else user["company_id"]
    note = await run(request, credit_notes.by_number, number, company_id)
    if note is None:
        raise HTTPException(404, _("We couldn't find that credit note."))
    return note, user


class _LoginFirst(Exception):
    pass


async def page(request: Request):
    try:
        note, user = await _readable(request, request.path_params["number"])
    except _LoginFirst:
        return login_redirect(request)
    staff = user["role"] == "staff"
    return render(request, "billing/credit_note.html", {
        "note": note,
        # Staff read the company's page; customers their invoice, which lists this note.
        "back_url": f"/admin/companies/{note['company_id']}" if staff else f"/billing/invoices/{note['invoice_number']}",
        "back_label": _("Customer") if staff else _("Invoice %(number)s", number=note["invoice_number"]),
        "invoice_url": None if staff else f"/billing/invoices/{note['invoice_number']}"})


async def download(request: Request):
    number = request.path_params["number"]
    try:
        await _readable(request, number)
    except _LoginFirst:
        return login_redirect(request)
    # Rendered on a worker thread (run), outside any transaction, in the reader's language.
    body = await run(request, credit_note_pdf, settings(request), number, locale(request))
    if body is None:
        raise HTTPException(404, _("We couldn't find that credit note."))
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{filename(number)}"', "Cache-Control": "private, max-age=3600"})


routes = [
    Route("/billing/credit-notes/{number}.pdf", download),
    Route("/billing/credit-notes/{number}", page),
]
