"""The invoice as a PDF: what a customer, staff member and accountant read in it, who may download
it, its cache, its two languages, the receipt email that carries it, and the seller's settings."""

import io
import re
from email import policy
from email.parser import BytesParser

import pytest
from pypdf import PdfReader

from billing import mail, settings as settings_module
from billing.db import one, scalar
from billing.documents import invoice_pdf as documents, pdf
from billing.settings import ConfigError
from conftest import START, login, register, second_browser, visible, wait_for
from test_billing_details import save
from test_checkout_http import checkout_oid, pay, subscribe
from test_settings import PRODUCTION

SELLER = {"SELLER_LEGAL_NAME": "Çağlayan Öğüt Şirketi Ltd. Şti.", "SELLER_ADDRESS": "Güneşli Mah. ₺ Sok. No:5, Gölcük İzmir",
          "SELLER_TAX_OFFICE": "Karşıyaka", "SELLER_TAX_NUMBER": "4540536920", "SELLER_MERSIS": "0454053692000015",
          "SELLER_EMAIL": "fatura@caglayan.example", "SELLER_WEBSITE": "https://caglayan.example"}
BUYER = {"legal_name": "Işıl Ünlü Yazılım A.Ş.", "tax_office": "Üsküdar", "tax_id": "10000000146",
         "address": "Çiçek Sok. No:3 DAĞ APT.\nÜsküdar / İstanbul", "phone": "0532 123 45 67"}
NUMBER = "INV-2026-000001"


@pytest.fixture
def env():
    return SELLER


def pdf_text(document: bytes) -> str:
    assert document.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(document))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


def paid_invoice(client, app, locale_headers=None):
    register(client, company="Işıl Ünlü Yazılım", name="Ayşe Çelik")
    save(client, **BUYER)
    pay(client, app, checkout_oid(subscribe(client)))
    return client


@pytest.fixture
def owner(client, app):
    return paid_invoice(client, app)


