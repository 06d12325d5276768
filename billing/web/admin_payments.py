"""The payments report for staff: /admin/payments (every role reads it; the CSV needs "export").

The page and the CSV read billing.payments_report. The CSV is streamed: each chunk of rows is
its own short read on a worker thread (with that thread's connection), continuing after the
previous chunk's last (created_at, id), so memory stays flat and no read holds a snapshot open
for the whole download.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from billing import i18n, payments_report, plans
from billing.web.common import now, run, settings, requires
from billing.web.templating import render


def _catalog(db):
    return plans.all_plans(db, hidden=True, archived=True)


async def _query(request: Request, catalog):
    return payments_report.parse(request.query_params, now(request), settings(request).tz,
                                 {plan.code for plan in catalog})


@requires("console.read")
async def report(request: Request):
    catalog = await run(request, _catalog)
    context = {"catalog": catalog, "kinds": payments_report.KINDS, "methods": payments_report.METHODS,
               "statuses": payments_report.STATUSES, "currencies": payments_report.CURRENCIES,
               "status_labels": payments_report.payments.STATUS_LABELS, "timezone": settings(request).timezone,
               "plan_names": {plan.code: plan for plan in catalog}}
    try:
        query = await _query(request, catalog)
    except payments_report.ReportError as exc:
        first, last = payments_report.this_month(now(request), settings(request).tz)
        context.update(error=str(exc), query=payments_report.Query(start=first, end=last), payments=[], totals={},
                       values=request.query_params, next_url=None, first_url=None)
        return render(request, "admin/payments.html", context, status=422, fragment="admin/_payments.html")
    context.update(await run(request, payments_report.report, query, settings(request).tz))
    context.update(error=None, values=request.query_params, csv_url=query.url("/admin/payments.csv", after=""))
    return render(request, "admin/payments.html", context, fragment="admin/_payments.html")


@requires("export")
async def download(request: Request):
    catalog = await run(request, _catalog)
    try:
        query = await _query(request, catalog)
    except payments_report.ReportError as exc:
        raise HTTPException(422, str(exc)) from None
    tz, locale = settings(request).tz, i18n.current()

    async def lines():
        with i18n.using(locale):  # the stream runs after the handler returned: keep the reader's language
            yield "\ufeff" + payments_report.csv_header(locale)  # the BOM: Excel reads the file as UTF-8
        after = ""
        while after is not None:
            def chunk(db, after=after):
                with i18n.using(locale):
                    return payments_report.csv_chunk(db, query, tz, locale, after)

            text, after = await run(request, chunk)
            if text:
                yield text

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{payments_report.csv_filename(query)}"',
        "Cache-Control": "no-store"})


routes = [
    Route("/admin/payments", report),
    Route("/admin/payments.csv", download),
]
