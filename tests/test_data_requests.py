"""KVKK/GDPR data requests: an admin exports everything about a customer as JSON, or erases their
personal data while invoices and credit notes stay exactly as issued. Both need a reason and a
fresh password, both are audited, and an erasure waits until no money can move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from billing import customer_search
from billing.db import one, rows, scalar, write
from billing.i18n import search_fold
from conftest import START, login, post, register, visible
from test_lifecycle import TRIAL_END, pay_iframe, pay_saving_card, tick
from test_staff_actions import act, admin, as_staff, audit_rows, company_id  # noqa: F401 (admin: a fixture)

ROOT = Path(__file__).resolve().parent.parent
REASON = "KVKK başvurusu 2026/12: müşteri verilerinin silinmesini istedi"


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1", "PAYTR_TIMEOUT": "60"}


def paying_customer(client, app, clock, db, save_card=False):
    """Ayşe's company, paid by card after its trial, with a member invited and an invoice issued."""
    register(client)
    tick(client, app, clock, TRIAL_END + timedelta(days=1))
    login(client)
    (pay_saving_card if save_card else pay_iframe)(client, app)
    assert one(db, "SELECT status FROM subscriptions")["status"] == "active"
    assert scalar(db, "SELECT count(*) FROM invoices") == 1


def cancel(admin, db):
    response = act(admin, db, "/cancel/now", {"settle": "none", "reason": "müşteri istedi"})
    assert response.status_code == 303, visible(response)[:400]
    assert one(db, "SELECT status FROM subscriptions")["status"] == "canceled"


def export(browser, db, reason=REASON):
    page = f"/admin/companies/{company_id(db)}"
    return post(browser, f"{page}/data/export", {"reason": reason}, token_from=page)


def erase(browser, db, reason=REASON, confirm="yes"):
    page = f"/admin/companies/{company_id(db)}"
    return post(browser, f"{page}/data/erase", {"reason": reason, "confirm": confirm}, token_from=page)


def test_export_gives_everything_about_the_customer_and_no_secrets(client, app, clock, db, admin):
    paying_customer(client, app, clock, db)
    response = export(admin, db)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"].startswith(f'attachment; filename="customer-{company_id(db)}-')
    document = json.loads(response.text)
    assert document["company"]["name"] == "Yılmaz Yazılım A.Ş." and document["reason"] == REASON
    assert [u["email"] for u in document["users"]] == ["ayse@example.com"]
    assert all("password_hash" not in u and "totp_secret" not in u for u in document["users"])
    assert "paytr_utoken" not in document["company"] and "$argon2" not in response.text
    assert document["subscription"]["status"] == "active"
    [payment] = document["payments"]
    assert payment["status"] == "succeeded" and payment["amount"] == 2900 and "paytr_token" not in payment
    [invoice] = document["invoices"]
    assert invoice["buyer_email"] == "ayse@example.com" and invoice["total"] == 2900 and invoice["lines"]
    assert {"company.registered", "payment.succeeded"} <= {e["kind"] for e in document["events"]}
    assert document["emails"] and all("body_text" not in e for e in document["emails"])  # metadata only
    assert {"welcome", "payment_succeeded"} <= {e["template"] for e in document["emails"]}
    assert document["sessions"] and document["audit_log"] == []  # nothing staff did to them before
    # The export itself is in the audit log: who took a copy of whose data, and why.
    [entry] = audit_rows(db, "customer.export")
    assert (entry["staff_email"], entry["company_id"], entry["reason"]) == ("ops@example.com", company_id(db), REASON)
    assert entry["after"]["counts"]["payments"] == 1


def test_export_and_erase_need_a_reason_an_admin_and_a_fresh_password(client, app, clock, db, admin,
                                                                       password_hash):
    paying_customer(client, app, clock, db)
    cancel(admin, db)
    no_reason = export(admin, db, reason="  ")
    assert no_reason.status_code == 422 and "Give a reason" in visible(no_reason)
    no_confirm = erase(admin, db, confirm="")
    assert no_confirm.status_code == 422 and "Tick the box to confirm" in visible(no_confirm)
    no_erase_reason = erase(admin, db, reason="")
    assert no_erase_reason.status_code == 422 and "Give a reason" in visible(no_erase_reason)
    finance = as_staff(app, db, password_hash, "finance")
    assert export(finance, db).status_code == 403
    page = admin.get(f"/admin/companies/{company_id(db)}")
    assert "Data requests" in page.text and "Data requests" not in finance.get(page.url.path).text
    # Eleven minutes later the admin's password is stale: both are sent to confirm it, nothing done.
    clock.at = clock.at + timedelta(minutes=11)
    for stale in (export(admin, db), erase(admin, db)):
        assert stale.status_code == 303 and stale.headers["location"].startswith("/auth/confirm")
    assert audit_rows(db, "customer.export") == [] and audit_rows(db, "customer.erase") == []
    assert one(db, "SELECT name FROM companies")["name"] == "Yılmaz Yazılım A.Ş."


