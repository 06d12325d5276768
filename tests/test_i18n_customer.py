"""The customer's pages in Turkish and English: no English sentence left in a Turkish page,
Turkish formats (14 Aralık 2026, $29,00), the language switch, and PayTR in the customer's
language (get-token `lang`, failure reasons from PayTR's codes, get-token refusals)."""

import re

import pytest
from starlette.testclient import TestClient

from billing import i18n, invoices, payments
from billing.db import rows, scalar, write
from billing.paytr import protocol
from conftest import PASSWORD, post, register, second_browser, visible
from i18n_support import english_left
from test_checkout_http import checkout_oid, pay, subscribe

TR = {"Accept-Language": "tr-TR,tr;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}
# Fixture data: the company and the person, as typed at registration.
NAMES = ("Yılmaz Yazılım A.Ş.", "Ayşe Yılmaz", "No:1")  # No:1: the seller's address (settings)


def turkish(response, *also) -> str:
    """Assert the page reads Turkish (<html lang="tr">, no English sentence) and return its text."""
    assert '<html lang="tr">' in response.text, response.text[:200]
    left = english_left(response.text, also_allowed=(*NAMES, *also))
    assert left == [], f"English left in a Turkish page: {left}\n{visible(response)[:3000]}"
    return visible(response)


@pytest.fixture
def tr_owner(client):
    """An owner who registered with a Turkish browser: their saved language is Turkish."""
    client.headers.update(TR)
    assert register(client).status_code == 303
    client.get("/billing/")  # the welcome flash (sign-up's own page, translated on its branch) is shown once
    return client


@pytest.fixture
def en_owner(client):
    client.headers.update(EN)
    assert register(client).status_code == 303
    return client


def pay_starter(client, app, card="4355 0843 5508 4358") -> str:
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid, card=card)
    return oid


# --- public pages ------------------------------------------------------------------------


def test_pricing_in_turkish_and_english(client):
    page = client.get("/pricing", headers=TR)
    text = turkish(page)
    assert "Basit aylık planlar" in text and "14 günlük ücretsiz deneme" in text
    assert "$29,00" in text and "Ücretsiz denemeyi başlat" in text and "Sınırsız çalışma alanı" in text
    english = visible(client.get("/pricing", headers=EN))
    assert "Simple monthly plans" in english and "14-day free trial" in english and "$29.00" in english
    assert '<html lang="en">' in client.get("/pricing", headers=EN).text


def test_no_accept_language_is_the_default_locale_english(client):
    page = client.get("/pricing")
    assert '<html lang="en">' in page.text and "Simple monthly plans" in page.text


def test_error_pages_in_turkish(settings, clock, client):
    page = client.get("/no/such/page", headers=TR)
    assert page.status_code == 404
    assert "Sayfa bulunamadı" in turkish(page) and "Ana sayfaya git" in visible(page)
    from starlette.routing import Route

    from billing.app import create_app

    app = create_app(settings, clock=clock)

    async def explode(request):
        raise RuntimeError("secret internal detail")

    app.router.routes.append(Route("/explode", explode))
    with TestClient(app, raise_server_exceptions=False) as c:
        failed = c.get("/explode", headers=TR)
    assert failed.status_code == 500
    assert "Bizim tarafımızda bir sorun oluştu" in turkish(failed)
    assert "Hata kaydedildi" in visible(failed)


def test_portal_expired_page_in_turkish(client):
    page = client.get("/portal/no-such-token", headers=TR)
    assert page.status_code == 410
    text = turkish(page)
    assert "Bu bağlantının süresi doldu." in text


# --- the dashboard in each state ---------------------------------------------------------


def test_trial_dashboard_in_turkish(tr_owner, clock):
    text = turkish(tr_owner.get("/billing/"))
    assert "Deneme süresi" in text and "Ücretsiz deneme sürenizin bitmesine 14 gün kaldı" in text
    assert re.search(r"\d{1,2} (Aralık|Ocak) 202\d tarihinde sona erer", text)
    assert "Bir plan seçin" in text and "Henüz ödeme yok" in text and "$29,00" in text


def test_plurals_one_day_and_many_days():
    with i18n.using("tr"):
        assert i18n.ngettext("%(num)d-day free trial", "%(num)d-day free trial", 1) == "1 günlük ücretsiz deneme"
        assert i18n.ngettext("%(num)d workspace", "%(num)d workspaces", 3) == "3 çalışma alanı"
    with i18n.using("en"):
        assert i18n.ngettext("%(num)d workspace", "%(num)d workspaces", 1) == "1 workspace"
        assert i18n.ngettext("%(num)d workspace", "%(num)d workspaces", 3) == "3 workspaces"


