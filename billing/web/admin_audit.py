"""The audit log for staff: /admin/audit (filter, page by id) and its CSV export.

Entries are read newest first and paged by id (keyset: `before=<id>`), so page 500 costs what
page 1 does; each filter rides an index of m018 (staff, action, company, created_at). The CSV
holds every row the filters match, written to a temporary file on a worker thread and streamed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from billing import clock, i18n, money, plans, staff_actions, subscriptions
from billing.db import rows
from billing.i18n import gettext as _, pgettext, search_fold
from billing.web.common import in_thread, run, settings, requires
from billing.web.templating import render

PAGE = 50
EXPORT_MAX = 200_000


class Filters:
    """The page's filters, read from the query string; bad values are dropped with a message."""

    def __init__(self, params, tz):
        self.errors: dict[str, str] = {}
        self.staff = params.get("staff", "").strip()[:20]
        self.action = params.get("action", "").strip()[:80]
        self.customer = params.get("customer", "").strip()[:100]
        self.date_from, self.date_to = self._date(params, "from"), self._date(params, "to")
        self.tz = tz
        try:
            self.before = int(params.get("before") or 0)
        except ValueError:
            self.before = 0
        if self.staff and not self.staff.isdigit():
            self.staff = ""

    def _date(self, params, name) -> date | None:
        raw = params.get(name, "").strip()
        if not raw:
            return None
        try:
            return date.fromisoformat(raw[:10])
        except ValueError:
            self.errors[name] = _("Enter a date like 2026-11-27.")
            return None

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.staff:
            clauses.append("a.staff_id = ?")
            params.append(int(self.staff))
        if self.action:
            clauses.append("a.action = ?")
            params.append(self.action)
        if self.customer:
            number = self.customer.removeprefix("#").removeprefix("cus_")
            if number.isdigit():
                clauses.append("a.company_id = ?")
                params.append(int(number))
            else:
                clauses.append("a.company_id IN (SELECT id FROM companies WHERE fold(name) LIKE ?)")
                params.append(f"%{search_fold(self.customer)}%")
        # Dates are the staff's days, in the operator's time zone.
        if self.date_from:
            clauses.append("a.created_at >= ?")
            params.append(clock.iso(datetime.combine(self.date_from, time(), self.tz)))
        if self.date_to:
            clauses.append("a.created_at < ?")
            params.append(clock.iso(datetime.combine(self.date_to + timedelta(days=1), time(), self.tz)))
        return (" AND ".join(clauses) or "1"), params

    def query(self, before: int | None = None) -> dict:
        """The filters as query parameters (for links: the next page, the CSV)."""
        found = {"staff": self.staff, "action": self.action, "customer": self.customer,
                 "from": self.date_from.isoformat() if self.date_from else "",
                 "to": self.date_to.isoformat() if self.date_to else ""}
        if before:
            found["before"] = str(before)
        return {k: v for k, v in found.items() if v}


_SELECT = """SELECT a.*, c.name AS company_name FROM audit_log a LEFT JOIN companies c ON c.id = a.company_id"""


def entries(db, filters: Filters, limit: int = PAGE) -> tuple[list[dict], int | None]:
    """One page, newest first, and the id to continue before (None on the last page)."""
    where, params = filters.where()
    if filters.before:
        where += " AND a.id < ?"
        params.append(filters.before)
    found = rows(db, f"{_SELECT} WHERE {where} ORDER BY a.id DESC LIMIT ?", [*params, limit + 1])
    more = len(found) > limit
    found = found[:limit]
    for entry in found:
        entry["before"], entry["after"] = json.loads(entry["before"] or "{}"), json.loads(entry["after"] or "{}")
    return found, (found[-1]["id"] if more and found else None)


def choices(db) -> dict:
    """Who and what the filters offer: the staff, and every action the log holds (an index walk)."""
    actions = [r["action"] for r in rows(db, "SELECT DISTINCT action FROM audit_log ORDER BY action")]
    for known in staff_actions.ACTION_LABELS:
        if known not in actions:
            actions.append(known)
    return {"staff": rows(db, "SELECT id, name, email FROM users WHERE role = 'staff' ORDER BY email"),
            "actions": sorted(actions, key=staff_actions.action_label)}


