"""The payments report: every payment made in a date range, filterable, with totals and a CSV.

The range is whole days in the operator's time zone, read on `payments_created` (created_at, id);
the totals per currency and status read `payments_report`, which holds every column they need, so
a month of 50,000 payments is summed without touching a row. Pages continue after the last row's
(created_at, id), never by OFFSET; the CSV walks the same key in chunks, each its own short read.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import clock, money, payments
from billing.db import rows
from billing.i18n import gettext as _, lazy_gettext

PAGE_SIZE = 50
CSV_CHUNK = 1000
STATUSES = tuple(payments.STATUS_LABELS)
KINDS = {"subscribe": lazy_gettext("New subscription"), "renewal": lazy_gettext("Renewal"),
         "upgrade": lazy_gettext("Upgrade")}
METHODS = {"iframe": lazy_gettext("PayTR payment page"), "direct": lazy_gettext("Card form"),
           "recurring": lazy_gettext("Saved card")}
CURRENCIES = ("TRY", "USD", "EUR")
_CURSOR = re.compile(r"(?P<at>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z)~(?P<id>\d{1,18})")


class ReportError(ValueError):
    """The report cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Query:
    start: date
    end: date  # inclusive
    status: str = ""
    kind: str = ""
    plan: str = ""
    currency: str = ""
    after: str = ""  # "<created_at>~<id>" of the last row shown

    def params(self, **changes) -> dict:
        values = replace(self, **changes)
        found = {"from": values.start.isoformat(), "to": values.end.isoformat(), "status": values.status,
                 "kind": values.kind, "plan": values.plan, "currency": values.currency, "after": values.after}
        return {name: value for name, value in found.items() if value}

    def url(self, path: str = "/admin/payments", **changes) -> str:
        return f"{path}?{urlencode(self.params(**changes))}"


def this_month(now: datetime, tz: ZoneInfo) -> tuple[date, date]:
    today = now.astimezone(tz).date()
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


def parse(params, now: datetime, tz: ZoneInfo, plan_codes: set[str]) -> Query:
    """The report's query string, checked; ReportError names what is wrong."""
    first, last = this_month(now, tz)
    try:
        start = date.fromisoformat(params.get("from") or first.isoformat())
        end = date.fromisoformat(params.get("to") or last.isoformat())
    except ValueError:
        raise ReportError(_("Enter dates as YYYY-MM-DD, for example %(example)s.", example=first.isoformat())) from None
    if end < start:
        raise ReportError(_("The end date is before the start date."))
    allowed = {"status": STATUSES, "kind": KINDS, "plan": plan_codes, "currency": CURRENCIES}
    values = {}
    for name, choices in allowed.items():
        value = (params.get(name) or "").strip()
        if value and value not in choices:
            raise ReportError(_("There is no such choice for this filter: “%(value)s”.", value=value[:40]))
        values[name] = value
    after = (params.get("after") or "")[:60]
    if after and not _CURSOR.fullmatch(after):
        raise ReportError(_("That page link is not valid; start again from the first page."))
    return Query(start=start, end=end, after=after, **values)


def bounds(query: Query, tz: ZoneInfo) -> tuple[str, str]:
    """[start of the first day, start of the day after the last) in the operator's zone, as stored (UTC)."""
    begin = datetime.combine(query.start, time(0), tzinfo=tz)
    finish = datetime.combine(query.end + timedelta(days=1), time(0), tzinfo=tz)
    return clock.iso(begin), clock.iso(finish)


def _where(query: Query, tz: ZoneInfo) -> tuple[list[str], list]:
    low, high = bounds(query, tz)
    where, params = ["p.created_at >= ?", "p.created_at < ?"], [low, high]
    for column in ("status", "kind", "plan", "currency"):
        if getattr(query, column):
            where.append(f"p.{column} = ?")
            params.append(getattr(query, column))
    return where, params


_COLUMNS = """p.id, p.created_at, p.company_id, c.name AS company_name, p.kind, p.method, p.plan, p.amount,
              p.currency, p.status, p.failed_reason_code, p.merchant_oid, i.number AS invoice_number,
              (SELECT coalesce(sum(r.amount), 0) FROM refunds r
               WHERE r.payment_id = p.id AND r.status = 'succeeded') AS refunded,
              (SELECT count(*) FROM refunds r
               WHERE r.payment_id = p.id AND r.status IN ('pending', 'unknown')) AS refunds_open"""