def test_erase_is_refused_while_the_subscription_runs(client, app, clock, db, admin):
    paying_customer(client, app, clock, db)
    before = one(db, "SELECT * FROM companies")
    page = admin.get(f"/admin/companies/{company_id(db)}")
    assert "cancel it first" in visible(page)  # the page says why instead of offering the form
    refused = erase(admin, db)
    assert refused.status_code == 409 and "cancel it first" in visible(refused)
    assert one(db, "SELECT * FROM companies") == before and scalar(db, "SELECT count(*) FROM users WHERE company_id "
                                                                     "IS NOT NULL") == 1
    assert audit_rows(db, "customer.erase") == []


def test_erase_removes_personal_data_and_keeps_the_invoices_as_issued(client, app, clock, db, admin):
    paying_customer(client, app, clock, db)
    cid = company_id(db)
    invoices_before = rows(db, "SELECT * FROM invoices ORDER BY id")
    lines_before = rows(db, "SELECT * FROM invoice_lines ORDER BY id")
    payments_before = rows(db, "SELECT id, amount, paid_amount, status, merchant_oid FROM payments ORDER BY id")
    cancel(admin, db)

    done = erase(admin, db)
    assert done.status_code == 303, visible(done)[:500]
    page = admin.get(f"/admin/companies/{cid}")
    assert "personal data was erased (1 person removed)" in visible(page)
    assert f"Erased customer #{cid}" in visible(page) and "Yılmaz" not in visible(page).replace("Yılmaz Yazılım", "")

    company = one(db, "SELECT * FROM companies WHERE id = ?", [cid])
    assert company["name"] == f"Erased customer #{cid}"
    assert all(company[k] is None for k in ("billing_legal_name", "billing_tax_id", "billing_address", "external_id",
                                            "paytr_utoken", "paytr_ctoken", "usage_workspaces"))
    assert scalar(db, "SELECT count(*) FROM users WHERE company_id = ?", [cid]) == 0
    assert scalar(db, "SELECT count(*) FROM sessions s LEFT JOIN users u ON u.id = s.user_id "
                      "WHERE u.id IS NULL OR u.company_id = ?", [cid]) == 0
    assert scalar(db, "SELECT count(*) FROM login_attempts WHERE email = 'ayse@example.com'") == 0
    # Her browser's session is gone with her account.
    assert client.get("/billing/", follow_redirects=False).status_code == 303
    # Tax law: the invoice and its lines are exactly as issued, her name and email included.
    assert rows(db, "SELECT * FROM invoices ORDER BY id") == invoices_before
    assert rows(db, "SELECT * FROM invoice_lines ORDER BY id") == lines_before
    assert invoices_before[0]["buyer_email"] == "ayse@example.com"
    # The money stays accounted for; who paid is no longer in the payment.
    assert rows(db, "SELECT id, amount, paid_amount, status, merchant_oid FROM payments ORDER BY id") == payments_before
    assert {(p["email"], p["user_ip"]) for p in rows(db, "SELECT email, user_ip FROM payments")} == {("", None)}
    # Emails: when and which stay; to whom and what they said go.
    for email in rows(db, "SELECT * FROM outbox WHERE company_id = ?", [cid]):
        assert (email["to_addr"], email["context"], email["body_text"], email["body_html"]) == ("", "{}", None, None)
        assert email["status"] in ("sent", "failed")
    everything = json.dumps(rows(db, "SELECT message, data FROM events WHERE company_id = ?", [cid]), ensure_ascii=False)
    assert "ayse@example.com" not in everything and "Ayşe" not in everything and "203.0" not in everything
    assert "ayse@example.com" not in json.dumps(rows(db, "SELECT body FROM webhook_events"))
    # Staff search no longer finds her by name or email.
    index = one(db, "SELECT * FROM customer_index WHERE company_id = ?", [cid])
    assert index["owner_email"] == "" and search_fold("Yılmaz") not in index["name"]
    assert scalar(db, "SELECT count(*) FROM customer_fts WHERE customer_fts MATCH ?",
                  [customer_search.fts_phrase("ayse@example")]) == 0
    # Recorded: the event on the timeline and the audit row with what was done.
    [entry] = audit_rows(db, "customer.erase")
    assert entry["reason"] == REASON and entry["after"]["users"] == 1 and entry["staff_email"] == "ops@example.com"
    assert scalar(db, "SELECT count(*) FROM events WHERE kind = 'company.erased' AND company_id = ?", [cid]) == 1
    # Once is enough: the card says it is done, a second erase is refused.
    assert "already erased" in visible(erase(admin, db))