# --- how an entry reads -----------------------------------------------------------------------


def _value(key: str, value, currency: str | None, tz, catalog: dict) -> str:
    if value is None or value == "":
        return "—"
    if key in staff_actions.MONEY_FIELDS and isinstance(value, int) and currency:
        return money.format(value, currency)
    if key in staff_actions.DATE_FIELDS and isinstance(value, str):
        try:
            return i18n.datetime_text(clock.parse(value).astimezone(tz))
        except ValueError:
            return value
    if key in ("plan", "scheduled_plan") and value in catalog:
        return catalog[value].name
    if key == "status" and value in subscriptions.STATUS_LABELS:
        return str(subscriptions.STATUS_LABELS[value])
    if isinstance(value, bool):
        return pgettext("answer", "Yes") if value else pgettext("answer", "No")
    return str(value)


def shown(entry: dict, tz, catalog: dict) -> dict:
    """The entry with `label` (the action in words) and `changes` [{what, before, after}] (None: no
    such side), in the reader's language."""
    before, after = entry["before"], entry["after"]
    currency = after.get("currency") or before.get("currency")
    changes = []
    for key in dict.fromkeys([*before, *after]):
        if key == "currency":
            continue
        changes.append({"what": str(staff_actions.FIELD_LABELS.get(key, key)),
                        "before": _value(key, before[key], before.get("currency") or currency, tz, catalog)
                        if key in before else None,
                        "after": _value(key, after[key], currency, tz, catalog) if key in after else None})
    return {**entry, "label": staff_actions.action_label(entry["action"]), "changes": changes}


def described(db, found: list[dict], tz) -> list[dict]:
    catalog = {p.code: p for p in plans.all_plans(db, hidden=True, archived=True)}
    return [shown(entry, tz, catalog) for entry in found]


# --- pages --------------------------------------------------------------------------------------


@requires("audit.read")
async def index(request: Request):
    tz = settings(request).tz
    filters = Filters(request.query_params, tz)

    def read(db):
        found, next_before = entries(db, filters)
        return described(db, found, tz), next_before, choices(db)

    found, next_before, offered = await run(request, read)
    return render(request, "admin/audit.html", {
        "entries": found, "filters": filters, "choices": offered, "action_label": staff_actions.action_label,
        "next_url": f"/admin/audit?{urlencode(filters.query(next_before))}" if next_before else None,
        "first_url": f"/admin/audit?{urlencode(filters.query())}" if filters.before else None,
        "csv_url": f"/admin/audit.csv?{urlencode(filters.query())}",
    }, status=422 if filters.errors else 200, fragment="admin/_audit_entries.html")


CSV_COLUMNS = ("id", "created_at", "staff_email", "action", "action_label", "company_id", "company_name", "target",
               "before", "after", "reason", "ip")


def _safe(value) -> str:
    """A cell a spreadsheet shows as text: a leading = + - @ would make it a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(db, path: str, filters: Filters) -> int:
    where, params = filters.where()
    count = 0
    with open(path, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        cursor = db.conn.execute(f"{_SELECT} WHERE {where} ORDER BY a.id DESC LIMIT ?", [*params, EXPORT_MAX])
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            writer.writerow([_safe(v) for v in (
                row["id"], row["created_at"], row["staff_email"], row["action"],
                staff_actions.action_label(row["action"]), row["company_id"], row["company_name"], row["target"],
                row["before"], row["after"], row["reason"], row["ip"])])
            count += 1
    return count


@requires("export")  # staff who may read the log (everyone) and take data out of the console
async def export_csv(request: Request):
    filters = Filters(request.query_params, settings(request).tz)
    handle, path = tempfile.mkstemp(prefix="audit-", suffix=".csv")
    os.close(handle)
    try:
        await run(request, write_csv, path, filters)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return FileResponse(path, media_type="text/csv; charset=utf-8", filename="audit-log.csv",
                        background=BackgroundTask(in_thread, os.unlink, path))


routes = [
    Route("/admin/audit", index),
    Route("/admin/audit.csv", export_csv),
]
