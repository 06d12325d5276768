"""A credit note's PDF: the page's own template (templates/billing/credit_note.html) in the PDF
frame (templates/documents/_pdf.html), rendered by WeasyPrint and cached by content.

Call it on a worker thread (it reads the database and renders for tens of milliseconds), never
inside a transaction. It does not check who asks: the route and the mail sender do.
"""

from __future__ import annotations

import functools

import jinja2
from sqlite_utils import Database

from billing import credit_notes, i18n
from billing.documents import pdf
from billing.settings import Settings
from billing.web.templating import TEMPLATES_DIR, register_filters

LAYOUT = "documents/_pdf.html"


@functools.cache
def environment() -> jinja2.Environment:
    """Like the pages' environment (same filters, same lenient undefined), without a request."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    register_filters(env)
    return env


def html(settings: Settings, note: dict, locale: str | None) -> str:
    locale = i18n.normalize(locale) or settings.default_locale
    with i18n.using(locale):
        return environment().get_template("billing/credit_note.html").render(
            note=note, layout=LAYOUT, locale=locale, tz=settings.timezone, app_name=settings.app_name)


def credit_note_pdf(db: Database, settings: Settings, number: str, locale: str | None) -> bytes | None:
    """The PDF of credit note `number` in `locale` (None: the default language); None if there is none."""
    note = credit_notes.by_number(db, number)
    if note is None:
        return None
    return pdf.cached(settings, html(settings, note, locale))


def filename(number: str) -> str:
    return f"{number}.pdf"