def test_the_pdf_names_everything_the_law_asks_for_with_every_turkish_letter(owner, db):
    answer = owner.get(f"/billing/invoices/{NUMBER}.pdf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    assert f'filename="{NUMBER}.pdf"' in answer.headers["content-disposition"]
    reader = PdfReader(io.BytesIO(answer.content))
    width, height = (float(v) for v in reader.pages[0].mediabox[2:])
    assert (round(width * 25.4 / 72), round(height * 25.4 / 72)) == (210, 297)  # A4 in mm
    text = pdf_text(answer.content)
    oid = scalar(db, "SELECT merchant_oid FROM payments")
    for fact in (f"Fatura / Invoice {NUMBER}", "Satıcı / Seller", "Çağlayan Öğüt Şirketi Ltd. Şti.",
                 "Güneşli Mah. ₺ Sok. No:5, Gölcük İzmir", "Vergi Dairesi / Tax office Karşıyaka",
                 "VKN/TCKN / Tax number 4540536920", "MERSİS Numarası / MERSIS number 0454053692000015",
                 "fatura@caglayan.example", "https://caglayan.example",
                 "Alıcı / Billed to", "Işıl Ünlü Yazılım A.Ş.", "Çiçek Sok. No:3", "Üsküdar / İstanbul",
                 "Vergi Dairesi / Tax office Üsküdar", "VKN/TCKN / Tax number 10000000146",
                 "Fatura Tarihi / Invoice date 27 November 2026", f"Payment reference {oid}",
                 "Starter plan, 11 December 2026 – 11 January 2027", "Net $24.17", "VAT 20% $4.83",
                 "Total $29.00", "Paid with Card, through PayTR"):
        assert fact in text, print(text) or fact
    for letter in "ÇĞİÖŞÜçğıöşü₺":
        assert letter in text, letter
    assert not re.search(r"\d{2}\.\d{2}\.\d{4}", text)  # one date style: "27 November 2026"
    fonts = {str(f["/BaseFont"]) for page in reader.pages for f in page["/Resources"]["/Font"].get_object().values()}
    assert fonts and all("+DejaVu-Sans" in f for f in fonts), fonts  # embedded subsets of DejaVu Sans


def test_the_invoice_page_offers_the_download_and_shows_the_same_document(owner):
    answer = owner.get(f"/billing/invoices/{NUMBER}")
    assert f'href="/billing/invoices/{NUMBER}.pdf"' in answer.text
    page = visible(answer)
    for fact in ("Download PDF", f"Fatura / Invoice {NUMBER}", "VKN/TCKN / Tax number 10000000146",
                 "Vergi Dairesi / Tax office Karşıyaka", "Paid with Card, through PayTR"):
        assert fact in page, fact


def test_turkish_reader_gets_a_turkish_pdf_with_the_legal_terms_once(client, app):
    client.headers.update({"Accept-Language": "tr-TR,tr;q=0.9"})
    paid_invoice(client, app)
    text = pdf_text(client.get(f"/billing/invoices/{NUMBER}.pdf").content)
    for fact in (f"Fatura {NUMBER}", "Satıcı", "Vergi Dairesi Karşıyaka", "VKN/TCKN 4540536920", "Alıcı",
                 "Fatura Tarihi 27 Kasım 2026", "KDV %20", "$29,00", "Starter planı, 11 Aralık 2026"):
        assert fact in text, print(text) or fact
    assert "Invoice" not in text and "Tax office" not in text and " / Vergi" not in text


def test_another_companys_member_gets_404_staff_and_team_members_get_it(owner, app, db, password_hash):
    from billing import accounts

    stranger = second_browser(app)
    register(stranger, email="other@example.com", company="Başka Şirket")
    assert stranger.get(f"/billing/invoices/{NUMBER}.pdf").status_code == 404
    assert stranger.get("/billing/invoices/INV-2026-999999.pdf").status_code == 404
    stranger.cookies.clear()
    assert stranger.get(f"/billing/invoices/{NUMBER}.pdf", follow_redirects=False).status_code == 303

    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon", password_hash=password_hash)
    staff = second_browser(app)
    assert login(staff, email="ops@example.com").status_code == 303
    answer = staff.get(f"/billing/invoices/{NUMBER}.pdf")
    assert answer.status_code == 200 and "Işıl Ünlü Yazılım A.Ş." in pdf_text(answer.content)


def test_a_second_download_reads_the_cache(owner, settings, monkeypatch):
    first = owner.get(f"/billing/invoices/{NUMBER}.pdf").content
    assert len(list(pdf.cache_dir(settings).glob("*.pdf"))) == 1

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(pdf, "render", no_rendering)
    assert owner.get(f"/billing/invoices/{NUMBER}.pdf").content == first


def test_invoice_copies_seller_details_and_the_saved_card_that_paid(owner, db, settings):
    invoice = one(db, "SELECT * FROM invoices")
    assert (invoice["seller_name"], invoice["seller_tax_id"], invoice["seller_tax_office"], invoice["seller_mersis"],
            invoice["seller_email"], invoice["seller_website"]) == (
        "Çağlayan Öğüt Şirketi Ltd. Şti.", "4540536920", "Karşıyaka", "0454053692000015",
        "fatura@caglayan.example", "https://caglayan.example")
    assert invoice["paid_with"] is None  # typed into PayTR's form: we never see the card


def test_paid_with_names_the_saved_card_a_renewal_charged():
    from billing import invoices

    company = {"paytr_card_label": "Visa ending 4358"}
    assert invoices.paid_with({"method": "recurring"}, company) == "Visa ending 4358"
    assert invoices.paid_with({"method": "iframe"}, company) is None


def png(width: int, height: int) -> bytes:
    """A black grey-scale PNG, made by hand (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\0" + b"\0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def test_the_logo_is_printed_when_set(tmp_path, owner, db, settings):
    logo = tmp_path / "logo.png"
    logo.write_bytes(png(12, 4))
    with_logo = settings.replace(seller_logo=logo)
    html = documents.html(with_logo, documents.invoices.document(db, NUMBER), "en")
    assert 'class="doc-logo" src="data:image/png;base64,' in html
    reader = PdfReader(io.BytesIO(documents.invoice_pdf(db, with_logo, NUMBER, "en")))
    assert reader.pages[0]["/Resources"].get("/XObject")  # the logo, drawn as an image


def test_the_receipt_email_carries_the_invoice_pdf(owner, settings, db):
    directory = settings.mail_capture_dir

    def receipts():
        return [p for p in directory.glob("*.eml") if b"X-Billing-Template: payment_succeeded" in p.read_bytes()]

    wait_for(receipts, timeout=20, message="the receipt is sent")
    [path] = receipts()
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message.get_content_type() == "multipart/mixed"
    assert "Payment received" in message["Subject"]
    assert NUMBER in message.get_body(preferencelist=("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf" and attachment.get_filename() == f"{NUMBER}.pdf"
    text = pdf_text(attachment.get_content())
    assert NUMBER in text and "Işıl Ünlü Yazılım A.Ş." in text and "Total $29.00" in text
    # The outbox row names the invoice; the callback's transaction rendered nothing.
    row = one(db, "SELECT * FROM outbox WHERE template = 'payment_succeeded'")
    assert f'"attach_invoice": "{NUMBER}"' in row["context"]


def test_an_email_without_attachment_stays_one_alternative_part(settings):
    row = {"id": 1, "to_addr": "a@example.com", "subject": "Merhaba", "created_at": "2026-11-27T09:00:00Z",
           "dedupe_key": "k", "template": "welcome", "locale": "tr", "body_text": "x\n", "body_html": "<p>x</p>"}
    assert mail.build_message(row, settings).get_content_type() == "multipart/alternative"


# --- the seller's settings ------------------------------------------------------------------


def load(tmp_path, **env):
    return settings_module.load({"BILLING_DATA_DIR": str(tmp_path / "data"), **env}, env_file=None)


PRODUCTION_SELLER = {**{k: v for k, v in PRODUCTION.items() if k != "SELLER_TAX_ID"}, **SELLER}


def test_production_starts_with_the_seller_details(tmp_path):
    s = load(tmp_path, **PRODUCTION_SELLER)
    assert (s.seller_legal_name, s.seller_tax_number, s.seller_tax_office) == (
        "Çağlayan Öğüt Şirketi Ltd. Şti.", "4540536920", "Karşıyaka")


@pytest.mark.parametrize("missing", ["SELLER_LEGAL_NAME", "SELLER_ADDRESS", "SELLER_TAX_OFFICE", "SELLER_TAX_NUMBER"])
def test_production_refuses_to_start_without_the_sellers_legal_details(tmp_path, missing):
    env = {k: v for k, v in PRODUCTION_SELLER.items() if k != missing}
    with pytest.raises(ConfigError, match=f"{missing} is not set"):
        load(tmp_path, **env)


@pytest.mark.parametrize("override, reason", [
    ({"SELLER_TAX_NUMBER": "4540536921"}, "check digits"),
    ({"SELLER_TAX_NUMBER": "10000000147"}, "check digits"),
    ({"SELLER_TAX_NUMBER": "12345"}, "10 digits"),
    ({"SELLER_MERSIS": "12"}, "16-digit"),
    ({"SELLER_EMAIL": "not an address"}, "SELLER_EMAIL"),
    ({"SELLER_LOGO": "/nonexistent/logo.png"}, "not a readable file"),
    ({"SELLER_NAME": "Another Name Ltd."}, "both set and differ"),
])
def test_bad_seller_details_are_refused(tmp_path, override, reason):
    with pytest.raises(ConfigError, match=reason):
        load(tmp_path, **{**PRODUCTION_SELLER, **override})


def test_the_old_setting_names_still_work(tmp_path):
    s = load(tmp_path, SELLER_NAME="Eski Ad Ltd.", SELLER_TAX_ID="454 053 69 20", SELLER_TAX_OFFICE="Kadıköy")
    assert (s.seller_name, s.seller_tax_id) == ("Eski Ad Ltd.", "4540536920")
    assert load(tmp_path).seller_name == "PayTR Billing Demo Ltd. Şti."  # development's demo seller
