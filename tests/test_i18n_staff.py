"""The staff's side in Turkish and English: the admin console, refunds, the test clock, API keys,
webhooks, the dev mail viewer, the PayTR emulator's pages, and the JSON API's problem details.

Pages are checked inside <main> (and their <title>): the header and footer belong to base.html,
checked with the customer's pages. The company page's timeline, and the status labels it shares
with the customer's pages, are checked there too; they are cut out or allowed here.
"""

from __future__ import annotations

import html as html_module
import re

import pytest

from api_support import bearer, make_key, new_customer
from billing import accounts, mail, payments, subscriptions
from billing.db import one
from conftest import START, login, post, register, second_browser, visible, wait_for
from i18n_support import ALLOWED, english_left, readable_text
from test_checkout_http import checkout_oid, iframe_src, pay, subscribe
from test_refunds import pay_twice, refund

TR = {"Accept-Language": "tr-TR,tr;q=0.9"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}
# Names in the fixtures, codes and technical words that stay as they are in Turkish text.
NAMES = ("Yılmaz Yazılım A.Ş.", "Operasyon Ekibi", "Ayşe Yılmaz", "AYSE YILMAZ", "Müşteri iki kez ödedi",
         "Production app", "payment.succeeded", "customer.created", "Bearer", "Ctrl+C", "GET", "POST")


def main(response) -> str:
    """What the page itself says: its <title> and its <main>."""
    text = response.text
    title = re.search(r"<title>(.*?)</title>", text, re.S)
    body = re.search(r"<main\b[^>]*>(.*)</main>", text, re.S)
    assert body, text[:300]
    return f"<p>{title.group(1) if title else ''}</p>{body.group(1)}"


def english_words(html: str, also_allowed: tuple[str, ...] = ()) -> list[str]:
    """english_left, word by word: its `[A-Za-z]+` would read the "in" of Turkish "için" (and the
    "i" and "in" of "işin") as English, so Turkish words are taken whole and left out first."""
    text = readable_text(html)
    for name in sorted([*ALLOWED, *also_allowed], key=len, reverse=True):
        text = text.replace(name, " ")
    text = re.sub(r"\S+@\S+|https?://\S+|/\S*|\b[A-Z]{2,}-\d{4}-\d+\b|\b\w*\d\w*\b", " ", text)  # as english_left
    ascii_words = [w for w in re.findall(r"[^\W\d_]+", text) if w.isascii()]
    return english_left(" ".join(ascii_words), also_allowed=also_allowed)


def without_timeline(html: str) -> str:
    return re.sub(r'<section[^>]*aria-labelledby="timeline-heading".*?</section>', "", html, flags=re.S)


def turkish(response, *also) -> str:
    """The page's own words, with no English sentence left; returns them for exact checks."""
    html = main(response)
    left = english_words(html, NAMES + tuple(also))
    assert left == [], f"English left in {response.url}: {left}"
    return visible(type("R", (), {"text": html})())


def labels(*tables) -> tuple[str, ...]:
    """Status labels owned by the customer's side (translated there)."""
    return tuple(str(v) for table in tables for v in table.values())


@pytest.fixture
def staff_tr(app, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi", password_hash=password_hash)
    browser = second_browser(app)
    browser.headers.update(TR)
    assert login(browser, email="ops@example.com").status_code == 303
    return browser


@pytest.fixture
def paid(client, app, db):
    register(client)
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid)
    return one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])


# --- the admin console ----------------------------------------------------------------------------


def test_admin_home_and_its_anomalies_in_turkish(client, app, db, staff_tr):
    pay_twice(client, app)  # a double payment: an anomaly on the home page
    page = staff_tr.get("/admin/")
    text = turkish(page, *labels(subscriptions.STATUS_LABELS))
    assert "Yönetim paneli" in text and "1 şirket" in text and "İncelenmesi gereken ödemeler" in text
    assert "İkinci başarılı ödeme" in text and "Çözüldü olarak işaretle" in text
    assert "Müşteriler" in text and "Tüm e-postalar teslim edildi" in text
    assert '<html lang="tr">' in page.text
    empty = staff_tr.get("/admin/?q=yok-boyle", headers={"HX-Request": "true"})
    assert "“yok-boyle” ile eşleşen müşteri yok" in visible(empty) and english_words(empty.text) == []


