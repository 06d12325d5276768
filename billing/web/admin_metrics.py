"""Revenue metrics for finance and admins: /admin/metrics (figures, charts drawn here as SVG,
each followed by its table) and a CSV of every chart's numbers. The figures come from
billing/revenue.py; this module only arranges them for the reader."""

from __future__ import annotations

import csv
import functools
import io
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from babel.dates import format_date
from babel.numbers import format_percent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing import i18n, money, revenue
from billing.i18n import gettext as _
from billing.web.common import now, requires, run, settings
from billing.web.templating import render

CSV_NAMES = ("movements", "mrr", "rates", "all")


# Babel formats a date or a percentage in 20–50 µs; the page shows each month three times and two
# years of months in three tables, so each value is formatted once per language.
@functools.lru_cache(maxsize=4096)
def _date(day: date, pattern: str, locale) -> str:
    return format_date(day, pattern, locale=locale)


@functools.lru_cache(maxsize=4096)
def _percent(rate: Fraction, locale) -> str:
    return format_percent(Decimal(rate.numerator) / Decimal(rate.denominator), "#,##0.0%", locale=locale)


def month_label(day: date) -> str:
    """'November 2026' / 'Kasım 2026'."""
    return _date(day, "LLLL y", i18n.current())


def short_month(day: date) -> str:
    """'Nov' / 'Kas', for a chart's axis."""
    return _date(day, "LLL", i18n.current())


def percent(rate: Fraction | None) -> str:
    """'40.0%' / '%40,0'; an empty month (nothing to divide by) is a dash."""
    if rate is None:
        return "—"
    return _percent(rate, i18n.current())


def percent_number(rate: Fraction | None) -> str:
    """For a CSV: '40.00' (per cent, two decimals, a point), or empty."""
    if rate is None:
        return ""
    value = Decimal(rate.numerator) * 100 / Decimal(rate.denominator)
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


# --- charts: geometry here, drawing in the template ------------------------------------------------

WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 104, 12, 14, 40
UP = (("new", "#17803d"), ("expansion", "#48bb78"), ("reactivation", "#9ae6b4"))
DOWN = (("contraction", "#f6ad55"), ("churned", "#b42318"))


def _axis_months(months: list[revenue.Month]) -> list[dict]:
    band = (WIDTH - LEFT - RIGHT) / len(months)
    # On a phone every other month is labelled (`odd` ones hidden by the page's style), newest included.
    return [{"x": LEFT + band * (i + .5), "label": short_month(m.first_day), "odd": (len(months) - 1 - i) % 2 == 1,
             "year": str(m.first_day.year) if i == 0 or m.first_day.month == 1 else ""}
            for i, m in enumerate(months)]


def movement_chart(months: list[revenue.Month], currency: str) -> dict:
    """Bars per month: new, expansion and reactivation stacked up from zero; contraction and
    churn stacked down."""
    ups = [sum(m.figures[name] for name, _ in UP) for m in months]
    downs = [sum(m.figures[name] for name, _ in DOWN) for m in months]
    top, bottom = max(ups, default=0), max(downs, default=0)
    plot = HEIGHT - TOP - BOTTOM
    span = (top + bottom) or 1
    zero = TOP + plot * (top / span if top + bottom else .5)
    scale = plot / span
    band = (WIDTH - LEFT - RIGHT) / len(months)
    bars = []
    for i, m in enumerate(months):
        x = LEFT + band * i + band * .2
        y = zero
        for name, colour in UP:
            h = m.figures[name] * scale
            if h > 0:
                y -= h
                bars.append({"x": x, "y": y, "w": band * .6, "h": h, "fill": colour})
        y = zero
        for name, colour in DOWN:
            h = m.figures[name] * scale
            if h > 0:
                bars.append({"x": x, "y": y, "w": band * .6, "h": h, "fill": colour})
                y += h
    ticks = [{"y": zero, "label": money.format(0, currency)}]
    if top:
        ticks.append({"y": TOP, "label": money.format(top, currency)})
    if bottom:
        ticks.append({"y": TOP + plot, "label": money.format(-bottom, currency)})
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "zero": zero, "bars": bars,
            "ticks": ticks, "months": _axis_months(months), "label_y": HEIGHT - BOTTOM + 16}


