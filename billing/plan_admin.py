"""The operator edits the catalog: create, change, archive and delete plans, and carry a price
change to existing subscribers with notice.

Rules that keep money right:
- A plan's code, currency and interval never change once a subscription or a payment used it:
  payments, invoices and running subscriptions refer to them.
- A plan in use is archived (no longer offered; its subscribers keep it and renew on it), never deleted.
- A new price applies to new subscriptions at once. Existing subscribers move to it only when
  staff apply it, and then not before a renewal at least PRICE_CHANGE_NOTICE_DAYS after the email
  telling them; until then they renew at the price they have (`subscriptions.price`).
- Every change is one transaction with its audit-log row and its event.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import audit, clock, events, mail, money, plans, subscriptions
from billing.accounts import FormError
from billing.db import one, rows, scalar, write
from billing.i18n import gettext as _
from billing.settings import Settings

CODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
FIELDS = ("code", "name_en", "name_tr", "description_en", "description_tr", "price", "currency", "interval",
          "workspaces", "storage_gb", "trial_days", "sort_order", "public", "featured")
PAYING = ("active", "past_due")


def parse_price(text: str) -> int:
    """'1.499,00', '1,499.00', '1499,00' or '1499' -> 149900. The last '.' or ',' followed by one or
    two digits is the decimal mark; the other mark may group thousands."""
    raw = re.sub(r"\s", "", str(text or ""))
    match = re.fullmatch(r"([0-9.,]*?)(?:[.,]([0-9]{1,2}))?", raw)
    if not raw or match is None:
        raise money.MoneyError(raw)
    whole = match.group(1)
    if re.search(r"[.,]", whole) and not re.fullmatch(r"[0-9]{1,3}([.,][0-9]{3})+", whole):
        raise money.MoneyError(raw)
    return money.parse(re.sub(r"[.,]", "", whole or "0") + "." + (match.group(2) or "0"))


def in_use(db: Database, code: str) -> bool:
    return bool(scalar(db, "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE plan = ? OR scheduled_plan = ?) "
                           "OR EXISTS (SELECT 1 FROM payments WHERE plan = ?)", [code, code, code]))


def subscriber_counts(db: Database) -> dict[str, dict[str, int]]:
    """{plan code: {status: count}}, for the plans list."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows(db, "SELECT plan, status, count(*) AS n FROM subscriptions GROUP BY plan, status"):
        counts.setdefault(row["plan"], {})[row["status"]] = row["n"]
    return counts


def check(db: Database, settings: Settings, data: dict, existing: plans.Plan | None) -> dict:
    """The form's values as a plan row, or FormError naming every field that is wrong."""
    errors: dict[str, str] = {}
    values: dict = {}
    used = existing is not None and in_use(db, existing.code)

    code = (data.get("code") or "").strip().lower() if existing is None else existing.code
    if existing is None:
        if not CODE.fullmatch(code):
            errors["code"] = _("Use 1–40 lowercase letters, digits, - or _, starting with a letter or digit.")
        elif plans.find(db, code) is not None:
            errors["code"] = _("A plan with the code %(code)s exists already.", code=code)
    values["code"] = code

    for field, label, maximum in (("name_en", _("English name"), 60), ("name_tr", _("Turkish name"), 60),
                                  ("description_en", _("English description"), 300),
                                  ("description_tr", _("Turkish description"), 300)):
        text = " ".join(str(data.get(field) or "").split())
        if field.startswith("name") and not text:
            errors[field] = _("Enter the %(label)s.", label=label.lower())
        elif len(text) > maximum:
            errors[field] = _("Keep it under %(max)d characters.", max=maximum)
        values[field] = text

    try:
        values["price"] = parse_price(data.get("price", ""))
        if values["price"] < 100:
            errors["price"] = _("PayTR takes at least 1.00; enter a higher price.")
        elif not money.splits_exactly(values["price"], settings.vat_rate):
            errors["price"] = _("No net amount gives exactly this price at %(rate)s%% VAT, so the invoice could not "
                                "show VAT exactly. Try %(lower)s or %(higher)s.", rate=settings.vat_rate,
                                lower=money.decimal_string(_nearest_split(values["price"], settings, -1)),
                                higher=money.decimal_string(_nearest_split(values["price"], settings, 1)))
    except money.MoneyError:
        errors["price"] = _("Enter the price like 1499.00 or 1.499,00.")

    for field, allowed, message in (
            ("currency", plans.CURRENCIES, _("Choose TRY, USD or EUR.")),
            ("interval", plans.INTERVALS, _("Choose monthly or yearly."))):
        value = data.get(field) or (getattr(existing, field) if existing else "")
        if value not in allowed:
            errors[field] = message
        elif used and value != getattr(existing, field):
            errors[field] = _("Subscribers and payments use this plan, so this can no longer change. "
                              "Archive it and create a new plan instead.")
        values[field] = value

    def number(field: str, low: int, high: int, *, blank=None, message: str):
        text = str(data.get(field) or "").strip()
        if not text and blank is not ...:
            return blank
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            errors[field] = message
            return None
        return int(text)

    values["workspaces"] = number("workspaces", 0, 1_000_000, blank=None,
                                  message=_("Enter a whole number of workspaces, or leave it empty for unlimited."))
    values["storage_gb"] = number("storage_gb", 0, 1_000_000, blank=..., message=_("Enter the storage in whole GB."))
    values["trial_days"] = number("trial_days", 0, 365, blank=...,
                                  message=_("Enter the trial length in days, from 0 to 365."))
    values["sort_order"] = number("sort_order", 0, 100_000, blank=0, message=_("Enter a whole number."))
    values["public"] = 1 if data.get("public") == "1" else 0
    values["featured"] = 1 if data.get("featured") == "1" else 0
    if errors:
        raise FormError(errors)
    return values


