"""HTML to PDF with WeasyPrint, cached by content.

An issued invoice or credit note never changes, so the same HTML always makes the same PDF:
the cache key is the SHA-256 of the HTML (which carries the language and every figure), and a
second download reads the file. Rendering takes tens of milliseconds of CPU: callers run it on
a worker thread, never on the event loop, and never inside a database transaction.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from billing.settings import Settings


def cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "documents"


def render(html: str, base_url: str | None = None) -> bytes:
    """The PDF of `html` (A4 and fonts come from the document's own @page and CSS)."""
    from weasyprint import HTML  # imported when first needed: it loads Pango, a few hundred ms

    return HTML(string=html, base_url=base_url).write_pdf()


def cached(settings: Settings, html: str, base_url: str | None = None) -> bytes:
    """`render(html)`, kept in data/documents/ under the HTML's hash."""
    key = hashlib.sha256(html.encode()).hexdigest()
    directory = cache_dir(settings)
    path = directory / f"{key}.pdf"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    pdf = render(html, base_url)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written aside and renamed: a reader never sees half a file, two writers never clash.
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".part")
    with os.fdopen(handle, "wb") as out:
        out.write(pdf)
    os.replace(temporary, path)
    return pdf