def test_an_email_in_flight_during_the_erase_is_not_written_back(client, app, clock, db, admin):
    """The sender renders an email, the erase runs while the mail server has it, then the sender
    records it as sent: the row keeps that it went, never to whom or what it said."""
    from billing import mail

    paying_customer(client, app, clock, db)
    cid = company_id(db)
    cancel(admin, db)
    # Due a day from now, so only this test's claim (not the app's own sender) takes it.
    later = clock.now() + timedelta(days=1)
    with write(db):
        mail.enqueue(db, later, app.state.settings, template="welcome", to="ayse@example.com", dedupe_key="in-flight",
                     context=json.loads(one(db, "SELECT context FROM outbox WHERE template = 'welcome'")["context"]),
                     company_id=cid)
    [row] = [r for r in mail.claim(db, later) if r["dedupe_key"] == "in-flight"]
    row = mail.rendered(row, app.state.settings)
    assert "Ayşe" in row["body_text"]

    assert erase(admin, db).status_code == 303
    mail.record_sent(db, later, row)

    email = one(db, "SELECT * FROM outbox WHERE dedupe_key = 'in-flight'")
    assert email["status"] == "sent"
    assert (email["to_addr"], email["subject"], email["body_text"], email["body_html"]) == ("", None, None, None)


def test_erase_deletes_the_saved_cards_at_paytr(client, app, clock, db, admin):
    paying_customer(client, app, clock, db, save_card=True)
    utoken = one(db, "SELECT paytr_utoken FROM companies")["paytr_utoken"]
    assert utoken and app.state.emulator.cards_of(utoken)
    cancel(admin, db)
    assert erase(admin, db).status_code == 303
    assert app.state.emulator.cards_of(utoken) == []  # nothing left at PayTR to charge
    [entry] = audit_rows(db, "customer.erase")
    assert entry["after"]["cards_deleted_at_paytr"] == 1


def test_erase_changes_nothing_when_paytr_cannot_delete_the_cards(client, app, clock, db, admin, monkeypatch):
    from billing.paytr.client import PaytrClient, PaytrUnavailable

    paying_customer(client, app, clock, db, save_card=True)
    cancel(admin, db)
    before = one(db, "SELECT * FROM companies")

    async def down(self, utoken):
        raise PaytrUnavailable("PayTR did not answer in time")

    monkeypatch.setattr(PaytrClient, "list_cards", down)
    refused = erase(admin, db)
    assert refused.status_code == 409 and "nothing was erased" in visible(refused)
    assert one(db, "SELECT * FROM companies") == before and audit_rows(db, "customer.erase") == []


def run(settings, *args):
    env = {**os.environ, "BILLING_DATA_DIR": str(settings.data_dir), "BILLING_ENV": "development",
           "PAYTR_API_BASE": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_exports_and_erases_with_a_reason(client, app, clock, db, admin, settings, tmp_path):
    paying_customer(client, app, clock, db)
    cid = str(company_id(db))
    assert run(settings, "customer", "export", cid, "--reason", " ").returncode == 2
    exported = run(settings, "customer", "export", cid, "--reason", REASON)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["users"][0]["email"] == "ayse@example.com"
    out = tmp_path / "ayse.json"
    assert run(settings, "customer", "export", cid, "--reason", REASON, "--out", str(out)).returncode == 0
    assert json.loads(out.read_text())["company"]["id"] == int(cid) and (out.stat().st_mode & 0o077) == 0
    assert [e["staff_email"].startswith("cli:") for e in audit_rows(db, "customer.export")] == [True, True]

    running = run(settings, "customer", "erase", cid, "--reason", REASON, "--yes")
    assert running.returncode == 2 and "cancel it first" in running.stderr
    cancel(admin, db)
    unconfirmed = run(settings, "customer", "erase", cid, "--reason", REASON)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert one(db, "SELECT name FROM companies")["name"] == "Yılmaz Yazılım A.Ş."
    erased = run(settings, "customer", "erase", cid, "--reason", REASON, "--yes")
    assert erased.returncode == 0, erased.stderr
    assert "1 people" in erased.stdout and one(db, "SELECT name FROM companies")["name"] == f"Erased customer #{cid}"
    assert run(settings, "customer", "export", "999", "--reason", REASON).returncode == 2