def test_active_dashboard_invoice_and_payment_result_in_turkish(tr_owner, app, db):
    oid = pay_starter(tr_owner, app)
    result = tr_owner.get(f"/billing/payment/success?oid={oid}")
    text = turkish(result)
    assert "Starter planınız etkin" in text and "Ödemeniz alındı, teşekkürler." in text

    dashboard = turkish(tr_owner.get("/billing/"))
    assert "Etkin" in dashboard and "Ödendi" in dashboard and "$29,00" in dashboard
    assert "Aboneliği iptal et" in dashboard and "Planı değiştir" in dashboard
    assert "Team planına yükselt" in dashboard

    number = scalar(db, "SELECT number FROM invoices")
    invoice = turkish(tr_owner.get(f"/billing/invoices/{number}"))
    for phrase in (f"Fatura {number}", "Ara toplam", "KDV %20", "Toplam", "$24,17", "$4,83", "$29,00",
                   "Alıcı", "Açıklama", "Birim fiyat", "Fiyatlara KDV dahildir"):
        assert phrase in invoice, phrase
    # One date style in the whole document: "11 Aralık 2026", never "11.12.2026".
    assert "Starter planı, 11 Aralık 2026 – 11 Ocak 2027" in invoice
    assert not re.search(r"\d{2}\.\d{2}\.\d{4}", invoice)


def test_invoice_in_english_keeps_one_date_style(en_owner, app, db):
    pay_starter(en_owner, app)
    number = scalar(db, "SELECT number FROM invoices")
    invoice = visible(en_owner.get(f"/billing/invoices/{number}"))
    assert "Starter plan, 11 December 2026 – 11 January 2027" in invoice and "VAT 20%" in invoice
    assert not re.search(r"\d{2}\.\d{2}\.\d{4}", invoice)


def test_change_plan_cancel_and_renew_pages_in_turkish(tr_owner, app):
    pay_starter(tr_owner, app)
    change = turkish(tr_owner.get("/billing/plan/team"))
    assert "Team planına geç" in change and "Starter planındasınız" in change and "/ ay" in change
    assert "Şimdi ilk ücretli döneminiz (11 Aralık 2026 – 11 Ocak 2027) için ödersiniz" in change  # paid in the trial
    cancel = turkish(tr_owner.get("/billing/cancel"))
    assert "Starter planınızı iptal etmek istiyor musunuz?" in cancel and "11 Ocak 2027" in cancel
    renew = turkish(tr_owner.get("/billing/renew"))
    assert "Gelecek ayı ödeyin" in renew and "$29,00 öde" in renew


def test_cancel_flash_and_canceled_dashboard_in_turkish(tr_owner, app, db):
    pay_starter(tr_owner, app)
    post(tr_owner, "/billing/cancel", token_from="/billing/cancel")
    text = turkish(tr_owner.get("/billing/"))
    assert "Aboneliğiniz ödenmiş dönemin sonunda sona erecek." in text
    assert "11 Ocak 2027 tarihinde sona erer." in text and "Aboneliği sürdür" in text
    with write(db):
        db.conn.execute("UPDATE subscriptions SET status = 'canceled'")
    ended = turkish(tr_owner.get("/billing/"))
    assert "Aboneliğiniz sona erdi." in ended and "İptal edildi" in ended


def test_past_due_dashboard_and_banner_in_turkish(tr_owner, app, db):
    pay_starter(tr_owner, app)
    with write(db):
        db.conn.execute("UPDATE subscriptions SET status = 'past_due', past_due_since = current_period_end")
    page = tr_owner.get("/billing/")
    text = turkish(page)
    assert "Ödeme gecikti" in text and "Şimdi öde" in text
    assert "Ödemenizin son günü 11 Ocak 2027 idi." in text  # the banner on every page
    renew = turkish(tr_owner.get("/billing/renew"))
    assert "Gecikmiş ayınızı ödeyin" in renew and "Ödemeniz gecikti." in renew


def test_billing_details_page_and_its_errors_in_turkish(tr_owner):
    text = turkish(tr_owner.get("/billing/details"), "Kadıköy")
    assert "Fatura bilgileri" in text and "Vergi dairesi" in text and "Neden istiyoruz" in text
    answer = post(tr_owner, "/billing/details", {"tax_id": "123", "address": "Moda Cad. 1"},
                  token_from="/billing/details")
    assert answer.status_code in (200, 400, 422)
    assert "Vergi numarası 10 hanelidir (VKN)" in visible(answer)