def _nearest_split(price: int, settings: Settings, step: int) -> int:
    candidate = price
    while not money.splits_exactly(candidate, settings.vat_rate) and 100 <= candidate + step:
        candidate += step
    return candidate


def _snapshot(plan: plans.Plan | dict | None) -> dict:
    if plan is None:
        return {}
    source = plan if isinstance(plan, dict) else plan.__dict__
    return {field: source.get(field) for field in FIELDS if field in source}


def create(db: Database, now: datetime, settings: Settings, staff: dict, data: dict, ip: str | None = None) -> str:
    reason = audit.check_reason(data.get("reason") or _("New plan"))
    with write(db):
        values = check(db, settings, data, None)
        db.execute(f"""INSERT INTO plans ({', '.join(FIELDS)}, created_at, updated_at)
                       VALUES ({', '.join('?' for _ in FIELDS)}, ?, ?)""",
                   [values[f] for f in FIELDS] + [clock.iso(now), clock.iso(now)])
        audit.record(db, now, staff, "plan.create", reason=reason, target=f"plan:{values['code']}",
                     after=values, ip=ip)
        events.record(db, now, "plan.created", f"{staff['email']} created plan {values['code']}",
                      actor=events.user_actor(staff), plan=values["code"])
    return values["code"]


def update(db: Database, now: datetime, settings: Settings, staff: dict, code: str, data: dict,
           ip: str | None = None) -> dict:
    """Save the edited plan. Returns {"price_changed": bool, "scheduled": n subscribers told}."""
    reason = audit.check_reason(data.get("reason"))
    with write(db):
        existing = plans.get(db, code)
        values = check(db, settings, data, existing)
        changed = {f: values[f] for f in FIELDS if f != "code" and values[f] != _snapshot(existing).get(f)}
        if not changed and data.get("apply_to_existing") != "1":
            raise FormError({"reason": _("Nothing changed.")})
        if changed:
            db.execute(f"UPDATE plans SET {', '.join(f'{f} = ?' for f in changed)}, updated_at = ? WHERE code = ?",
                       [*changed.values(), clock.iso(now), code])
        price_changed = "price" in changed
        action = "plan.price_change" if price_changed else "plan.update"
        told = 0
        if data.get("apply_to_existing") == "1":
            told = apply_price_to_existing(db, now, settings, plans.get(db, code))
        audit.record(db, now, staff, action, reason=reason, target=f"plan:{code}",
                     before={f: _snapshot(existing).get(f) for f in changed},
                     after={**changed, **({"applied_to_existing": told} if data.get("apply_to_existing") == "1"
                                          else {})}, ip=ip)
        events.record(db, now, "plan.updated", f"{staff['email']} changed plan {code}: {', '.join(changed) or 'price applied'}",
                      actor=events.user_actor(staff), plan=code, fields=sorted(changed), applied_to_existing=told)
    return {"price_changed": price_changed, "scheduled": told}


