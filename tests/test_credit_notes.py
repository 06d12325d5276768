"""Credit notes (İade Faturası) for refunds: numbers, amounts, immutability, page, PDF, email."""

import io
import sqlite3
from datetime import timedelta

import pytest
from pypdf import PdfReader

from billing import credit_notes, refunds
from billing.db import one, rows, scalar, write
from conftest import START, outbox, register, second_browser, login, visible
from i18n_support import english_left
from test_checkout_http import checkout_oid, pay, subscribe
from test_lifecycle import tick
from test_refunds import at_paytr, paid, refund, staff  # noqa: F401 (fixtures)

TR = {"Accept-Language": "tr-TR,tr;q=0.9,en;q=0.8"}


def pdf_text(body: bytes) -> str:
    assert body.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(body))
    box = reader.pages[0].mediabox  # A4: 595 × 842 points
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)
    return "\n".join(page.extract_text() for page in reader.pages)


def notes(db):
    return rows(db, "SELECT * FROM credit_notes ORDER BY id")


def test_partial_refunds_then_the_rest_give_credit_notes_that_sum_to_the_invoice(client, app, db, paid, staff):
    invoice = one(db, "SELECT * FROM invoices")
    assert (invoice["total"], invoice["net"], invoice["vat"]) == (2900, 2417, 483)
    # 0.03 and 10.05 have no net whose 20 % VAT adds up to them: VAT is their share rounded half
    # up, net the rest. The last note takes what is left of net and VAT, so the sums are exact.
    for amount, reason in (("10,50", "Hizmet kesintisi için iade"), ("0.03", "Kuruş farkı"),
                           ("10.05", "Eksik gün"), ("8.42", "Abonelik iptali, kalan tutar")):
        assert refund(staff, paid, amount=amount, reason=reason).status_code == 303
    made = notes(db)
    assert [n["number"] for n in made] == ["CN-2026-000001", "CN-2026-000002", "CN-2026-000003", "CN-2026-000004"]
    assert [(n["total"], n["net"], n["vat"]) for n in made] == [
        (1050, 875, 175), (3, 2, 1), (1005, 837, 168), (842, 703, 139)]
    assert [n["full_credit"] for n in made] == [0, 0, 0, 1]
    assert sum(n["total"] for n in made) == invoice["total"]
    assert (sum(n["net"] for n in made), sum(n["vat"] for n in made)) == (invoice["net"], invoice["vat"])
    for n in made:
        assert n["invoice_id"] == invoice["id"] and n["vat_rate"] == invoice["vat_rate"] == "20"
        assert (n["buyer_name"], n["seller_name"]) == (invoice["buyer_name"], invoice["seller_name"])
        assert n["buyer_email"] == "ayse@example.com" and n["currency"] == "USD"
    assert made[0]["reason"] == "Hizmet kesintisi için iade"
    issued = rows(db, "SELECT message, data FROM events WHERE kind = 'credit_note.issued' ORDER BY id")
    assert issued[0]["message"] == "Credit note CN-2026-000001 for $10.50 against invoice INV-2026-000001"
    assert issued[-1]["message"].endswith("(fully credited)")

    # The customer: under the invoice on the dashboard, on the invoice page, and the note itself.
    dashboard = visible(client.get("/billing/"))
    assert "Credit note CN-2026-000001 · 27 November 2026 −$10.50" in dashboard
    assert "Credit note CN-2026-000004 · 27 November 2026 · This invoice is fully credited. −$8.42" in dashboard
    invoice_page = visible(client.get("/billing/invoices/INV-2026-000001"))
    assert "Credit notes" in invoice_page and "CN-2026-000003" in invoice_page
    assert "This invoice is fully credited." in invoice_page
    last = visible(client.get("/billing/credit-notes/CN-2026-000004"))
    assert "İade Faturası / Credit note" in last and "Credit note CN-2026-000004" in last
    assert "Original invoice INV-2026-000001 (27 November 2026)" in last
    assert "Net $7.03" in last and "VAT 20% $1.39" in last and "Total credited $8.42" in last
    assert "Abonelik iptali, kalan tutar" in last and "This invoice is fully credited." in last
    first = visible(client.get("/billing/credit-notes/CN-2026-000001"))
    assert "This invoice is fully credited." not in first and "Yılmaz Yazılım A.Ş." in first

    # Staff: on the customer's page, under the payment's invoice, and the note.
    company = visible(staff.get(f"/admin/companies/{paid['company_id']}"))
    assert "INV-2026-000001 CN-2026-000001 −$10.50 CN-2026-000002 −$0.03" in company and "CN-2026-000004 −$8.42" in company
    assert "Total credited $10.50" in visible(staff.get("/billing/credit-notes/CN-2026-000001"))

    # Nothing is left to credit: a fifth note could not be made even if asked.
    with write(db):
        assert credit_notes.issue(db, START, app.state.settings, {**refunds.one_refund(db, made[0]["refund_id"]),
                                                                  "id": 999}) is None