def test_timeline_in_turkish(tr_owner, app, db):
    pay_starter(tr_owner, app)
    page = tr_owner.get("/billing/timeline")
    # Email subjects are the emails' own (their helper translates them): not checked here.
    html = re.sub(r"“[^”]*”", "", page.text)
    text = turkish(type("R", (), {"text": html})())
    assert "Faturalandırma geçmişi" in text and "Hesap açıldı: ücretsiz deneme süreniz başladı (14 gün)" in text
    assert "Starter planına abone oldunuz: $29,00 ödendi" in text and "Bugün" in text
    assert "INV-2026-000001 numaralı fatura düzenlendi: $29,00" in text and "Size e-posta gönderdik" in text
    assert "Tümü" in text and "Plan değişiklikleri" in text  # the filter


def test_timeline_falls_back_to_the_stored_message_for_unknown_kinds():
    from billing import timeline

    event = {"id": 7, "created_at": "2026-12-01T09:00:00Z", "actor": "paytr", "data": "{}"}
    with i18n.using("tr"):
        assert timeline.event_entry({**event, "kind": "something.new", "message": "As stored"}, {}, {}).text == \
            "As stored"
        entry = timeline.event_entry({**event, "kind": "payment.failed", "message": "Payment failed: Kart reddedildi",
                                      "data": '{"reason_code": "0"}'}, {}, {})
        assert entry.text.startswith("Bir ödeme gerçekleşmedi. Bankanız ödemeyi reddetti.")
        assert ("PayTR’nin mesajı", "Kart reddedildi") in entry.tech  # for staff only


# --- PayTR: language, failures, refusals -------------------------------------------------


@pytest.mark.parametrize("owner, lang", [("tr_owner", "tr"), ("en_owner", "en")])
def test_get_token_sends_the_customers_language(owner, lang, app, request):
    browser = request.getfixturevalue(owner)  # signs up (and starts the app) first
    sent = []
    original = app.state.paytr.get_token

    async def spy(token_request):
        sent.append(dict(token_request))
        return await original(token_request)

    app.state.paytr.get_token = spy
    subscribe(browser)
    assert sent and sent[0]["lang"] == lang


def test_the_protocol_keeps_lang_to_tr_or_en():
    fields = dict(merchant_id="1", key="k", salt="s", user_ip="1.2.3.4", merchant_oid="X1", email="a@b.c",
                  amount=2900, currency="USD", basket="W10=", test_mode=True, user_name="A", user_address="B",
                  user_phone="0", ok_url="http://x/ok", fail_url="http://x/fail")
    assert protocol.get_token_request(**fields, lang="en")["lang"] == "en"
    assert protocol.get_token_request(**fields, lang="de")["lang"] == "tr"
    # lang is not part of the token: the same order signs the same in either language
    assert protocol.get_token_request(**fields, lang="en")["paytr_token"] == \
        protocol.get_token_request(**fields)["paytr_token"]


def test_failure_reasons_are_our_sentences_in_both_languages():
    with i18n.using("tr"):
        assert payments.failure_reason("0") == \
            "Bankanız ödemeyi reddetti. Lütfen başka bir kart deneyin ya da nedenini bankanıza sorun."
        assert payments.failure_reason({"failed_reason_code": "6"}).startswith("Ödeme sayfası")
        assert payments.failure_reason(None) == "Ödeme reddedildi."
        assert str(payments.CHECKOUT_REFUSED) == "Ödeme sayfası açılamadı; lütfen yeniden deneyin."
    with i18n.using("en"):
        assert payments.failure_reason("10") == "This payment needs 3D Secure. Please try again with 3D Secure."
        assert payments.failure_reason("unknown") == "The payment was declined."
    for code in payments.FAILURE_REASONS:
        with i18n.using("tr"):
            tr = payments.failure_reason(code)
        with i18n.using("en"):
            en = payments.failure_reason(code)
        assert tr != en and english_left(tr) == []


def test_a_declined_payment_in_turkish_shows_our_sentence_not_paytrs(tr_owner, app, db):
    oid = pay_starter(tr_owner, app, card="4000 0000 0000 0002")
    page = tr_owner.get(f"/billing/payment/fail?oid={oid}")
    text = turkish(page)
    assert "Ödemeniz gerçekleşmedi" in text and "Bankanız ödemeyi reddetti." in text
    assert "insufficient funds" not in text  # PayTR's own words stay for staff
    [payment] = rows(db, "SELECT failed_reason_msg FROM payments")
    assert "Kartın bakiyesi yetersiz" in payment["failed_reason_msg"]
    dashboard = turkish(tr_owner.get("/billing/"))
    assert "Başarısız" in dashboard and "Bankanız ödemeyi reddetti." in dashboard
    timeline = visible(tr_owner.get("/billing/timeline"))
    assert "Bankanız ödemeyi reddetti." in timeline
    assert "Kartın bakiyesi yetersiz" not in timeline  # PayTR's words: the staff view's technical detail