def apply_price_to_existing(db: Database, now: datetime, settings: Settings, plan: plans.Plan) -> int:
    """Inside the edit's transaction: every paying subscriber whose price differs renews at the
    plan's price from the first renewal at least the notice period away, and is emailed now.
    Trials and ended subscriptions are not touched: their next subscription starts at the catalog's price."""
    effective = now + timedelta(days=settings.price_change_notice_days)
    found = rows(db, """SELECT s.*, c.name AS company_name, c.timezone AS company_tz,
                               (SELECT id FROM users u WHERE u.company_id = s.company_id AND u.role = 'owner'
                                ORDER BY u.id LIMIT 1) AS owner_id
                        FROM subscriptions s JOIN companies c ON c.id = s.company_id
                        WHERE s.plan = ? AND s.status IN ('active', 'past_due')
                          AND (s.price IS NOT ? OR s.next_price IS NOT NULL)""", [plan.code, plan.price])
    owners = {row["id"]: row for row in rows(db, "SELECT id, name, email, locale FROM users WHERE role = 'owner' "
                                                 "AND company_id IN (SELECT company_id FROM subscriptions "
                                                 "WHERE plan = ?)", [plan.code])}
    updates = []
    for sub in found:
        if sub["price"] == plan.price:  # back to what they pay: the pending change is off
            updates.append((None, None, clock.iso(now), sub["id"]))
            continue
        tz = ZoneInfo(sub["company_tz"] or settings.timezone)
        first = _first_renewal_after(sub, effective, tz, plan.months)
        updates.append((plan.price, clock.iso(first), clock.iso(now), sub["id"]))
        owner = owners.get(sub["owner_id"])
        if owner is None:
            continue
        mail.enqueue(db, now, settings, template="price_change_notice", to=owner["email"],
                     dedupe_key=f"price-change:{sub['id']}:{plan.price}:{clock.iso(now)}", company_id=sub["company_id"],
                     context={"name": owner["name"], "company": sub["company_name"], "plan": plan,
                              "old_price": sub["price"], "new_price": plan.price, "currency": sub["currency"],
                              "from_date": first, "tz": tz.key, "dashboard_url": settings.url("/billing/")})
    db.conn.executemany("UPDATE subscriptions SET next_price = ?, next_price_from = ?, price_notice_at = ? "
                        "WHERE id = ?", updates)
    if found:
        events.record(db, now, "plan.price_applied",
                      f"New price of {plan.code} applied to {len(updates)} subscribers with notice",
                      actor="system", plan=plan.code, price=plan.price, subscribers=len(updates))
    return sum(1 for u in updates if u[0] is not None)


def _first_renewal_after(sub: dict, effective: datetime, tz: ZoneInfo, months: int) -> datetime:
    """The first period boundary on or after `effective`: the renewal that charges the new price."""
    boundary = clock.parse(sub["current_period_end"])
    anchor = sub["period_anchor_day"] or boundary.astimezone(tz).day
    while boundary < effective:
        boundary = subscriptions.add_month(boundary, anchor, tz, sub.get("period_anchor_time"), months)
    return boundary


def archive(db: Database, now: datetime, staff: dict, code: str, reason: str, ip: str | None = None) -> None:
    reason = audit.check_reason(reason)
    with write(db):
        plan = plans.get(db, code)
        if plan.archived:
            return
        if plan.available and len(plans.all_plans(db)) <= 1:
            raise FormError({"reason": _("This is the only plan on offer; new customers need one. Create another "
                                         "plan first.")})
        db.execute("UPDATE plans SET archived_at = ?, updated_at = ? WHERE code = ?",
                   [clock.iso(now), clock.iso(now), code])
        audit.record(db, now, staff, "plan.archive", reason=reason, target=f"plan:{code}",
                     before={"archived": False}, after={"archived": True}, ip=ip)
        events.record(db, now, "plan.archived", f"{staff['email']} archived plan {code}",
                      actor=events.user_actor(staff), plan=code)


def restore(db: Database, now: datetime, staff: dict, code: str, reason: str, ip: str | None = None) -> None:
    reason = audit.check_reason(reason)
    with write(db):
        plan = plans.get(db, code)
        if not plan.archived:
            return
        db.execute("UPDATE plans SET archived_at = NULL, updated_at = ? WHERE code = ?", [clock.iso(now), code])
        audit.record(db, now, staff, "plan.restore", reason=reason, target=f"plan:{code}",
                     before={"archived": True}, after={"archived": False}, ip=ip)


def delete(db: Database, now: datetime, staff: dict, code: str, reason: str, ip: str | None = None) -> None:
    reason = audit.check_reason(reason)
    with write(db):
        plan = plans.get(db, code)
        if in_use(db, code):
            raise FormError({"reason": _("Subscribers or payments use %(plan)s, so it cannot be deleted. Archive it "
                                         "instead: it is no longer offered, and its subscribers keep it.",
                                         plan=plan.name)})
        if len(plans.all_plans(db)) <= 1 and plan.available:
            raise FormError({"reason": _("This is the only plan on offer; create another before deleting it.")})
        db.execute("DELETE FROM plans WHERE code = ?", [code])
        audit.record(db, now, staff, "plan.delete", reason=reason, target=f"plan:{code}", before=_snapshot(plan),
                     ip=ip)


def pending_notice(db: Database, code: str) -> int:
    return scalar(db, "SELECT count(*) FROM subscriptions WHERE plan = ? AND next_price IS NOT NULL", [code]) or 0


def row(db: Database, code: str) -> dict | None:
    return one(db, "SELECT * FROM plans WHERE code = ?", [code])