def line_chart(months: list[revenue.Month], values: list[int], label) -> dict:
    """One line over the months, from zero to the highest value."""
    plot = HEIGHT - TOP - BOTTOM
    highest = max(values, default=0) or 1
    axis = _axis_months(months)
    points = [{"x": a["x"], "y": TOP + plot * (1 - v / highest), "value": v} for a, v in zip(axis, values)]
    ticks = [{"y": TOP + plot, "label": label(0)}]
    if max(values, default=0):
        ticks.append({"y": TOP + plot / 2, "label": label(highest // 2)})
        ticks.append({"y": TOP, "label": label(highest)})
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "zero": TOP + plot,
            "points": points, "path": " ".join(f"{p['x']:.1f},{p['y']:.1f}" for p in points), "ticks": ticks,
            "months": axis, "label_y": HEIGHT - BOTTOM + 16}


# --- pages ------------------------------------------------------------------------------------------


def _chosen(report: revenue.Report, request: Request) -> str | None:
    wanted = (request.query_params.get("currency") or "").upper()
    if wanted and wanted not in report.currencies:
        raise HTTPException(404, _("There are no figures in %(currency)s.", currency=wanted[:3]))
    return wanted or (report.currencies[0] if report.currencies else None)


@requires("metrics")
async def page(request: Request):
    report = await run(request, revenue.report, now(request), settings(request))
    currency = _chosen(report, request)
    context = {"report": report, "currency": currency, "timezone": settings(request).timezone,
               "month_label": month_label, "percent": percent}
    if currency:
        months = report.months[currency]
        context.update(
            months=months, headline=report.headline(currency), current=months[-1],
            movements=movement_chart(months, currency), up=UP, down=DOWN,
            mrr_chart=line_chart(months, [m.mrr_end for m in months], lambda v: money.format(v, currency)),
            customers_chart=line_chart(months, [m.paying_end for m in months], i18n.number_text))
    return render(request, "admin/metrics.html", context)


def _rows(name: str, report: revenue.Report, currency: str | None) -> list[list]:
    currencies = report.currencies if currency is None else [currency]
    amount = money.decimal_string
    rows = []
    if name == "movements":
        rows.append([_("Month"), _("Currency"), _("New MRR"), _("Expansion MRR"), _("Reactivation MRR"),
                     _("Contraction MRR"), _("Churned MRR"), _("Net new MRR")])
        for c in currencies:
            rows += [[m.key, c, amount(m.new), amount(m.expansion), amount(m.reactivation), amount(m.contraction),
                      amount(m.churned), amount(m.net_new)] for m in report.months[c]]
    elif name == "mrr":
        rows.append([_("Month"), _("Currency"), _("MRR at the start"), _("MRR at the end"), _("ARR at the end"),
                     _("Paying customers at the start"), _("Paying customers at the end"), _("Trialing customers")])
        for c in currencies:
            rows += [[m.key, c, amount(m.mrr_start), amount(m.mrr_end), amount(12 * m.mrr_end), m.paying_start,
                      m.paying_end, m.trialing] for m in report.months[c]]
    elif name == "rates":
        rows.append([_("Month"), _("Currency"), _("Logo churn rate (%)"), _("Revenue churn rate (%)"),
                     _("Trial-to-paid conversion (%)"), _("Trials converted"), _("Trials ended"),
                     _("Dunning recovery rate (%)"), _("Past-due recovered"), _("Past-due ended"),
                     _("Failed payments"), _("Failed payment amount"), _("Refunds"), _("Refunded amount")])
        for c in currencies:
            rows += [[m.key, c, percent_number(m.logo_churn), percent_number(m.revenue_churn),
                      percent_number(m.conversion), m.trials_converted, m.trials_ended, percent_number(m.recovery),
                      m.dunning_recovered, m.dunning_ended, m.failed_count, amount(m.failed_amount), m.refund_count,
                      amount(m.refund_amount)] for m in report.months[c]]
    else:  # everything, one row per month and currency
        header = [_("Month"), _("Currency")]
        parts = [_rows(part, report, currency) for part in ("mrr", "movements", "rates")]
        for part in parts:
            header += part[0][2:]
        rows.append(header)
        for i in range(1, len(parts[0])):
            row = parts[0][i][:2]
            for part in parts:
                row += part[i][2:]
            rows.append(row)
    return rows


@requires("metrics")
async def download(request: Request):
    name = request.path_params["name"]
    if name not in CSV_NAMES:
        raise HTTPException(404, _("There is no such file: ask for movements.csv, mrr.csv, rates.csv or all.csv."))
    report = await run(request, revenue.report, now(request), settings(request))
    currency = _chosen(report, request) if request.query_params.get("currency") else None
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(_rows(name, report, currency))
    month = report.months[report.currencies[0]][-1].key if report.currencies else "none"
    filename = f"revenue-{name}{'-' + currency if currency else ''}-{month}.csv"
    # A byte-order mark: spreadsheet programs then read the Turkish letters of the headers as UTF-8.
    return Response("\ufeff" + buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


routes = [
    Route("/admin/metrics", page),
    Route("/admin/metrics/{name}.csv", download),
]