def test_a_declined_payment_in_english_is_english(en_owner, app):
    oid = pay_starter(en_owner, app, card="4000 0000 0000 0002")
    text = visible(en_owner.get(f"/billing/payment/fail?oid={oid}"))
    assert "Your payment did not go through" in text and "Your bank declined the payment." in text
    assert "Kartın" not in text


def test_get_token_refusal_in_turkish(tr_owner, app, db):
    app.state.emulator.set_faults(get_token="refuse", refuse_reason="Mağaza API yetkisi kapalı")
    response = subscribe(tr_owner)
    assert response.status_code == 502
    text = turkish(response)
    assert "PayTR ödemenizi başlatamadı" in text and "Ödeme sayfası açılamadı; lütfen yeniden deneyin." in text
    assert "Mağaza API yetkisi kapalı" not in text
    # staff keep PayTR's reason (the payment row, the staff timeline's detail)
    assert "Mağaza API yetkisi kapalı" in scalar(db, "SELECT abandon_reason FROM payments")
    timeline = visible(tr_owner.get("/billing/timeline"))
    assert "Mağaza API yetkisi kapalı" not in timeline  # the staff view's technical detail shows it
    assert "Starter için $29,00 tutarındaki ödeme sayfası ödeme yapılmadan kapandı" in timeline


def test_checkout_page_in_turkish(tr_owner):
    oid = checkout_oid(subscribe(tr_owner))
    text = turkish(tr_owner.get(f"/billing/checkout/{oid}"))
    assert "Starter planı için ödeyin" in text and "Sipariş özeti" in text and "Aylık, KDV dahil" in text


# --- the language switch -----------------------------------------------------------------


def test_language_switch_sets_the_cookie_and_goes_back(client):
    client.get("/pricing", headers=EN)
    answer = post(client, "/language", {"lang": "tr", "next": "/pricing?x=1"}, token_from="/pricing")
    assert answer.status_code == 303 and answer.headers["location"] == "/pricing?x=1"
    assert "lang=tr" in answer.headers["set-cookie"]
    page = client.get("/pricing", headers=EN)  # the cookie wins over the browser's language
    assert "Basit aylık planlar" in turkish(page)
    # a foreign `next` is refused
    away = post(client, "/language", {"lang": "en", "next": "https://evil.example/"}, token_from="/pricing")
    assert away.headers["location"] == "/"


def test_language_switch_needs_csrf(client):
    client.get("/pricing")
    answer = client.post("/language", data={"lang": "tr", "next": "/pricing"}, follow_redirects=False)
    assert answer.status_code in (400, 403)


def test_a_logged_in_users_choice_is_saved(en_owner, db):
    assert "Simple monthly plans" in en_owner.get("/pricing").text
    post(en_owner, "/language", {"lang": "tr", "next": "/billing/"}, token_from="/billing/")
    assert scalar(db, "SELECT locale FROM users WHERE email = 'ayse@example.com'") == "tr"
    # another browser logging in as the same user gets Turkish without any cookie
    other = second_browser(en_owner.app)
    other.headers.update(EN)
    post(other, "/auth/login", {"email": "ayse@example.com", "password": PASSWORD})
    assert '<html lang="tr">' in other.get("/billing/").text


def test_the_switch_is_on_every_page_and_names_each_language_in_itself(client):
    page = client.get("/pricing", headers=TR).text
    assert 'action="/language"' in page and ">English<" in page and ">Türkçe<" in page


def test_line_text_reads_stored_lines_in_the_readers_language():
    with i18n.using("tr"):
        assert invoices.line_text("Team plan, 14.12.2026 – 14.01.2027") == "Team planı, 14 Aralık 2026 – 14 Ocak 2027"
        assert invoices.line_text("Upgrade Starter → Team, 12 of 30 days until 14.01.2027") == \
            "Üst plana geçiş Starter → Team, 14 Ocak 2027 tarihine kadar 30 günün 12 günü"
    with i18n.using("en"):
        assert invoices.line_text("Team plan, 14.12.2026 – 14.01.2027") == \
            "Team plan, 14 December 2026 – 14 January 2027"
        assert invoices.line_text("Something else") == "Something else"
