"""An invoice's PDF, in a reader's language: the page's own template on an A4 sheet.

`invoice_pdf(db, settings, number, locale)` is all a caller needs: the invoice download, the
receipt email's attachment (rendered by the mail sender, never in a payment's transaction)
and the month's ZIP. It reads the invoice, renders `billing/invoice_pdf.html` (which includes
the same `billing/_invoice_document.html` as the page) and turns it into a PDF through
`billing.documents.pdf.cached`: an issued invoice never changes, so the second download of the
same invoice in the same language is a file read. It does CPU work for tens of milliseconds:
call it on a worker thread, never on the event loop or inside a write transaction.

A credit note's PDF mirrors this module: its own lookup, template and `filename`.
"""

from __future__ import annotations

import base64
import functools
import mimetypes

import jinja2
from sqlite_utils import Database

from billing import i18n, invoices
from billing.documents import pdf
from billing.settings import Settings
from billing.web.templating import TEMPLATES_DIR, register_filters

TEMPLATE = "billing/invoice_pdf.html"


@functools.cache
def environment() -> jinja2.Environment:
    """Set up like the pages' environment (billing/web/templating.py), so the shared partial
    renders the same here as on the page, without a request."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    register_filters(env)
    return env


def filename(number: str) -> str:
    return f"{number}.pdf"


def logo_data_url(settings: Settings) -> str | None:
    """The seller's logo inlined as a data: URL. Inlined, not linked, so the HTML (the cache
    key) changes when the image does: a new logo never serves a stale cached PDF."""
    if settings.seller_logo is None:
        return None
    kind = mimetypes.guess_type(settings.seller_logo.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(settings.seller_logo.read_bytes()).decode()}"


def html(settings: Settings, invoice: dict, locale: str | None) -> str:
    """The document's HTML in `locale` (DEFAULT_LOCALE when none)."""
    locale = i18n.normalize(locale) or settings.default_locale
    with i18n.using(locale):
        return environment().get_template(TEMPLATE).render(
            invoice=invoice, locale=locale, tz=settings.timezone, logo=logo_data_url(settings))


def invoice_pdf(db: Database, settings: Settings, number: str, locale: str | None,
                company_id: int | None = None) -> bytes | None:
    """The PDF of invoice `number` in `locale`, or None when there is no such invoice (or, with
    `company_id`, when it belongs to another company: the caller answers 404 either way)."""
    invoice = invoices.document(db, number, company_id)
    if invoice is None:
        return None
    return pdf.cached(settings, html(settings, invoice, locale))
