"""Customers as the host product sees them: a company, its owner and its subscription.

Created exactly like a web sign-up (accounts.create_company: trial, audit event, welcome
email), except that the owner has no password yet. The host's own id (`external_id`)
links the two systems; it is unique, and so is the owner's email.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import available_timezones

from sqlite_utils import Database

from billing import accounts, events, plans
from billing.accounts import FormError
from billing.db import one, rows, write
from billing.entitlements import customer_id
from billing.i18n import gettext as _
from billing.settings import Settings
from billing.text import UnsafeText, clean

EXTERNAL_ID_MAX = 200
LOCALES = ("tr", "en")
CREATE_FIELDS = ("external_id", "name", "email", "owner_name", "locale", "timezone")
UPDATE_FIELDS = ("external_id", "name", "email")


class Conflict(Exception):
    """What the request would create exists already: `customer` names it."""

    def __init__(self, detail: str, customer: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.customer = customer


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _string(value, field: str) -> str:
    if not isinstance(value, str):
        raise FormError({field: _("%(field)s must be a string.", field=field)})
    return value


def check_external_id(value) -> str | None:
    if value is None:
        return None
    text = _string(value, "external_id")
    if not text or len(text) > EXTERNAL_ID_MAX:
        raise FormError({"external_id": _("external_id must be 1 to %(max)d characters.", max=EXTERNAL_ID_MAX)})
    try:
        cleaned = clean(text)
    except UnsafeText as exc:
        raise FormError({"external_id": str(exc)}) from None
    if cleaned != text or " " in text:
        # Stored exactly as sent: an id with spaces would never match what the host sends next time.
        raise FormError({"external_id": _("external_id must not contain spaces or invisible characters.")})
    return text


def check_locale(value) -> str | None:
    if value is None:
        return None
    if value not in LOCALES:
        raise FormError({"locale": _("locale is tr or en.")})
    return value


def check_timezone(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in _zones():
        raise FormError({"timezone": _("timezone must be an IANA time zone such as Europe/Istanbul.")})
    return value


def _checks(settings: Settings, data: dict) -> dict:
    """Check the fields present in `data`; one FormError naming every bad one."""
    checks = {
        "external_id": lambda v: check_external_id(v),
        "name": lambda v: accounts.check_text(_string(v, "name"), "name", "the company's name",
                                              accounts.COMPANY_MAX),
        "email": lambda v: accounts.check_email(_string(v, "email"), smtputf8=settings.smtp_smtputf8),
        "owner_name": lambda v: None if v is None else accounts.check_text(
            _string(v, "owner_name"), "owner_name", "the owner's name", accounts.NAME_MAX),
        "locale": check_locale,
        "timezone": check_timezone,
    }
    values, errors = {}, {}
    for field, value in data.items():
        try:
            values[field] = checks[field](value)
        except FormError as exc:
            errors.update(exc.errors)
    if errors:
        raise FormError(errors)
    return values


def check_create(settings: Settings, data: dict) -> dict:
    missing = {f: _("%(field)s is required.", field=f) for f in ("external_id", "name", "email") if data.get(f) is None}
    try:
        values = _checks(settings, data)
    except FormError as exc:
        missing.update(exc.errors)
        raise FormError(missing) from None
    if missing:
        raise FormError(missing)
    return values


def check_update(settings: Settings, data: dict) -> dict:
    if not data:
        raise FormError({"": _("Send at least one of %(fields)s.", fields=", ".join(UPDATE_FIELDS))})
    for field in ("name", "email"):
        if field in data and data[field] is None:
            raise FormError({field: _("%(field)s cannot be removed.", field=field)})
    return _checks(settings, data)


def _owner(db: Database, company_id: int) -> dict | None:
    return one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1", [company_id])


def _refuse_taken(db: Database, company_id: int | None, external_id: str | None, email: str | None) -> None:
    if external_id is not None:
        other = one(db, "SELECT id FROM companies WHERE external_id = ?", [external_id])
        if other and other["id"] != company_id:
            raise Conflict(_("A customer with external_id %(external_id)s exists already: %(id)s.",
                             external_id=repr(external_id), id=customer_id(other["id"])), customer_id(other["id"]))
    if email is not None:
        user = accounts.user_by_email(db, email)
        if user and user["company_id"] != company_id:
            owner_of = customer_id(user["company_id"]) if user["company_id"] else None
            raise Conflict(_("A user with the email %(email)s exists already, in customer %(id)s.", email=email,
                             id=owner_of) if owner_of else
                           _("A user with the email %(email)s exists already.", email=email), owner_of)
        if user and user["company_id"] == company_id and user["role"] != "owner":
            raise Conflict(_("%(email)s belongs to a member of this customer, not its owner.", email=email),
                           customer_id(company_id))


def create(db: Database, now: datetime, settings: Settings, values: dict, *, actor: str) -> int:
    """A new customer (call inside a write, or alone); returns its company id."""
    with write(db):
        _refuse_taken(db, None, values["external_id"], values["email"])
        user_id = accounts.create_company(
            db, now, settings, values["name"], values.get("owner_name") or values["email"].split("@")[0],
            values["email"], accounts.NO_PASSWORD, plans.default_code(db), timezone=values.get("timezone"),
            external_id=values["external_id"], locale=values.get("locale"), actor=actor)
        return accounts.user_by_id(db, user_id)["company_id"]


def update(db: Database, now: datetime, company_id: int, values: dict, *, actor: str) -> bool:
    """Set external_id, name and the owner's email; False when there is no such customer."""
    with write(db):
        company = one(db, "SELECT * FROM companies WHERE id = ?", [company_id])
        if company is None:
            return False
        _refuse_taken(db, company_id, values.get("external_id"), values.get("email"))
        changed = {}
        if "external_id" in values and values["external_id"] != company["external_id"]:
            db.conn.execute("UPDATE companies SET external_id = ? WHERE id = ?", [values["external_id"], company_id])
            changed["external_id"] = values["external_id"]
        if "name" in values and values["name"] != company["name"]:
            db.conn.execute("UPDATE companies SET name = ? WHERE id = ?", [values["name"], company_id])
            changed["name"] = values["name"]
        owner = _owner(db, company_id)
        if "email" in values and owner and values["email"] != owner["email"]:
            db.conn.execute("UPDATE users SET email = ? WHERE id = ?", [values["email"], owner["id"]])
            changed["email"] = values["email"]
        if changed:
            events.record(db, now, "customer.updated", f"customer changed through the API: {', '.join(changed)}",
                          company_id=company_id, actor=actor, **changed)
    return True


def by_external_id(db: Database, external_id: str) -> dict | None:
    return one(db, "SELECT * FROM companies WHERE external_id = ?", [external_id])


def page(db: Database, limit: int, before: int | None) -> tuple[list[dict], bool]:
    """Newest first: up to `limit` companies with ids below `before`, and whether more follow."""
    found = rows(db, "SELECT * FROM companies WHERE id < ? ORDER BY id DESC LIMIT ?",
                 [before if before is not None else 2 ** 62, limit + 1])
    return found[:limit], len(found) > limit