def test_the_refund_email_names_the_credit_note(db, paid, staff):
    refund(staff, paid, amount="29.00", reason="Müşteri iki kez ödedi")
    [email] = outbox(db, template="refund_issued")
    assert "Credit note: CN-2026-000001" in email["body_text"]
    assert "CN-2026-000001" in email["body_html"]
    [note] = notes(db)
    assert note["full_credit"] == 1 and (note["net"], note["vat"]) == (2417, 483)


def test_numbers_stay_gapless_when_paytr_refuses(app, db, paid, staff):
    assert refund(staff, paid, amount="5.00", reason="Birinci").status_code == 303
    working = app.state.emulator.faults
    app.state.emulator.faults = working.changed({"refund": "refuse", "refuse_reason": "İade yetkiniz bulunmuyor"})
    refund(staff, paid, amount="5.00", reason="Reddedilen")
    assert one(db, "SELECT status FROM refunds ORDER BY id DESC LIMIT 1")["status"] == "failed"
    app.state.emulator.faults = working
    assert refund(staff, paid, amount="5.00", reason="Üçüncü").status_code == 303
    assert [(n["number"], n["reason"]) for n in notes(db)] == [("CN-2026-000001", "Birinci"),
                                                               ("CN-2026-000002", "Üçüncü")]


def test_numbers_stay_gapless_when_the_transaction_rolls_back(app, db, paid, staff, monkeypatch):
    assert refund(staff, paid, amount="5.00", reason="Birinci").status_code == 303

    def broken(*args, **kwargs):  # the email after the credit note fails: the whole settle rolls back
        raise RuntimeError("outbox unavailable")

    started, _ = refunds.start(db, START, payment_id=paid["id"], amount="4.00", reason="Geri alınan",
                               request_key="rollback-1", actor="staff:test")
    monkeypatch.setattr(refunds.mail, "enqueue", broken)
    with pytest.raises(RuntimeError):
        refunds.settle(db, START, app.state.settings, started["id"], ok=True, message=refunds.ACCEPTED)
    assert refunds.one_refund(db, started["id"])["status"] == "pending"
    assert [n["number"] for n in notes(db)] == ["CN-2026-000001"]
    assert scalar(db, "SELECT last_number FROM credit_note_counters WHERE year = 2026") == 1
    monkeypatch.undo()
    refunds.settle(db, START, app.state.settings, started["id"], ok=True, message=refunds.ACCEPTED)
    assert [(n["number"], n["reason"]) for n in notes(db)] == [("CN-2026-000001", "Birinci"),
                                                               ("CN-2026-000002", "Geri alınan")]


def test_the_status_query_settlement_issues_the_credit_note(client, app, db, clock, paid, staff, monkeypatch):
    app.state.emulator.faults = app.state.emulator.faults.changed({"refund": "timeout", "timeout_seconds": 30})
    monkeypatch.setattr(app.state.paytr, "settings", app.state.paytr.settings.replace(paytr_timeout=0.3))
    refund(staff, paid, amount="12.00", reason="Zaman aşımı")
    assert notes(db) == []  # unknown: no document until PayTR says it was made
    tick(client, app, clock, START + refunds.CHECK_AFTER + timedelta(minutes=1))
    [note] = notes(db)
    assert (note["number"], note["total"], note["full_credit"]) == ("CN-2026-000001", 1200, 0)