def select(query: Query, tz: ZoneInfo, *, limit: int, ascending: bool = False) -> tuple[str, list]:
    """One page of rows (and one more, to know whether another follows), newest first; the CSV
    reads oldest first."""
    where, params = _where(query, tz)
    if query.after:
        found = _CURSOR.fullmatch(query.after)
        where.append(f"(p.created_at, p.id) {'>' if ascending else '<'} (?, ?)")
        params += [found["at"], int(found["id"])]
    order = "ASC" if ascending else "DESC"
    # INDEXED BY: the range and the order both come from (created_at, id); a filter is checked row
    # by row along it. Without it SQLite may take the covering totals index and sort the month.
    sql = f"""SELECT {_COLUMNS}
              FROM payments p INDEXED BY payments_created JOIN companies c ON c.id = p.company_id
              LEFT JOIN invoices i ON i.payment_id = p.id
              WHERE {" AND ".join(where)}
              ORDER BY p.created_at {order}, p.id {order} LIMIT ?"""
    return sql, [*params, limit + 1]


def totals_sql(query: Query, tz: ZoneInfo) -> tuple[str, list]:
    where, params = _where(query, tz)
    return (f"""SELECT p.currency, p.status, count(*) AS count, sum(p.amount) AS amount
                FROM payments p INDEXED BY payments_report WHERE {" AND ".join(where)}
                GROUP BY p.currency, p.status ORDER BY p.currency, p.status""", params)


def _cursor_of(row: dict) -> str:
    return f"{row['created_at']}~{row['id']}"


def describe(row: dict) -> dict:
    """What the page and the CSV say about a payment, in the reader's language."""
    refund = ""
    if row["refunded"] and row["refunded"] >= row["amount"]:
        refund = _("Fully refunded")
    elif row["refunded"]:
        refund = _("%(amount)s refunded", amount=money.format(row["refunded"], row["currency"]))
    if row["refunds_open"]:
        refund = f"{refund} · {_('Refund in progress')}" if refund else _("Refund in progress")
    return {**row, "kind_label": str(KINDS.get(row["kind"], row["kind"])),
            "method_label": str(METHODS.get(row["method"], row["method"])),
            "status_label": str(payments.STATUS_LABELS.get(row["status"], row["status"])),
            "reason": payments.failure_reason(row["failed_reason_code"]) if row["status"] == payments.FAILED else "",
            "refund": refund}


def report(db: Database, query: Query, tz: ZoneInfo, limit: int | None = None) -> dict:
    limit = limit or PAGE_SIZE
    sql, params = select(query, tz, limit=limit)
    found = rows(db, sql, params)
    more = len(found) > limit
    found = [describe(row) for row in found[:limit]]
    sql, params = totals_sql(query, tz)
    totals: dict[str, list[dict]] = {}
    for row in rows(db, sql, params):
        totals.setdefault(row["currency"], []).append(
            {**row, "label": str(payments.STATUS_LABELS.get(row["status"], row["status"]))})
    return {"payments": found, "totals": totals, "query": query,
            "next_url": query.url(after=_cursor_of(found[-1])) if more else None,
            "first_url": query.url(after="") if query.after else None}


# --- CSV --------------------------------------------------------------------------------------


def csv_dialect(locale: str) -> tuple[str, str]:
    """(separator, decimal mark) Excel expects in the reader's language: Turkish Excel separates
    with `;` because its decimal mark is the comma."""
    return (";", ",") if locale == "tr" else (",", ".")


def csv_header(locale: str) -> str:
    separator, _mark = csv_dialect(locale)
    return _csv_line([_("Date (UTC)"), _("Customer"), _("Customer number"), _("Kind"), _("Method"), _("Plan"),
                      _("Amount"), _("Currency"), _("Status"), _("Failure reason"), _("Refunded"), "merchant_oid",
                      _("Invoice")], separator)


def csv_chunk(db: Database, query: Query, tz: ZoneInfo, locale: str, after: str = "",
              size: int = CSV_CHUNK) -> tuple[str, str | None]:
    """CSV lines of up to `size` payments after `after`, oldest first; and the cursor to go on from
    (None at the end)."""
    separator, mark = csv_dialect(locale)
    sql, params = select(replace(query, after=after), tz, limit=size, ascending=True)
    found = rows(db, sql, params)
    more = len(found) > size
    found = found[:size]

    def amount(minor: int) -> str:
        return money.decimal_string(minor).replace(".", mark)

    lines = []
    for row in map(describe, found):
        lines.append(_csv_line([row["created_at"], text_cell(row["company_name"]), row["company_id"], row["kind_label"],
                                row["method_label"], row["plan"], amount(row["amount"]), row["currency"],
                                row["status_label"], row["reason"], amount(row["refunded"]), row["merchant_oid"],
                                row["invoice_number"] or ""], separator))
    return "".join(lines), (_cursor_of(found[-1]) if more else None)


def text_cell(value: str) -> str:
    """A name a customer typed, as a spreadsheet cell that is never run as a formula
    ("=HYPERLINK(…)" stays text): a leading = + - @ or control character gets a quote."""
    return f"'{value}" if value and value[0] in "=+-@\t\r" else value


def _csv_line(values: list, separator: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=separator, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def csv_filename(query: Query) -> str:
    return f"payments-{query.start.isoformat()}-{query.end.isoformat()}.csv"
