"""The company's billing details: who its invoices are made out to, and what PayTR is told.

A Turkish business invoice names the buyer's legal title, address, tax office
and tax number (VKN, 10 digits; a sole trader uses the 11-digit TC kimlik
number). The details are optional, so a trial starts in seconds and a foreign
customer is not forced into Turkish fields, but each invoice copies them as
they were when it was issued: editing them later never rewrites an invoice.

PayTR wants an address and a phone number with every payment; we send these
details when the company has given them, otherwise the company name and a
placeholder number (PayTR only checks that the fields are present).
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlite_utils import Database
from stdnum.tr import tckimlik, vkn

from billing import accounts, events, i18n
from billing.accounts import FormError
from billing.db import write
from billing.i18n import gettext as _, lazy_gettext
from billing.text import UnsafeText, clean as clean_text

PLACEHOLDER_PHONE = "05000000000"
LIMITS = {"legal_name": 200, "tax_office": 100, "address": 400}  # address: PayTR's user_address limit
LABELS = {"legal_name": lazy_gettext("Legal name"), "tax_office": lazy_gettext("Tax office"),
          "tax_id": lazy_gettext("Tax number"), "address": lazy_gettext("Billing address"), "phone": lazy_gettext("Phone")}
COLUMNS = {name: f"billing_{name}" for name in LABELS}

_PHONE = re.compile(r"^\+?[0-9 ()\-]+$")
_TAX_ID = re.compile(r"[0-9]{10,11}")  # ASCII digits only


def of(company: dict) -> dict:
    """The company's details as the form and the pages show them ('' when not given)."""
    return {name: company.get(column) or "" for name, column in COLUMNS.items()}


def is_complete(company: dict) -> bool:
    """Enough for a Turkish business invoice: a tax number, its office and an address."""
    details = of(company)
    return bool(details["tax_id"] and details["tax_office"] and details["address"])


def check(data: dict) -> dict:
    """Cleaned details from a submitted form, or FormError naming every field to fix."""
    values, errors = {}, {}
    for name in LABELS:
        try:
            values[name] = clean_text(data.get(name), multiline=name == "address")
        except UnsafeText as exc:
            values[name], errors[name] = "", str(exc)
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            errors[name] = _("Keep it under %(limit)d characters.", limit=limit)

    # Spaces are how people group the digits; anything else (dashes, dots, '٤٥٤' Arabic-Indic
    # digits that str.isdigit() takes) is refused rather than guessed at.
    tax_id = values["tax_id"].replace(" ", "")
    values["tax_id"] = tax_id
    if tax_id:
        if not _TAX_ID.fullmatch(tax_id):
            errors["tax_id"] = _("A tax number is 10 digits (VKN), or 11 digits for a sole trader's TC kimlik number.")
        elif len(tax_id) == 10 and not vkn.is_valid(tax_id):
            errors["tax_id"] = _("This tax number (VKN) is not valid; check the digits.")
        elif len(tax_id) == 11 and not tckimlik.is_valid(tax_id):  # check digits only, no online lookup
            errors["tax_id"] = _("This TC kimlik number is not valid; check the digits.")
        elif not values["tax_office"]:
            errors.setdefault("tax_office", _("Enter the tax office that goes with the tax number."))

    phone = values["phone"]
    if phone:
        digits = re.sub(r"\D", "", phone)
        if not _PHONE.match(phone) or not 10 <= len(digits) <= 15:
            errors["phone"] = _("Enter a phone number with its area code, for example 0532 123 45 67.")
        else:
            values["phone"] = ("+" if phone.startswith("+") else "") + digits
    if errors:  # in the form's order, so the cursor lands on the first field to fix
        raise FormError({name: errors[name] for name in LABELS if name in errors})
    return values


def update(db: Database, now: datetime, user: dict, data: dict) -> dict:
    """The owner saves the details; returns the company as stored. Bad input changes nothing."""
    if user.get("role") != "owner":
        raise PermissionError("only the account owner can change billing details")
    values = check(data)
    with write(db):
        company = accounts.company(db, user["company_id"])
        before = of(company)
        changed = [name for name in LABELS if before[name] != values[name]]
        if changed:
            assignments = ", ".join(f"{COLUMNS[name]} = ?" for name in changed)
            db.conn.execute(f"UPDATE companies SET {assignments} WHERE id = ?",
                            [*(values[name] or None for name in changed), company["id"]])
            with i18n.using("en"):  # the audit trail is written in English; the timeline translates it
                fields = ", ".join(str(LABELS[name]).lower() for name in changed)
            events.record(db, now, "company.billing_details_updated",
                          f"{user['name']} updated the billing details: {fields}",
                          company_id=company["id"], actor=f"user:{user['id']}", fields=changed)
        return accounts.company(db, company["id"])


def paytr_contact(company: dict) -> dict:
    """`user_address` and `user_phone` for PayTR's payment requests."""
    details = of(company)
    return {"user_address": details["address"] or company["name"], "user_phone": details["phone"] or PLACEHOLDER_PHONE}


def invoice_buyer(company: dict) -> dict:
    """The buyer's columns of an invoice, copied at issue."""
    details = of(company)
    return {"buyer_name": details["legal_name"] or company["name"], "buyer_address": details["address"] or None,
            "buyer_tax_office": details["tax_office"] or None, "buyer_tax_id": details["tax_id"] or None}
