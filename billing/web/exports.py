"""Staff download the accountant's month: /admin/exports.

The page shows what the month holds (counts, totals per currency) before anything is
downloaded. A download is written on a worker thread to a private temporary file (XLSX has to
be a finished file anyway, and one SQLite connection must stay on its thread), then streamed
from disk in chunks and deleted once sent: memory stays flat for any month.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from billing import i18n
from billing.documents import export
from billing.i18n import gettext as _
from billing.web.common import in_thread, now, run, settings, requires
from billing.web.templating import render

_FILENAME = re.compile(r"invoices-(\d{4}-\d{2})\.(csv|xlsx|zip)")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "zip": "application/zip"}


def _file_locale(request: Request) -> str:
    # The file's language is the accountant's, not necessarily the staff member's: Turkish unless asked.
    return i18n.normalize(request.query_params.get("lang")) or export.DEFAULT_LOCALE


@requires("export")
async def index(request: Request):
    month = request.query_params.get("month") or export.previous_month(settings(request), now(request))
    lang = _file_locale(request)
    try:
        export.parse_month(month)
    except export.ExportError as exc:
        return render(request, "admin/exports.html", {"month": month[:20], "lang": lang, "error": str(exc),
                                                      "summary": None}, status=422)
    summary = await run(request, export.summary, settings(request), month)
    return render(request, "admin/exports.html", {
        "month": month, "lang": lang, "error": None, "summary": summary, "timezone": settings(request).timezone,
        "month_label": _month_label(month),
        "files": {fmt: f"/admin/exports/{export.filename(month, fmt)}?lang={lang}" for fmt in export.FILE_FORMATS}})


def _month_label(month: str) -> str:
    """'2026-11' -> 'November 2026' / 'Kasım 2026', in the reader's language."""
    from datetime import date

    from babel.dates import format_date

    year, number = export.parse_month(month)
    return format_date(date(year, number, 1), "LLLL y", locale=i18n.current())


@requires("export")
async def download(request: Request):
    found = _FILENAME.fullmatch(request.path_params["filename"])
    if not found:
        raise HTTPException(404, _("There is no such export: ask for invoices-2026-12.csv or .xlsx."))
    month, fmt = found.groups()
    try:
        export.parse_month(month)
    except export.ExportError as exc:
        raise HTTPException(404, str(exc)) from None
    config, store = settings(request), request.app.state.store
    handle, path = tempfile.mkstemp(dir=config.data_dir, prefix=".export-", suffix=f".{fmt}")
    os.close(handle)

    def write():
        # On the worker thread, with that thread's own connection.
        export.write_file(path, store.db(), config, month, fmt, _file_locale(request))

    try:
        await in_thread(write)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return FileResponse(path, media_type=MEDIA_TYPES[fmt], filename=export.filename(month, fmt),
                        headers={"Cache-Control": "no-store"},  # buyers' tax ids and addresses
                        background=BackgroundTask(os.unlink, path))


routes = [
    Route("/admin/exports", index),
    Route("/admin/exports/{filename}", download),
]