def test_company_page_refund_and_its_errors_in_turkish(client, app, db, paid, staff_tr):
    page = staff_tr.get(f"/admin/payments/{paid['id']}/refund")
    text = turkish(page, *labels(payments.STATUS_LABELS), paid["description"] or "")
    assert "Ödeme iadesi" in text and "İade edilebilir $29.00" in text.replace("$29,00", "$29.00")
    assert "İadeyi gözden geçir" in text
    review = post(staff_tr, f"/admin/payments/{paid['id']}/refund",
                  {"amount": "10,50", "reason": "Hizmet kesintisi", "request_key": "tr-review"},
                  token_from=f"/admin/payments/{paid['id']}/refund")
    text = visible(review)  # the email shown is the customer's, in the customer's language (English here)
    assert "İadeyi onayla" in text and "Geri dön" in text and "Müşteri şu e-postayı alacak:" in text

    bad = refund(staff_tr, paid, amount="abc", reason="")
    assert bad.status_code == 422
    text = turkish(bad, *labels(payments.STATUS_LABELS), paid["description"] or "")
    assert "İade edilecek tutarı girin, örneğin 29,00." in text
    assert "Nedenini yazın: müşteri bunu iade e-postasında görür ve kayıtlarda kalır." in text
    too_much = refund(staff_tr, paid, amount="500")
    assert "En fazla" in visible(too_much) and "iade edilebilir." in visible(too_much)

    done = refund(staff_tr, paid, amount="10.50")
    company = staff_tr.get(done.headers["location"])
    html = without_timeline(main(company))
    left = english_words(html, NAMES + labels(payments.STATUS_LABELS, subscriptions.STATUS_LABELS)
                         + (paid["description"] or "",))
    assert left == [], left
    text = visible(type("R", (), {"text": html})())
    assert "iade edildi. Müşteriye e-posta gönderilecek." in text and "İadeler" in text
    assert "Ücretsiz gün tanımla" in text and "Aboneliği iptal et" in text and "Yönetici işlemleri" in text
    assert "PayTR iadeyi kabul etti." not in text  # a succeeded refund shows no message


def test_extending_a_trial_says_so_in_turkish_with_a_turkish_date(client, app, db, staff_tr):
    register(client)
    company_id = one(db, "SELECT id FROM companies")["id"]
    page = staff_tr.get(f"/admin/companies/{company_id}")
    text = visible(type("R", (), {"text": without_timeline(main(page))})())
    assert "Aralık 2026" in text and "Deneme süresi" in text
    bad_days = post(staff_tr, f"/admin/companies/{company_id}/extend-trial", {"days": "0", "reason": "Destek talebi"},
                    token_from=f"/admin/companies/{company_id}")
    assert bad_days.status_code == 422 and "1 ile 90 arasında bir gün sayısı girin." in visible(bad_days)
    done = post(staff_tr, f"/admin/companies/{company_id}/extend-trial", {"days": "1", "reason": "Destek talebi"},
                token_from=f"/admin/companies/{company_id}")
    after = visible(staff_tr.get(done.headers["location"]))
    assert re.search(r"Deneme süresi 1 gün uzatıldı, \d+ Aralık 2026 tarihine kadar\.", after), after


def test_test_clock_in_turkish(client, staff_tr):
    page = staff_tr.get("/admin/clock")
    text = turkish(page)
    assert "Test saati" in text and "Saati ileri al" in text and "hiç: gerçek zaman" in text
    moved = post(staff_tr, "/admin/clock", {"advance": "2d", "action": "advance"}, token_from="/admin/clock")
    text = turkish(moved)
    assert "İşler" in text and "itibarıyla çalıştı" in text and "0 abonelik incelendi" in text
    bad = post(staff_tr, "/admin/clock", {"advance": "soon", "action": "advance"}, token_from="/admin/clock")
    assert bad.status_code == 422
    assert "'soon', 8d, 36h ya da 90m gibi bir süre değil." in turkish(bad)


def test_how_far_ahead_the_clock_is_in_both_languages():
    from datetime import timedelta

    from billing import i18n
    from billing.web.admin import _ahead

    with i18n.using("tr"):
        assert _ahead(timedelta(days=1)) == "1 gün" and _ahead(timedelta(days=8, hours=5)) == "8 gün 5 sa"
    with i18n.using("en"):
        assert _ahead(timedelta(days=1)) == "1 day" and _ahead(timedelta(days=8, hours=5)) == "8 days 5 h"


def test_api_keys_pages_in_turkish(app, staff_tr):
    empty = staff_tr.get("/admin/api-keys")
    assert "Henüz API anahtarı yok" in turkish(empty)
    created = post(staff_tr, "/admin/api-keys", {"name": "Production app", "scope": "read"},
                   token_from="/admin/api-keys")
    text = turkish(created)
    assert "Production app anahtarını şimdi kopyalayın" in text and "Yalnızca okuma" in text
    key_id = re.search(r'href="/admin/api-keys/(\d+)/revoke"', created.text).group(1)
    confirm = staff_tr.get(f"/admin/api-keys/{key_id}/revoke")
    assert "Production app iptal edilsin mi?" in turkish(confirm)
    done = post(staff_tr, f"/admin/api-keys/{key_id}/revoke", token_from=f"/admin/api-keys/{key_id}/revoke")
    assert "iptal edildi. Bundan sonra bu anahtarla gelen istekler reddedilir." in visible(
        staff_tr.get(done.headers["location"]))