def test_credit_notes_are_immutable(db, paid, staff):
    refund(staff, paid, amount="29.00", reason="Tam iade")
    for sql in ("UPDATE credit_notes SET total = 1, net = 1, vat = 0", "DELETE FROM credit_notes"):
        with pytest.raises(sqlite3.IntegrityError, match="credit notes are immutable"):
            with write(db):
                db.conn.execute(sql)
    assert notes(db)[0]["total"] == 2900


def test_pdf_for_the_company_and_staff_404_for_others(client, app, db, paid, staff):
    refund(staff, paid, amount="10.00", reason="Hizmet kesintisi: ÇĞİÖŞÜ çğıöşü")
    response = client.get("/billing/credit-notes/CN-2026-000001.pdf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert 'filename="CN-2026-000001.pdf"' in response.headers["content-disposition"]
    text = pdf_text(response.content)
    for expected in ("İade Faturası / Credit note", "CN-2026-000001", "INV-2026-000001", "Yılmaz Yazılım A.Ş.",
                     "ÇĞİÖŞÜ çğıöşü", "Total credited", "$10.00", "Original invoice", paid["merchant_oid"]):
        assert expected in text, (expected, text)
    assert staff.get("/billing/credit-notes/CN-2026-000001.pdf").content == response.content  # cached, same bytes
    assert "Total credited $10.00" in visible(staff.get("/billing/credit-notes/CN-2026-000001"))

    other = second_browser(app)
    assert register(other, email="mehmet@example.com", company="Başka Şirket Ltd.", name="Mehmet Kaya").status_code == 303
    for path in ("/billing/credit-notes/CN-2026-000001", "/billing/credit-notes/CN-2026-000001.pdf",
                 "/billing/credit-notes/CN-2026-000099"):
        assert other.get(path).status_code == 404
    anonymous = second_browser(app)
    assert anonymous.get("/billing/credit-notes/CN-2026-000001.pdf", follow_redirects=False).status_code == 303


def test_turkish_page_and_pdf(client, app, db, staff):
    client.headers.update(TR)
    register(client)
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid)
    payment = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])
    refund(staff, payment, amount="29.00", reason="Müşteri iki kez ödedi")
    response = client.get("/billing/credit-notes/CN-2026-000001")
    assert '<html lang="tr">' in response.text
    page = visible(response)
    assert english_left(response.text, also_allowed=("Yılmaz Yazılım A.Ş.", "Ayşe Yılmaz", "No:1")) == []
    assert "İade Faturası / Credit note" in page and "İade faturası CN-2026-000001" in page
    assert "Asıl fatura INV-2026-000001" in page and "Bu fatura tamamen iade edildi." in page
    assert "Ara toplam $24,17" in page and "KDV %20 $4,83" in page
    text = pdf_text(client.get("/billing/credit-notes/CN-2026-000001.pdf").content)
    assert "Asıl fatura" in text and "Bu fatura tamamen iade edildi." in text and "Müşteri iki kez ödedi" in text
    assert "Düzenlenme tarihi: 27 Kasım 2026" in text and "Asıl fatura INV-2026-000001 (27 Kasım 2026)" in text
    [email] = outbox(db, template="refund_issued")
    assert "İade faturası: CN-2026-000001" in email["body_text"]


def test_the_refund_email_carries_the_credit_note_pdf(db, paid, staff, settings):
    from email import policy
    from email.parser import BytesParser

    from conftest import wait_for

    refund(staff, paid, amount="10.00", reason="Kısmi iade")
    directory = settings.mail_capture_dir

    def sent():
        return [p for p in directory.glob("*.eml") if b"X-Billing-Template: refund_issued" in p.read_bytes()]

    wait_for(sent, timeout=20, message="the refund email is sent")
    [path] = sent()
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf" and attachment.get_filename() == "CN-2026-000001.pdf"
    text = pdf_text(attachment.get_content())
    assert "CN-2026-000001" in text and "INV-2026-000001" in text
