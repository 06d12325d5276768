"""The accountant's monthly export: what an accountant reads in the CSV and the XLSX, what staff
see before downloading, and the command line."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from billing import accounts
from billing.cli import main as cli_main
from billing.db import write
from billing.documents import export
from tests.conftest import PASSWORD, START, login, make_company, visible

SELLER = {"seller_name": "PayTR Billing Demo Ltd. Şti.", "seller_address": "Büyükdere Cad. No:1, Şişli, İstanbul",
          "seller_tax_id": "1234567890", "seller_tax_office": "Zincirlikuyu"}


def _payment(db, company_id, oid, amount, currency, decided_at):
    return db.conn.execute(
        """INSERT INTO payments (company_id, merchant_oid, kind, plan, amount, currency, test_mode, status, email,
                                 created_at, updated_at, decided_at)
           VALUES (?, ?, 'subscribe', 'team', ?, ?, 1, 'succeeded', 'ayse@example.com', ?, ?, ?)""",
        [company_id, oid, amount, currency, decided_at, decided_at, decided_at]).lastrowid


def add_invoice(db, company, number, issued_at, total, currency="TRY", paid_with="Visa ending 4358", **buyer):
    """An issued invoice as billing/invoices.py writes it (the paths to it are long; its columns are what
    the export reads). 20 % VAT included."""
    net = total * 100 // 120
    year, sequence = int(number[4:8]), int(number[9:])
    with write(db):
        payment_id = _payment(db, company["id"], f"oid{number.replace('-', '')}", total, currency, issued_at)
        row = {"number": number, "year": year, "sequence": sequence, "company_id": company["id"],
               "payment_id": payment_id, "issued_at": issued_at, **SELLER, "buyer_email": "ayse@example.com",
               "buyer_name": "Yılmaz Yazılım A.Ş.", "buyer_address": "Atatürk Cad. 5, Çankaya, Ankara",
               "buyer_tax_office": "Çankaya", "buyer_tax_id": "1234567802", "currency": currency, "net": net,
               "vat": total - net, "vat_rate": "20", "total": total, "paid_with": paid_with, **buyer}
        row["id"] = db.conn.execute(f"INSERT INTO invoices ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                    list(row.values())).lastrowid
    return row


def add_credit_note(db, invoice, number, issued_at, total, reason="Müşteri talebi"):
    """A credit note as a succeeded refund leaves it (helper C builds the issuing; the table is here)."""
    net = total * 100 // 120
    with write(db):
        payment_id = db.conn.execute("SELECT payment_id FROM invoices WHERE id = ?", [invoice["id"]]).fetchone()[0]
        refund_id = db.conn.execute(
            """INSERT INTO refunds (payment_id, company_id, amount, currency, reason, reference_no, request_key,
                                    status, requested_by, created_at, decided_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, 'succeeded', 'staff:1', ?, ?)""",
            [payment_id, invoice["company_id"], total, invoice["currency"], reason, f"ref{number}", f"key{number}",
             issued_at, issued_at]).lastrowid
        row = {"number": number, "year": int(number[3:7]), "sequence": int(number[8:]), "invoice_id": invoice["id"],
               "refund_id": refund_id, "company_id": invoice["company_id"], "issued_at": issued_at, **SELLER,
               **{k: invoice[k] for k in ("buyer_name", "buyer_email", "buyer_address", "buyer_tax_office",
                                          "buyer_tax_id", "currency", "vat_rate")},
               "net": net, "vat": total - net, "total": total, "reason": reason,
               "full_credit": int(total == invoice["total"])}
        db.conn.execute(f"INSERT INTO credit_notes ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))
    return row


@pytest.fixture
def month(db, settings, password_hash):
    """December 2026 in Istanbul (UTC+3), with documents on both sides of each boundary."""
    company = make_company(db, settings, START, password_hash)
    other = make_company(db, settings, START, password_hash)
    # 30 Nov 21:30 UTC is 1 Dec 00:30 in Istanbul: December's. 30 Nov 20:59 UTC is November's.
    november = add_invoice(db, company, "INV-2026-000001", "2026-11-30T20:59:00Z", 34800)
    first = add_invoice(db, company, "INV-2026-000002", "2026-11-30T21:30:00Z", 34800)
    dollars = add_invoice(db, other, "INV-2026-000003", "2026-12-10T09:00:00Z", 2900, currency="USD",
                          paid_with=None, buyer_name="Öztürk Danışmanlık", buyer_address=None,
                          buyer_tax_office=None, buyer_tax_id="10000000146")
    add_credit_note(db, first, "CN-2026-000001", "2026-12-05T08:00:00Z", 12000)
    add_credit_note(db, november, "CN-2026-000002", "2026-12-20T08:00:00Z", 34800)
    last = add_invoice(db, company, "INV-2026-000004", "2026-12-31T20:59:59Z", 118800)  # 23:59:59 on the 31st
    # 31 Dec 21:00 UTC is 1 Jan 2027 in Istanbul: January's, with the new year's numbers.
    add_invoice(db, company, "INV-2027-000001", "2026-12-31T21:00:00Z", 34800)
    return {"company": company, "first": first, "last": last, "dollars": dollars}


def read_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8"), newline=""), delimiter=";"))


def number(text: str) -> Decimal:
    assert "." not in text, f"{text}: Turkish Excel wants a decimal comma and no thousands dot"
    return Decimal(text.replace(",", "."))


def test_rows_are_the_local_month_in_order_with_credit_notes_negative(db, settings, month):
    found = list(export.rows(db, settings, "2026-12"))
    assert [r["number"] for r in found] == ["INV-2026-000002", "CN-2026-000001", "INV-2026-000003",
                                            "CN-2026-000002", "INV-2026-000004"]
    first = found[0]
    assert first["type"] == "Fatura" and str(first["date"]) == "2026-12-01"  # local, not UTC's 30 November
    assert (first["net"], first["vat"], first["total"], first["vat_rate"]) == (
        Decimal("290.00"), Decimal("58.00"), Decimal("348.00"), Decimal(20))
    assert first["merchant_oid"] == "oidINV2026000002" and first["paid_with"] == "Visa ending 4358"
    assert str(first["payment_date"]) == "2026-12-01" and first["original_invoice"] == ""
    credit = found[1]
    assert credit["type"] == "İade Faturası" and credit["original_invoice"] == "INV-2026-000002"
    assert (credit["net"], credit["vat"], credit["total"]) == (Decimal("-100.00"), Decimal("-20.00"),
                                                               Decimal("-120.00"))
    assert credit["merchant_oid"] == "oidINV2026000002"  # the payment the money went back to
    # A November invoice credited in December: the credit note is December's, the invoice is not.
    assert found[3]["original_invoice"] == "INV-2026-000001"
    assert str(found[4]["date"]) == "2026-12-31"
    english = list(export.rows(db, settings, "2026-12", "en"))
    assert [r["type"] for r in english[:2]] == ["Invoice", "Credit note"]
    assert [r["number"] for r in export.rows(db, settings, "2027-01")] == ["INV-2027-000001"]
    assert [r["number"] for r in export.rows(db, settings, "2026-11")] == ["INV-2026-000001"]


def test_csv_opens_in_turkish_excel_and_its_totals_are_the_documents_sum(db, settings, month, tmp_path):
    out = tmp_path / "invoices-2026-12.csv"
    assert export.write_file(out, db, settings, "2026-12", "csv") == 5
    table = read_csv(out.read_bytes())
    header = table[0]
    assert header[:7] == ["Belge türü", "Belge numarası", "Tarih", "Alıcı", "VKN/TCKN", "Vergi dairesi", "Adres"]
    assert "KDV" in header and "KDV oranı (%)" in header and "İlgili fatura" in header
    col = {name: header.index(name) for name in header}
    documents = table[1:6]
    assert table[6] == []  # the totals stand apart
    totals = {row[col["Para birimi"]]: row for row in table[7:]}
    assert set(totals) == {"TRY", "USD"} and all(row[0] == "Toplam" for row in totals.values())
    first = documents[0]
    assert first[:7] == ["Fatura", "INV-2026-000002", "2026-12-01", "Yılmaz Yazılım A.Ş.", "1234567802", "Çankaya",
                         "Atatürk Cad. 5, Çankaya, Ankara"]
    assert [first[col[k]] for k in ("Ara toplam (KDV hariç)", "KDV oranı (%)", "KDV", "Toplam")] == [
        "290,00", "20", "58,00", "348,00"]
    assert documents[1][0] == "İade Faturası" and documents[1][col["Toplam"]] == "-120,00"
    assert documents[2][col["Alıcı"]] == "Öztürk Danışmanlık" and documents[2][col["Ödeme aracı"]] == ""
    for currency, row in totals.items():
        for name in ("Ara toplam (KDV hariç)", "KDV", "Toplam"):
            expected = sum(number(d[col[name]]) for d in documents if d[col["Para birimi"]] == currency)
            assert number(row[col[name]]) == expected
    # 348 − 120 − 348 + 1188 = 1068 lira of net sales, in the TRY total row; and the page's summary agrees.
    assert totals["TRY"][col["Toplam"]] == "1068,00" and totals["USD"][col["Toplam"]] == "29,00"
    summary = export.summary(db, settings, "2026-12")
    assert (summary["invoices"], summary["credit_notes"]) == (3, 2)
    assert {c["currency"]: c["total"] for c in summary["currencies"]} == {"TRY": 106800, "USD": 2900}


def test_xlsx_has_dates_numbers_and_sum_formulas_per_currency(db, settings, month, tmp_path):
    out = tmp_path / "invoices-2026-12.xlsx"
    export.write_file(out, db, settings, "2026-12", "xlsx", "en")
    sheet = load_workbook(out).active
    table = [list(row) for row in sheet.iter_rows(values_only=True)]
    header = table[0]
    assert header[:3] == ["Document type", "Document number", "Date"] and "VKN/TCKN" in header
    col = {name: header.index(name) for name in header}
    documents = table[1:6]
    assert documents[0][col["Date"]].date().isoformat() == "2026-12-01"  # a real date cell
    assert documents[1][col["Document type"]] == "Credit note" and documents[1][col["Total"]] == -120
    assert sheet.cell(2, col["Total"] + 1).number_format == "#,##0.00"
    totals = [row for row in table[7:] if row[0] == "Total"]
    assert {row[col["Currency"]] for row in totals} == {"TRY", "USD"}
    for row in totals:
        for name in ("Net (excl. VAT)", "VAT", "Total"):
            formula = row[col[name]]
            found = re.fullmatch(r'=SUMIF\(\$(\w)\$2:\$\1\$6,"(\w+)",(\w)2:\3(6)\)', formula)
            assert found and found[2] == row[col["Currency"]], formula
            # What Excel will compute: the sum of that currency's documents.
            letter = found[3]
            index = ord(letter) - ord("A")
            assert index == col[name]
            value = sum(Decimal(str(d[index])) for d in documents if d[col["Currency"]] == found[2])
            assert value == {"TRY": {"Net (excl. VAT)": 890, "VAT": 178, "Total": 1068},
                             "USD": {"Net (excl. VAT)": Decimal("24.16"), "VAT": Decimal("4.84"),
                                     "Total": 29}}[found[2]][name]


def test_an_empty_month_is_a_header_alone(db, settings, tmp_path):
    out = tmp_path / "empty.csv"
    assert export.write_file(out, db, settings, "2026-06", "csv") == 0
    assert len(read_csv(out.read_bytes())) == 1
    export.write_file(tmp_path / "empty.xlsx", db, settings, "2026-06", "xlsx")
    assert load_workbook(tmp_path / "empty.xlsx").active.max_row == 1


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "December", "", "2026-12-01", "1999-12"])
def test_bad_months_are_refused_and_nothing_is_written(db, settings, tmp_path, bad):
    with pytest.raises(export.ExportError, match="is not a month like 2026-12"):
        export.write_file(tmp_path / "x.csv", db, settings, bad, "csv")
    assert list(tmp_path.glob("x.csv*")) == [] and list(tmp_path.glob(".x.csv*")) == []


def test_the_previous_month_is_local_too(settings):
    from billing.clock import parse

    assert export.previous_month(settings, parse("2027-01-15T10:00:00Z")) == "2026-12"
    assert export.previous_month(settings, parse("2026-11-30T21:30:00Z")) == "2026-11"  # 1 Dec in Istanbul


# --- the command line ----------------------------------------------------------------------------


def test_the_command_line_writes_the_file(db, settings, month, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BILLING_DATA_DIR", str(settings.data_dir))
    out = tmp_path / "invoices-2026-12.xlsx"
    assert cli_main(["export", "--month", "2026-12", "--out", str(out)]) == 0  # xlsx from the name
    said = capsys.readouterr().out
    assert "5 documents (3 invoices, 2 credit notes)" in said and "TRY 1068.00" in said and "USD 29.00" in said
    assert load_workbook(out).active.cell(1, 1).value == "Belge türü"
    csv_out = tmp_path / "december.csv"
    assert cli_main(["export", "--month", "2026-12", "--format", "csv", "--out", str(csv_out), "--lang", "en"]) == 0
    assert read_csv(csv_out.read_bytes())[1][0] == "Invoice"


@pytest.mark.parametrize("args, message", [
    (["--month", "2026-13", "--format", "csv"], "is not a month like 2026-12"),
    (["--month", "12/2026", "--format", "csv"], "is not a month like 2026-12"),
    (["--month", "2026-12", "--format", "pdf"], "choose csv, xlsx or zip"),
    (["--month", "2026-12", "--format", "csv", "--lang", "de"], "choose tr or en"),
])
def test_the_command_line_refuses_bad_input_and_writes_nothing(settings, tmp_path, monkeypatch, capsys, args,
                                                               message):
    monkeypatch.setenv("BILLING_DATA_DIR", str(settings.data_dir))
    out = tmp_path / "out.file"
    assert cli_main(["export", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] or not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())


def test_the_command_line_refuses_a_missing_directory(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BILLING_DATA_DIR", str(settings.data_dir))
    assert cli_main(["export", "--month", "2026-12", "--out", str(tmp_path / "nope" / "x.csv")]) == 2
    assert "there is no directory" in capsys.readouterr().err


# --- the staff page ------------------------------------------------------------------------------


def staff_login(client, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    assert login(client, "ops@example.com").status_code == 303


def test_staff_see_the_month_then_download_both_files(client, db, password_hash, month):
    staff_login(client, db, password_hash)
    assert "/admin/exports" in client.get("/admin/").text
    page = client.get("/admin/exports", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and 'value="2026-10"' in page.text  # START is 27 Nov: October is done
    page = client.get("/admin/exports?month=2026-12")
    words = visible(page)
    assert "3 invoices · 2 credit notes" in words
    assert "₺1,068.00" in words and "$29.00" in words
    csv_file = client.get("/admin/exports/invoices-2026-12.csv?lang=tr")
    assert csv_file.status_code == 200 and csv_file.headers["cache-control"] == "no-store"
    assert 'filename="invoices-2026-12.csv"' in csv_file.headers["content-disposition"]
    table = read_csv(csv_file.content)
    assert table[1][:3] == ["Fatura", "INV-2026-000002", "2026-12-01"] and table[-1][0] == "Toplam"
    assert [row[1] for row in table[1:6]] == ["INV-2026-000002", "CN-2026-000001", "INV-2026-000003",
                                              "CN-2026-000002", "INV-2026-000004"]
    xlsx = client.get("/admin/exports/invoices-2026-12.xlsx?lang=en")
    assert xlsx.status_code == 200 and xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert load_workbook(io.BytesIO(xlsx.content)).active.cell(2, 2).value == "INV-2026-000002"
    assert list(client.app.state.settings.data_dir.glob(".export-*")) == []  # the temporary file is gone


def test_the_page_speaks_turkish_and_refuses_a_bad_month(client, db, password_hash, month):
    staff_login(client, db, password_hash)
    client.cookies.set("lang", "tr")
    page = client.get("/admin/exports?month=2026-12")
    words = visible(page)
    assert "Muhasebe dışa aktarımı" in words and "3 fatura · 2 iade faturası" in words and "₺1.068,00" in words
    assert "Aralık 2026" in words  # the month named in the reader's language, not "2026-12"
    bad = client.get("/admin/exports?month=2026-13")
    assert bad.status_code == 422 and "2026-13" in visible(bad) and "2026-12 gibi bir ay değil" in visible(bad)
    assert client.get("/admin/exports/invoices-2026-13.csv").status_code == 404
    assert client.get("/admin/exports/invoices-2026-12.pdf").status_code == 404


def test_customers_and_visitors_cannot_export(client, db, settings, password_hash, month):
    assert client.get("/admin/exports", follow_redirects=False).status_code == 303
    assert client.get("/admin/exports/invoices-2026-12.csv", follow_redirects=False).status_code == 303
    # A customer (the owner whose invoices these are) is refused, with no file.
    assert login(client, month["company"]["email"], PASSWORD).status_code == 303
    for path in ("/admin/exports", "/admin/exports/invoices-2026-12.csv"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 403 and "for the operator's staff" in visible(answer)
        assert "INV-2026" not in answer.text and "attachment" not in answer.headers.get("content-disposition", "")


def test_the_months_pdfs_as_a_zip(app, client, db, settings, password_hash):
    """The accountant's ZIP: one PDF per invoice and credit note of the month, named by number."""
    import io
    import zipfile

    import pypdf

    from billing.documents import archive
    from conftest import register
    from test_checkout_http import checkout_oid, pay, subscribe
    from billing import accounts
    from conftest import START, login, second_browser
    from test_refunds import refund

    register(client)
    pay(client, app, checkout_oid(subscribe(client)))
    invoice = db.execute("SELECT number, issued_at, payment_id FROM invoices").fetchone()
    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi", password_hash=password_hash)
    staff = second_browser(app)
    login(staff, email="ops@example.com")
    refund(staff, {"id": invoice[2]}, amount="10.00")
    note = db.execute("SELECT number FROM credit_notes").fetchone()[0]
    out = io.BytesIO()
    assert archive.month_zip(db, settings, invoice[1][:7], out) == 2
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as zipped:
        assert sorted(zipped.namelist()) == sorted([f"{invoice[0]}.pdf", f"{note}.pdf"])
        texts = {name: pypdf.PdfReader(io.BytesIO(zipped.read(name))).pages[0].extract_text()
                 for name in zipped.namelist()}
    assert invoice[0] in texts[f"{invoice[0]}.pdf"] and note in texts[f"{note}.pdf"]
    assert invoice[0] in texts[f"{note}.pdf"]  # the credit note names the invoice it credits