def test_webhook_pages_in_turkish(staff_tr):
    page = staff_tr.get("/admin/webhooks")
    text = turkish(page)
    assert "Henüz uç nokta yok" in text and "Bir ödeme reddedildi." in text and "Uç nokta ekle" in text
    bad = post(staff_tr, "/admin/webhooks", {"url": "ftp://nope"}, token_from="/admin/webhooks")
    assert bad.status_code == 422 and "URL https:// ile başlamalı" in turkish(bad)
    added = post(staff_tr, "/admin/webhooks", {"url": "http://127.0.0.1:9/hooks", "events": "payment.succeeded"},
                 token_from="/admin/webhooks")
    assert added.status_code == 201 and "İmza anahtarını şimdi kopyalayın" in turkish(added)
    endpoint = staff_tr.get("/admin/webhooks/1")
    text = turkish(endpoint)
    assert "Gönderim kaydı" in text and "Uç noktayı sil" in text and "Etkin" in text
    refused = post(staff_tr, "/admin/webhooks/1/delete", {}, token_from="/admin/webhooks/1")
    assert "onaylamak için kutuyu işaretleyin" in turkish(refused)


def test_dev_mail_in_turkish(client):
    client.headers.update(TR)
    register(client)
    client.get("/billing/")  # the welcome flash, shown once
    page = wait_for(lambda: (p := client.get("/dev/mail")) and "/dev/mail/" in p.text and p,
                    message="an email to be captured")
    subjects = tuple(html_module.unescape(s) for s in re.findall(r'<a href="/dev/mail/\d+">([^<]+)</a>', page.text))
    text = turkish(page, *subjects)  # the emails' own words are checked with the emails
    assert "Yakalanan e-postalar" in text and "Konu" in text
    message_id = re.search(r'href="/dev/mail/(\d+)"', page.text).group(1)
    message = client.get(f"/dev/mail/{message_id}")
    html = re.sub(r'<pre class="mail-text">.*?</pre>', "", main(message), flags=re.S)
    assert english_words(html, NAMES + subjects) == []
    assert "Düz metin" in visible(message) and "Tüm yakalanan e-postalar" in visible(message)


def test_dev_mail_when_empty_in_turkish(client):
    assert "Henüz e-posta yok" in turkish(client.get("/dev/mail", headers=TR))


# --- the PayTR emulator -------------------------------------------------------------------------------


def test_emulator_pages_in_turkish(client, app):
    client.headers.update(TR)
    empty = client.get("/paytr-emulator/")
    assert '<html lang="tr">' in empty.text
    assert "Henüz işlem yok. Uygulamada bir ödeme başlatın." in turkish(empty)
    register(client)
    oid = checkout_oid(subscribe(client))
    src = iframe_src(client, oid)
    form = client.get(src)
    # PayTR's own decline messages (Turkish, with the English in brackets) are the gateway's words
    declines = ("(insufficient funds)", "(expired card)")
    text = turkish(form, "Starter", *declines)
    assert "Kart bilgileri" in text and "Test kartları" in text and "Kart üzerindeki ad" in text
    wrong = client.post(src, data={"cc_owner": "", "card_number": "1234", "expiry": "13/30", "cvv": "1"})
    assert wrong.status_code == 422
    text = turkish(wrong, "Starter", *declines)
    assert "Kartın üzerinde yazan adı girin." in text and "Bu kart numarası geçerli değil." in text
    paid = pay(client, app, oid)
    assert "Ödeme başarılı" in turkish(paid) and "Mağazaya dön" in visible(paid)
    again = client.get(src)
    assert again.status_code == 409 and "Ödeme zaten işlendi" in turkish(again)
    listing = client.get("/paytr-emulator/")
    text = turkish(listing, "Visa")
    assert "İşlemler" in text and "başarılı" in text and "Arızaları kaydet" in text
    detail = client.get(f"/paytr-emulator/transactions/{oid}")
    text = turkish(detail, "Visa", "Starter", "AYSE YILMAZ", "ayse@example.com")
    assert "Bildirim" in text and "Bildirimi yeniden gönder" in text and "İade yok." in text
    unknown = client.get("/paytr-emulator/transactions/NOPE")
    assert unknown.status_code == 404 and "Böyle bir işlem yok" in turkish(unknown)
    bad = client.post("/paytr-emulator/faults", data={"callback_delay": "soon"})
    assert bad.status_code == 400 and "callback_delay saniye cinsinden bir sayı olmalı" in visible(bad)


