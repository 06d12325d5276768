"""Billing details: what the owner enters, what invoices and PayTR then carry, and what bad input does."""

import re

import pytest

from billing import billing_details
from billing.accounts import FormError
from billing.db import one, rows, scalar
from conftest import csrf, outbox, post, register, visible
from test_checkout_http import checkout_oid, pay, subscribe
from test_team import invite_and_join

DETAILS = {"legal_name": "Yılmaz Yazılım Anonim Şirketi", "tax_office": "Kadıköy", "tax_id": "123 456 7890",
           "address": "Caferağa Mah. Moda Cad. No: 12\r\n  Kadıköy / İstanbul  ", "phone": "0532 123 45 67"}


def save(client, **changes):
    return post(client, "/billing/details", {**DETAILS, **changes}, token_from="/billing/details")


def text(response) -> str:
    return re.sub(r"\s+", " ", response.text)



@pytest.mark.parametrize("typed, stored", [
    ("4540536920", "4540536920"),  # a VKN with a valid check digit
    ("454 053 69 20", "4540536920"),
    ("10000000146", "10000000146"),  # a TC kimlik number with valid check digits
])
def test_tax_numbers_accepted(typed, stored):
    assert billing_details.check({"tax_id": typed, "tax_office": "Kadıköy"})["tax_id"] == stored


@pytest.mark.parametrize("typed, message", [
    ("12345", "10 digits"),
    ("12345678901234", "10 digits"),
    ("12345ABCDE", "10 digits"),
    ("4540536921", "tax number (VKN) is not valid"),  # check digit wrong
    ("10000000147", "TC kimlik number is not valid"),  # last check digit wrong
    ("00000000146", "TC kimlik number is not valid"),  # cannot start with 0
])
def test_tax_numbers_refused(typed, message):
    with pytest.raises(FormError) as caught:
        billing_details.check({"tax_id": typed, "tax_office": "Kadıköy"})
    assert message in caught.value.errors["tax_id"]


def test_a_tax_number_needs_its_office():
    with pytest.raises(FormError) as caught:
        billing_details.check({"tax_id": "1234567890"})
    assert caught.value.errors == {"tax_office": "Enter the tax office that goes with the tax number."}


@pytest.mark.parametrize("typed, stored", [
    ("0532 123 45 67", "05321234567"),
    ("+90 (532) 123-45-67", "+905321234567"),
])
def test_phone_numbers_are_kept_as_digits(typed, stored):
    assert billing_details.check({"phone": typed})["phone"] == stored


@pytest.mark.parametrize("typed", ["12345", "call me", "0532 123 45 67 89 01 23"])
def test_bad_phone_numbers_are_refused(typed):
    with pytest.raises(FormError) as caught:
        billing_details.check({"phone": typed})
    assert "area code" in caught.value.errors["phone"]


def test_everything_is_optional_and_whitespace_is_tidied():
    assert billing_details.check({}) == {"legal_name": "", "tax_office": "", "tax_id": "", "address": "", "phone": ""}
    assert billing_details.check(DETAILS)["address"] == "Caferağa Mah. Moda Cad. No: 12\nKadıköy / İstanbul"


def test_the_owner_saves_details_and_sees_them(client, db):
    register(client)
    page = visible(client.get("/billing/"))
    assert "Invoices to Yılmaz Yazılım A.Ş." in page and "Add billing details" in page

    response = save(client)
    assert response.status_code == 303 and response.headers["location"] == "/billing/details"
    page = client.get("/billing/details")
    assert "Billing details saved" in page.text
    assert 'value="Yılmaz Yazılım Anonim Şirketi"' in page.text and 'value="1234567890"' in page.text
    assert "Caferağa Mah. Moda Cad. No: 12\nKadıköy / İstanbul</textarea>" in page.text
    assert "Edit billing details" in client.get("/billing/").text

    company = one(db, "SELECT * FROM companies")
    assert (company["billing_tax_id"], company["billing_phone"]) == ("1234567890", "05321234567")
    [event] = rows(db, "SELECT * FROM events WHERE kind = 'company.billing_details_updated'")
    assert "legal name, tax office, tax number, billing address, phone" in event["message"]

    # Saving the same details again is not a change and records nothing.
    save(client)
    assert scalar(db, "SELECT count(*) FROM events WHERE kind = 'company.billing_details_updated'") == 1


def test_bad_input_shows_every_error_and_changes_nothing(client, db):
    register(client)
    save(client)
    before = one(db, "SELECT * FROM companies")
    events_before = scalar(db, "SELECT count(*) FROM events")
    response = save(client, tax_id="10000000147", phone="call me", legal_name="x" * 201)
    assert response.status_code == 422
    page = text(response)
    for message in ("This TC kimlik number is not valid", "Enter a phone number with its area code",
                    "Keep it under 200 characters."):
        assert message in page
    assert 'value="call me"' in page  # what was typed stays, to be corrected
    assert one(db, "SELECT * FROM companies") == before
    assert scalar(db, "SELECT count(*) FROM events") == events_before


def test_a_member_sees_the_details_but_cannot_change_them(client, db, app):
    register(client)
    save(client)
    member = invite_and_join(client, app, db)
    page = text(member.get("/billing/details"))
    assert "Yılmaz Yazılım Anonim Şirketi" in page and "Only the account owner can change these." in page
    assert "Save billing details" not in page
    before = one(db, "SELECT * FROM companies")
    response = member.post("/billing/details", data={**DETAILS, "legal_name": "Başka Şirket",
                                                     "csrf_token": csrf(member, "/billing/details")})
    assert response.status_code == 403
    assert one(db, "SELECT * FROM companies") == before


def test_invoices_and_paytr_carry_the_details_and_keep_them_once_issued(client, db, app):
    register(client)
    save(client)
    oid = checkout_oid(subscribe(client))
    summary = visible(client.get(f"/billing/checkout/{oid}"))
    assert "Invoice to Yılmaz Yazılım Anonim Şirketi, tax number 1234567890 Change billing details" in summary
    customer = app.state.emulator.transaction(oid).customer
    assert customer["user_address"] == "Caferağa Mah. Moda Cad. No: 12\nKadıköy / İstanbul"
    assert customer["user_phone"] == "05321234567"
    pay(client, app, oid)

    invoice = visible(client.get("/billing/invoices/INV-2026-000001"))
    for fact in ("Yılmaz Yazılım Anonim Şirketi", "Caferağa Mah. Moda Cad. No: 12", "Kadıköy / İstanbul",
                 "Vergi Dairesi / Tax office Kadıköy", "VKN/TCKN / Tax number 1234567890"):
        assert fact in invoice

    # New details apply to new invoices only: the issued one keeps what it said.
    save(client, legal_name="Yeni Ünvan Ltd. Şti.", address="Ankara")
    invoice = text(client.get("/billing/invoices/INV-2026-000001"))
    assert "Yılmaz Yazılım Anonim Şirketi" in invoice and "Yeni Ünvan" not in invoice
    assert outbox(db, template="payment_succeeded")


def test_without_details_invoices_name_the_company_and_paytr_gets_placeholders(client, db, app):
    register(client)
    oid = checkout_oid(subscribe(client))
    customer = app.state.emulator.transaction(oid).customer
    assert customer["user_address"] == "Yılmaz Yazılım A.Ş." and customer["user_phone"] == "05000000000"
    pay(client, app, oid)
    invoice = text(client.get("/billing/invoices/INV-2026-000001"))
    assert "Yılmaz Yazılım A.Ş." in invoice and "Tax number" not in invoice
