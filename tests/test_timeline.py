"""The timeline's sentences, folding, day groups and filter (billing/timeline.py), from rows made here,
in both languages; then the customer's and the staff's timeline pages, by what they say."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from billing import i18n, timeline
from billing.db import one, rows
from conftest import login, post, register, visible
from test_lifecycle import pay_iframe, pay_saving_card, sub, tick

IST = ZoneInfo("Europe/Istanbul")
SETTINGS = SimpleNamespace(tz=IST)
CATALOG = {"starter": SimpleNamespace(name="Starter"), "team": SimpleNamespace(name="Team")}
NOW = datetime(2027, 1, 14, 12, 0, tzinfo=timezone.utc)  # 15:00 in Istanbul


def event(id, at, kind, actor="paytr", message="", **data):
    return {"id": id, "created_at": at, "actor": actor, "kind": kind, "message": message, "data": json.dumps(data)}


def payment(id, oid, kind, status, at, plan="starter", amount=2900, **extra):
    return {"id": id, "merchant_oid": oid, "kind": kind, "method": "recurring", "plan": plan, "amount": amount,
            "currency": "USD", "status": status, "created_at": at, "decided_at": at, "failed_reason_code": None,
            "failed_reason_msg": None, "abandon_reason": None, **extra}


def email(id, at, template, subject, to="ayse@example.com", status="sent", attempts=1):
    return {"id": id, "created_at": at, "sent_at": at if status == "sent" else None, "template": template,
            "to_addr": to, "subject": subject, "body_html": "<p></p>", "status": status, "attempts": attempts,
            "last_error": None, "pruned_at": None}


def sources(events=(), payments=(), invoices=(), credit_notes=(), emails=()):
    # Newest first, as `read` returns them.
    return timeline.Sources(events=list(reversed(events)), payments=list(reversed(payments)),
                            invoices=list(reversed(invoices)), credit_notes=list(reversed(credit_notes)),
                            emails=list(reversed(emails)), catalog=CATALOG)


def renewal_history():
    """A renewal by the saved card: four events, a payment, an invoice and its receipt in one instant."""
    at = "2027-01-14T09:00:00Z"
    oid = "PB1RENEWAL"
    return sources(
        events=[event(12, at, "renewal.charge_started", "system", merchant_oid=oid, attempt=0),
                event(13, at, "subscription.active", plan="starter", previous="past_due"),
                event(14, at, "payment.succeeded", merchant_oid=oid, amount=2900, invoice="INV-2027-000001")],
        payments=[payment(4, oid, "renewal", "succeeded", at)],
        invoices=[{"id": 2, "number": "INV-2027-000001", "issued_at": at, "total": 2900, "currency": "USD",
                   "payment_id": 4, "paid_with": "Visa ending 4358"}],
        emails=[email(7, at, "payment_succeeded", "Renewed: Starter plan, invoice INV-2027-000001")])


# --- sentences and folding --------------------------------------------------------------------


@pytest.mark.parametrize("locale, renewed, invoice, emailed", [
    ("en", "Your Starter plan renewed: $29.00 paid with Visa ending 4358", "Invoice INV-2027-000001 issued: $29.00",
     "We emailed you: “Renewed: Starter plan, invoice INV-2027-000001”"),
    ("tr", "Starter planınız yenilendi: Visa •••• 4358 ile $29,00 ödendi",
     "INV-2027-000001 numaralı fatura düzenlendi: $29,00",
     "Size e-posta gönderdik: “Renewed: Starter plan, invoice INV-2027-000001”"),
])
def test_a_renewal_is_one_payment_sentence_an_invoice_and_an_email(locale, renewed, invoice, emailed):
    with i18n.using(locale):
        found = timeline.entries(renewal_history(), SETTINGS, viewer_email="ayse@example.com")
    assert [e.text for e in found] == [renewed, invoice, emailed]  # 7 rows, 3 happenings
    paid = found[0]
    assert paid.groups == {timeline.PAYMENTS, timeline.PLAN}  # it renewed the plan, too
    assert paid.badge == "succeeded"
    kinds = " ".join(value for _label, value in paid.tech)
    for raw in ("PB1RENEWAL", "#12 renewal.charge_started", "#13 subscription.active", "#14 payment.succeeded"):
        assert raw in kinds  # the staff's detail keeps every trace
    assert not re.search(r"\b(payment|subscription|renewal)\.[a-z_]+", " ".join(e.text for e in found))


def test_a_failed_renewal_tells_our_reason_and_keeps_paytrs_words_for_staff():
    at = "2027-01-11T09:00:00Z"
    src = sources(
        events=[event(8, at, "payment.failed", message="Payment failed: Kartın bakiyesi yetersiz",
                      merchant_oid="PB1FAIL", reason_code="0"),
                event(9, at, "subscription.past_due", plan="starter", previous="active")],
        payments=[payment(2, "PB1FAIL", "renewal", "failed", at, failed_reason_code="0",
                          failed_reason_msg="Kartın bakiyesi yetersiz")])
    for locale, start, note in (("en", "The $29.00 renewal of your Starter plan did not go through. Your bank declined",
                                 "Your subscription is past due until the renewal is paid"),
                                ("tr", "Starter planınızın $29,00 tutarındaki yenileme ödemesi gerçekleşmedi. Bankanız",
                                 "Yenileme ödenene kadar aboneliğinizin ödemesi gecikmiş sayılır")):
        with i18n.using(locale):
            [entry] = timeline.entries(src, SETTINGS)
        assert entry.text.startswith(start) and entry.notes == [note]
        assert "Kartın bakiyesi yetersiz" not in entry.text
        assert [value for _label, value in entry.tech].count("Kartın bakiyesi yetersiz") == 1  # said once


def test_the_same_email_within_minutes_shows_once_with_how_often():
    emails = [email(1, "2027-01-04T09:00:00Z", "renewal_notice", "Your Starter plan renews on 11 January 2027"),
              email(2, "2027-01-04T09:03:00Z", "renewal_notice", "Your Starter plan renews on 11 January 2027"),
              email(3, "2027-01-04T09:06:00Z", "renewal_notice", "Your Starter plan renews on 11 January 2027",
                    status="pending", attempts=0),
              email(4, "2027-01-04T09:07:00Z", "renewal_notice", "Your Starter plan renews on 11 January 2027",
                    to="mehmet@example.com"),  # someone else: their own line
              email(5, "2027-01-05T09:00:00Z", "renewal_notice", "Your Starter plan renews on 11 January 2027")]
    with i18n.using("en"):
        found = timeline.entries(sources(emails=emails), SETTINGS, viewer_email="Ayse@Example.com")
    assert [(e.text, e.times, e.outbox_id) for e in found] == [
        ("We emailed you: “Your Starter plan renews on 11 January 2027”", 1, 5),  # a day later: another happening
        ("We emailed mehmet@example.com: “Your Starter plan renews on 11 January 2027”", 1, 4),
        ("An email to you is on its way: “Your Starter plan renews on 11 January 2027”", 3, 3),  # the latest's state
    ]
    assert found[2].badge == "pending"
    outboxes = [value for label, value in found[2].tech if label == "Outbox"]
    assert len(outboxes) == 3 and outboxes[0].startswith("#1 renewal_notice")


def test_an_emails_status_is_a_state_not_a_column_heading_and_an_erased_address_is_not_shown():
    with i18n.using("tr"):
        assert [timeline.email_status_label(s) for s in ("pending", "sent", "failed")] == [
            "Bekliyor", "Gönderildi", "Gönderilemedi"]  # the bare "Sent" is the "Gönderim tarihi" column
        erased = {**email(1, "2027-01-04T09:00:00Z", "welcome", "Hoş geldiniz"), "to_addr": ""}
        assert timeline.email_text(erased, "Hoş geldiniz", None) == "Bir e-posta gönderdik: “Hoş geldiniz”"


def test_a_refunds_steps_fold_into_one_line_in_its_latest_state():
    src = sources(events=[
        event(20, "2027-01-20T09:00:00Z", "refund.requested", "staff:9", merchant_oid="PB1", amount=1050,
              reference_no="R1"),
        event(21, "2027-01-20T09:00:02Z", "refund.succeeded", merchant_oid="PB1", amount=1050, reference_no="R1")],
        payments=[payment(1, "PB1", "subscribe", "succeeded", "2027-01-01T09:00:00Z")])
    with i18n.using("en"):
        found = timeline.entries(src, SETTINGS)
    assert [e.text for e in found] == ["$10.50 refunded to your card",
                                       "You subscribed to the Starter plan: $29.00 paid"]
    with i18n.using("tr"):
        assert timeline.entries(src, SETTINGS)[0].text == "$10,50 kartınıza iade edildi"


@pytest.mark.parametrize("kind, data, actor, english, turkish", [
    ("company.registered", {"trial_ends_at": "2026-12-11T09:00:00Z"}, "user:1",
     "Account opened: your free trial started (14 days)", "Hesap açıldı: ücretsiz deneme süreniz başladı (14 gün)"),
    ("subscription.cancel_scheduled", {}, "user:1", "You canceled: your subscription ends with the paid period",
     "İptal ettiniz: aboneliğiniz ödenmiş dönemin sonunda sona erecek"),
    ("subscription.cancel_scheduled", {}, "staff:2", "Our team canceled your subscription: it ends with the paid period",
     "Ekibimiz aboneliğinizi iptal etti: ödenmiş dönemin sonunda sona erecek"),
    ("subscription.active", {"plan": "team", "previous_plan": "starter", "previous": "active"}, "staff:2",
     "Our team moved you from Starter to Team", "Ekibimiz planınızı Starter planından Team planına geçirdi"),
    ("subscription.days_granted", {"days": 10}, "staff:2", "Our team added 10 free days to your paid period; "
     "the renewal moves with it", "Ekibimiz ödenmiş döneminize 10 ücretsiz gün ekledi; yenileme tarihi de buna göre kaydı"),
    ("card.removed", {"card": "Visa ending 4358"}, "user:1", "Saved card removed: Visa ending 4358",
     "Kayıtlı kart kaldırıldı: Visa •••• 4358"),
    ("team.invited", {"email": "can@example.com"}, "user:1", "can@example.com was invited to your team",
     "can@example.com ekibinize davet edildi"),
    ("user.two_factor_enabled", {}, "user:1", "Two-factor authentication was turned on for a member",
     "Bir üye için iki adımlı doğrulama açıldı"),
])
def test_each_kind_reads_as_a_sentence_in_both_languages(kind, data, actor, english, turkish):
    row = event(1, "2026-11-27T09:00:00Z", kind, actor, message="stored words", **data)
    for locale, expected in (("en", english), ("tr", turkish)):
        with i18n.using(locale):
            assert timeline.event_entry(row, CATALOG, {}).text == expected


def test_every_kind_the_app_records_has_its_own_sentence():
    """No raw kind, and never the stored English message, for a kind written with a company today."""
    source = "\n".join(path.read_text(encoding="utf-8") for path in Path(timeline.__file__).parent.rglob("*.py"))
    kinds = set(re.findall(r'events\.record\(\s*db,\s*\w+,\s*"([a-z_]+\.[a-z_]+)"', source))
    kinds |= {f"subscription.{s}" for s in ("active", "past_due", "canceled", "expired", "trialing", "resumed",
                                            "cancel_scheduled", "downgrade_scheduled", "downgrade_undone")}
    kinds |= {"payment.abandoned", "payment.expired", "anomaly.amount_mismatch"}
    internal = {k for k in kinds if k.split(".")[0] in ("staff", "api_key", "plan", "webhook")}  # no company
    assert len(kinds - internal) > 40
    with i18n.using("tr"):
        for kind in sorted(kinds - internal):
            text = timeline.event_entry(event(1, "2026-11-27T09:00:00Z", kind, message="STORED"), CATALOG, {}).text
            assert text != "STORED" and kind not in text, kind


# --- days and the filter -----------------------------------------------------------------------


def history_over_three_days():
    return [timeline.Entry(at="2027-01-14T11:00:00Z", groups=frozenset({timeline.PAYMENTS}), text="paid"),
            timeline.Entry(at="2027-01-13T21:30:00Z", groups=frozenset({timeline.EMAILS}), text="emailed"),  # 00:30 IST
            timeline.Entry(at="2027-01-13T20:59:00Z", groups=frozenset({timeline.PLAN}), text="changed"),  # 23:59 IST
            timeline.Entry(at="2027-01-02T08:00:00Z", groups=frozenset({timeline.ACCOUNT}), text="opened"),
            timeline.Entry(at="2027-01-01T08:00:00Z", groups=frozenset({timeline.INVOICES}), text="internal",
                           staff_only=True)]


@pytest.mark.parametrize("locale, headings", [
    ("en", ["Today", "Yesterday", "Saturday, 2 January 2027"]),
    ("tr", ["Bugün", "Dün", "2 Ocak 2027 Cumartesi"]),
])
def test_entries_are_grouped_by_day_in_the_companys_time_zone(locale, headings):
    with i18n.using(locale):
        page = timeline.view(history_over_three_days(), NOW, IST)
    # 21:30 UTC on the 13th is already the 14th in Istanbul: "Today".
    assert [d["heading"] for d in page["days"]] == headings
    assert [[(i["time"], i["entry"].text) for i in d["entries"]] for d in page["days"]] == [
        [("14:00", "paid"), ("00:30", "emailed")], [("23:59", "changed")], [("11:00", "opened")]]


def test_the_filter_counts_marks_the_chosen_kind_and_says_when_it_is_empty():
    with i18n.using("en"):
        page = timeline.view(history_over_three_days(), NOW, IST, "emails")
        assert [(f["label"], f["count"], f["current"]) for f in page["filters"]] == [
            ("All", 4, False), ("Payments", 1, False), ("Invoices", 0, False), ("Emails", 1, True),
            ("Plan changes", 1, False), ("Account", 1, False)]  # the staff-only entry is not counted
        assert [i["entry"].text for d in page["days"] for i in d["entries"]] == ["emailed"]
        empty = timeline.view(history_over_three_days(), NOW, IST, "invoices")
        assert empty["days"] == [] and empty["empty"] == "No invoices or credit notes yet."
        assert timeline.view([], NOW, IST, "nonsense")["show"] == ""  # anything else: everything
        staff = timeline.view(history_over_three_days(), NOW, IST, "invoices", staff_view=True)
        assert [i["entry"].text for d in staff["days"] for i in d["entries"]] == ["internal"]
    with i18n.using("tr"):
        page = timeline.view([], NOW, IST, "plan")
        assert [f["label"] for f in page["filters"]] == ["Tümü", "Ödemeler", "Faturalar", "E-postalar",
                                                         "Plan değişiklikleri", "Hesap"]
        assert page["empty"] == "Henüz plan değişikliği yok."


# --- the pages ---------------------------------------------------------------------------------


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def main(response) -> str:
    return response.text[response.text.index("<main"):response.text.index("</main>")]


def test_the_customers_timeline_reads_as_sentences_by_day_and_filters_without_javascript(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    tick(client, app, clock, clock.now())
    page = client.get("/billing/timeline")
    text = visible(page)
    assert "Today" in text and re.search(r"\b\d\d:\d\d\b", text)
    assert "You subscribed to the Starter plan: $29.00 paid with Visa ending 4358" in text
    assert "Card saved: renewals are charged to it from now on" in text  # folded into the payment
    assert "Account opened: your free trial started (14 days)" in text
    assert "We emailed you: “Welcome to PayTR Billing" in text
    assert text.count("$29.00 paid") == 1  # the payment's events are not told again
    html = main(page)
    assert re.search(r'<h2 class="timeline-date"[^>]*><time datetime="\d{4}-\d\d-\d\d">Today</time></h2>', html)
    assert "Technical detail" not in html and "PB1" not in html  # merchant_oid: staff only
    assert re.search(r'<nav class="timeline-filter" aria-label="Show in the timeline">', html)
    assert re.search(r'href="/billing/timeline"[^>]*aria-current="page">All <span class="count">\d+</span>', html)

    payments_only = client.get("/billing/timeline?show=payments")
    shown = visible(payments_only)
    assert "$29.00 paid" in shown and "Welcome to PayTR Billing" not in shown and "Invoice INV" not in shown
    assert re.search(r'href="/billing/timeline\?show=payments"[^>]*aria-current="page">Payments', payments_only.text)
    emails = visible(client.get("/billing/timeline?show=emails"))
    assert "Welcome to PayTR Billing" in emails and "$29.00 paid" not in emails
    plan = visible(client.get("/billing/timeline?show=plan"))
    assert "You subscribed to the Starter plan" in plan and "Account opened" in plan

    # htmx asks for the list alone; the links work without it.
    fragment = client.get("/billing/timeline?show=invoices", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith("<div id=\"timeline\"") and "<html" not in fragment.text
    assert "Invoice INV-2026-000001 issued: $29.00" in visible(fragment)


def test_an_empty_filter_says_so_and_leads_back(client, db):
    register(client)
    for show, words in (("payments", "No payments yet."), ("invoices", "No invoices or credit notes yet."),
                        ("plan", None)):
        text = visible(client.get(f"/billing/timeline?show={show}"))
        if words:
            assert words in text and "Show everything" in text, show
    post(client, "/language", {"lang": "tr", "next": "/billing/"}, token_from="/billing/")
    text = visible(client.get("/billing/timeline?show=payments"))
    assert "Henüz ödeme yok." in text and "Tümünü göster" in text and "Bugün" not in text


def test_the_staff_timeline_shows_the_same_entries_with_technical_detail(client, app, clock, db, password_hash):
    from billing import accounts

    register(client)
    pay_iframe(client, app, card="4000 0000 0000 0002")  # declined
    customer = visible(client.get("/billing/timeline"))
    accounts.create_staff(db, clock.at, email="ops@example.com", name="Ops", password_hash=password_hash)
    client.cookies.clear()
    login(client, email="ops@example.com")
    company_id = one(db, "SELECT id FROM companies")["id"]
    page = client.get(f"/admin/companies/{company_id}")
    html = page.text[page.text.index('aria-labelledby="timeline-heading"'):]
    text = visible(page)
    failed = "A payment of $29.00 for Starter did not go through. Your bank declined the payment."
    assert failed in customer and failed in text
    assert "We emailed ayse@example.com: “Welcome to PayTR Billing" in text  # staff are not "you"
    assert '<h3 class="timeline-date"' in html  # under the page's h2 "Timeline"
    [paid] = rows(db, "SELECT merchant_oid, failed_reason_msg FROM payments")
    [welcome] = rows(db, "SELECT id FROM outbox WHERE template = 'welcome'")
    tech = re.findall(r'<details class="timeline-tech">(.*?)</details>', html, re.S)
    assert tech and all("<summary>Technical detail</summary>" in t for t in tech)
    joined = visible(SimpleNamespace(text=" ".join(tech)))
    assert paid["merchant_oid"] in joined and "payment.failed" in joined and "company.registered" in joined
    assert f"#{welcome['id']} welcome" in joined and paid["failed_reason_msg"] in joined
    assert f"/emails/{welcome['id']}/resend" in html  # "Send again" stays under each email
    filtered = client.get(f"/admin/companies/{company_id}?show=emails")
    assert re.search(rf'href="/admin/companies/{company_id}\?show=emails#timeline-heading"[^>]*aria-current="page"',
                     filtered.text)
    assert failed not in visible(filtered) and "Welcome to PayTR Billing" in visible(filtered)
    assert sub(db)["status"] == "trialing"