def test_emulator_pages_stay_english_for_an_english_visitor(client):
    page = client.get("/paytr-emulator/", headers=EN)
    assert '<html lang="en">' in page.text and "No transactions yet. Start a checkout in the app." in page.text


# --- the JSON API's problem details --------------------------------------------------------------------


def test_api_problems_in_turkish_with_accept_language_tr(client, app):
    no_key = client.get("/api/v1/plans", headers=TR)
    body = no_key.json()
    assert no_key.status_code == 401 and body["title"] == "Geçerli bir API anahtarı gerekli"
    assert body["detail"] == "API anahtarınızı `Authorization: Bearer <key>` olarak gönderin."
    assert body["type"] == "http://testserver/api/docs#problem-unauthorized"  # stays as it is
    key = make_key(app)
    missing = client.get("/api/v1/customers/cus_999", headers={**TR, **bearer(key)}).json()
    assert missing["title"] == "Bulunamadı" and missing["detail"] == "cus_999 diye bir müşteri yok."
    invalid = client.post("/api/v1/customers", json={"name": "Firma", "locale": "fr", "colour": "mavi"},
                          headers={**TR, **bearer(key)})
    body = invalid.json()
    assert invalid.status_code == 422 and body["title"] == "İstekte geçersiz alanlar var"
    assert body["errors"][0]["field"] == "colour"  # field names stay English
    assert body["errors"][0]["message"].startswith("Bilinmeyen alan; bu uç nokta şu alanları alır:")
    invalid = client.post("/api/v1/customers", json={"name": "Firma", "locale": "fr"}, headers={**TR, **bearer(key)})
    fields = {e["field"]: e["message"] for e in invalid.json()["errors"]}
    assert fields["locale"] == "locale, tr ya da en olmalı." and fields["external_id"] == "external_id zorunlu."
    media = client.post("/api/v1/customers", content=b"x", headers={**TR, **bearer(key), "Content-Type": "text/plain"})
    assert media.json()["title"] == "JSON gönderin"
    route = client.get("/api/v1/nowhere", headers={**TR, **bearer(key)}).json()
    assert route["detail"] == "Bu API’de /api/v1/nowhere yok; /api/v1/openapi.json belgesine bakın."
    new_customer(client, key)
    taken = client.post("/api/v1/customers", json={"external_id": "user_1", "name": "Firma", "email": "x@example.com"},
                        headers={**TR, **bearer(key)}).json()
    assert taken["title"] == "Zaten var" and taken["detail"].startswith("external_id değeri 'user_1' olan bir müşteri")


def test_api_problems_stay_english_without_accept_language_or_with_another_language(client, app):
    assert client.get("/api/v1/plans").json()["title"] == "A valid API key is required"
    german = client.get("/api/v1/plans", headers={"Accept-Language": "de-DE"}).json()
    assert german["title"] == "A valid API key is required"


def test_the_openapi_document_stays_english_whoever_asks(client):
    document = client.get("/api/v1/openapi.json", headers=TR).json()
    responses = document["paths"]["/api/v1/customers"]["post"]["responses"]
    assert responses["401"]["description"] == "A valid API key is required"


def test_api_docs_page_headings_in_turkish(client):
    page = client.get("/api/docs", headers=TR)
    text = visible(page)
    assert "API başvuru kılavuzu" in text and "İçindekiler" in text and "Genel bakış" in text
    assert "Geçerli bir API anahtarı gerekli" in text  # the error titles the API answers with
    assert "İngilizcedir" in text  # says that the reference itself is English


# --- and the same pages in English ------------------------------------------------------------------------


def test_staff_pages_still_read_english(client, app, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi", password_hash=password_hash)
    browser = second_browser(app)
    browser.headers.update(EN)
    login(browser, email="ops@example.com")
    assert "Customers" in visible(browser.get("/admin/")) and '<html lang="en">' in browser.get("/admin/").text
    assert "Move this app's time forward" in visible(browser.get("/admin/clock"))
    assert "No endpoints yet" in visible(browser.get("/admin/webhooks"))
    assert "A payment was declined." in visible(browser.get("/admin/webhooks"))
    assert "Create a key" in visible(browser.get("/admin/api-keys"))
    assert "Captured mail" in visible(browser.get("/dev/mail"))


def test_a_staff_members_saved_language_wins(client, app, db, password_hash):
    staff = accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi",
                                  password_hash=password_hash)
    accounts.set_locale(db, staff["id"], "tr")
    browser = second_browser(app)
    browser.headers.update(EN)
    login(browser, email="ops@example.com")
    assert "Yönetim paneli" in visible(browser.get("/admin/"))
