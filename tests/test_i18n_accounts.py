"""Sign-up, login, password reset, invitations, the team and account pages, and every email,
in Turkish and in English."""

import json
import re
from email import message_from_bytes, policy

import pytest
from starlette.testclient import TestClient

from billing import accounts, i18n, mail
from billing.accounts import FormError
from billing.db import one, rows
from conftest import EMAIL_SETTINGS, PASSWORD, login, outbox, post, register, second_browser, visible
from i18n_support import english_left

NAMES = ("Ayşe Yılmaz", "Yılmaz Yazılım A.Ş.", "Deniz Lojistik", "Can Demir", "Acme", "Ayşe", "Visa", "Mastercard")


def turkish(client: TestClient) -> TestClient:
    client.headers["Accept-Language"] = "tr-TR,tr;q=0.9,en;q=0.5"
    return client


def main_part(html: str) -> str:
    """What this area's templates write: a page's <main> (the header and footer around it, and
    the flashes inside it, are tests/test_i18n_customer.py's), or a whole email."""
    found = re.search(r"<main\b.*?</main>", html, re.S)
    return found.group(0) if found else html


def no_english(html: str, *extra: str) -> None:
    assert english_left(main_part(html), also_allowed=(*NAMES, *extra)) == []


# --- the pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/auth/register", "/auth/register?plan=team", "/auth/login",
                                  "/auth/forgot-password"])
def test_auth_pages_in_turkish(client, path):
    page = turkish(client).get(path)
    assert page.status_code == 200 and '<html lang="tr"' in page.text
    no_english(page.text)


def test_auth_pages_in_english_still_read_english(client):
    assert "Start your 14-day free trial" in client.get("/auth/register").text
    assert "Forgot your password?" in client.get("/auth/login").text
    assert "Send reset link" in client.get("/auth/forgot-password").text


def test_register_page_says_it_in_turkish(client):
    page = visible(turkish(client).get("/auth/register?plan=team"))
    assert "14 günlük ücretsiz denemenizi başlatın" in page
    assert "Team planını deniyorsunuz" in page
    assert "Hesap oluştur ve denemeyi başlat" in page


def test_register_form_errors_in_turkish(client):
    turkish(client)
    bad = register(client, company="", name="", email="not-an-email", password="1234567")
    assert bad.status_code == 422
    no_english(bad.text)
    text = visible(bad)
    assert "Şirketinizin adını girin." in text and "Adınızı girin." in text
    assert "Geçerli bir e-posta adresi girin" in text and "En az 8 karakter kullanın." in text
    common = register(client, password="password123")
    assert "Bu şifre çok yaygın" in visible(common)
    no_english(common.text)


def test_registration_in_turkish_saves_the_language_and_sends_a_turkish_welcome(client, db):
    turkish(client)
    done = register(client)
    assert done.status_code == 303
    user = one(db, "SELECT * FROM users WHERE email = ?", ["ayse@example.com"])
    assert user["locale"] == "tr"
    dashboard = client.get("/billing/", headers={"Accept-Language": "en"})  # the saved language wins
    assert '<html lang="tr"' in dashboard.text and "Aramıza hoş geldiniz" in dashboard.text

    [row] = outbox(db, template="welcome")
    assert row["locale"] == "tr"
    assert row["subject"] == "Hoş geldiniz! 14 günlük PayTR Billing deneme süreniz başladı"
    message = message_from_bytes(mail.build_message(row, EMAIL_SETTINGS).as_bytes(), policy=policy.default)
    assert message["Content-Language"] == "tr"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Merhaba Ayşe," in text and "14 günlük ücretsiz deneme" in text
    assert re.search(r"\d{1,2} (Ocak|Şubat|Mart|Nisan|Mayıs|Haziran|Temmuz|Ağustos|Eylül|Ekim|Kasım|Aralık) 20\d\d",
                     text)
    no_english(text)
    no_english(html)
    assert '<html lang="tr">' in html


def test_registration_in_english_keeps_english(client, db):
    register(client)
    assert one(db, "SELECT locale FROM users")["locale"] == "en"
    [row] = outbox(db, template="welcome")
    assert row["subject"] == "Welcome to PayTR Billing, your 14-day trial has started"
    assert mail.build_message(row, EMAIL_SETTINGS)["Content-Language"] == "en"


def test_login_errors_in_turkish(client):
    turkish(client)
    empty = post(client, "/auth/login", {"email": "", "password": ""})
    assert empty.status_code == 422
    assert "E-posta adresinizi girin." in visible(empty) and "Şifrenizi girin." in visible(empty)
    no_english(empty.text)
    wrong = login(client, password="wrong password")
    assert wrong.status_code == 422 and "E-posta adresi veya şifre hatalı." in visible(wrong)
    no_english(wrong.text)


def test_too_many_login_attempts_in_turkish(client):
    turkish(client)
    for _ in range(accounts.ACCOUNT_LOCK_AFTER):
        login(client, password="wrong password")
    locked = login(client, password="wrong password")
    assert locked.status_code == 429
    assert re.search(r"\d+ dakika sonra", visible(locked))
    no_english(locked.text)


def test_throttle_messages_have_plurals():
    from datetime import timedelta

    with i18n.using("en"):
        assert "in 1 minute," in accounts.Throttle(0, timedelta(seconds=30)).message
        assert "in 3 minutes," in accounts.Throttle(0, timedelta(minutes=3)).message
    with i18n.using("tr"):
        assert "1 dakika sonra" in accounts.Throttle(0, timedelta(seconds=30)).message
        assert "3 dakika sonra" in accounts.Throttle(0, timedelta(minutes=3)).message


def test_forgot_and_reset_password_in_turkish(client, db):
    register(client)
    client.post("/auth/logout", data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"',
                                                              client.get("/billing/").text).group(1)})
    turkish(client)
    empty = post(client, "/auth/forgot-password", {"email": ""}, token_from="/auth/forgot-password")
    assert empty.status_code == 422 and "E-posta adresinizi girin." in visible(empty)
    sent = post(client, "/auth/forgot-password", {"email": "ayse@example.com"}, token_from="/auth/forgot-password")
    assert sent.status_code == 200 and "E-postanızı kontrol edin" in visible(sent)
    assert "20 dakika" in visible(sent)
    no_english(sent.text, "ayse@example.com")

    row = outbox(db, template="password_reset")[-1]
    link = re.search(r"http://testserver(/auth/reset/\S+)", row["body_text"]).group(1)
    page = client.get(link)
    assert page.status_code == 200 and "Yeni bir şifre belirleyin" in visible(page)
    no_english(page.text)
    mismatch = post(client, link, {"password": PASSWORD, "password_confirm": PASSWORD + "x"}, token_from=link)
    assert mismatch.status_code == 422 and "İki şifre birbirini tutmuyor." in visible(mismatch)
    no_english(mismatch.text)
    done = post(client, link, {"password": PASSWORD + "!", "password_confirm": PASSWORD + "!"}, token_from=link,
                follow_redirects=True)
    assert "Şifreniz değiştirildi" in visible(done)
    no_english(done.text)
    gone = client.get(link)
    assert gone.status_code == 410 and "Bu bağlantı artık geçerli değil" in visible(gone)
    no_english(gone.text)


def test_the_reset_email_goes_in_the_users_language(client, db):
    turkish(client)
    register(client)
    post(client, "/auth/forgot-password", {"email": "ayse@example.com"}, token_from="/auth/forgot-password")
    row = outbox(db, template="password_reset")[-1]
    assert row["locale"] == "tr" and row["subject"] == "PayTR Billing şifrenizi sıfırlayın"
    assert "20 dakika" in row["body_text"]
    no_english(row["body_text"])
    no_english(row["body_html"])


def test_team_page_and_invite_in_turkish(app, client, db):
    turkish(client)
    register(client, company="Deniz Lojistik")
    page = client.get("/billing/team")
    assert page.status_code == 200 and "Bekleyen davetler" in visible(page)
    no_english(page.text, "ayse@example.com")
    bad = post(client, "/billing/team/invite", {"email": "a,b@example.com"}, token_from="/billing/team")
    assert bad.status_code == 422 and "virgül" in visible(bad)
    no_english(bad.text, "ayse@example.com", "a,b@example.com")
    taken = post(client, "/billing/team/invite", {"email": "ayse@example.com"}, token_from="/billing/team")
    assert "Bu adresin zaten bir hesabı var" in visible(taken)
    sent = post(client, "/billing/team/invite", {"email": "can@example.com"}, token_from="/billing/team",
                follow_redirects=True)
    assert "Davet can@example.com adresine gönderildi. Bağlantı 7 gün geçerli." in visible(sent)
    no_english(sent.text, "ayse@example.com", "can@example.com")

    # The invitee has no account: the invite goes in the inviter's language.
    [row] = outbox(db, template="invite")
    assert row["locale"] == "tr"
    assert row["subject"] == "Ayşe Yılmaz sizi PayTR Billing üzerinde Deniz Lojistik ekibine davet etti"
    assert "7 gün" in row["body_text"]
    no_english(row["body_text"])
    no_english(row["body_html"])

    link = re.search(r"http://testserver(/auth/invite/\S+)", row["body_text"]).group(1)
    colleague = turkish(second_browser(app))
    invite_page = colleague.get(link)
    assert "Deniz Lojistik ekibine katılın" in visible(invite_page)
    no_english(invite_page.text, "can@example.com")
    bad = post(colleague, link, {"name": "", "password": "short"}, token_from=link)
    assert bad.status_code == 422 and "Adınızı girin." in visible(bad)
    no_english(bad.text, "can@example.com")
    joined = post(colleague, link, {"name": "Can Demir", "password": PASSWORD}, token_from=link,
                  follow_redirects=True)
    assert "Deniz Lojistik ekibine hoş geldiniz!" in visible(joined)
    gone = colleague.get(link)
    assert gone.status_code == 410 and "Bu davetin süresi dolmuş" in visible(gone)
    no_english(gone.text)
    team = client.get("/billing/team")
    assert "Ekip üyesi" in visible(team) and "Hesap sahibi" in visible(team)
    no_english(team.text, "ayse@example.com", "can@example.com")


def test_an_english_inviter_sends_an_english_invite(client, db):
    register(client, company="Deniz Lojistik")
    post(client, "/billing/team/invite", {"email": "can@example.com"}, token_from="/billing/team")
    [row] = outbox(db, template="invite")
    assert row["locale"] == "en" and row["subject"] == "Ayşe Yılmaz invited you to Deniz Lojistik on PayTR Billing"


def test_the_account_page_changes_the_language_of_pages_and_emails(client, db):
    register(client)
    page = client.get("/billing/account")
    assert page.status_code == 200 and "Language of pages and emails" in page.text
    changed = post(client, "/billing/account/language", {"locale": "tr"}, token_from="/billing/account")
    assert changed.status_code == 303 and changed.headers["location"] == "/billing/account"
    assert "lang=tr" in changed.headers["set-cookie"]
    assert one(db, "SELECT locale FROM users")["locale"] == "tr"
    page = client.get("/billing/account", headers={"Accept-Language": "en"})
    assert '<html lang="tr"' in page.text
    assert "Dil kaydedildi" in visible(page) and "Sayfaların ve e-postaların dili" in visible(page)
    no_english(page.text, "ayse@example.com")
    # every later email is Turkish
    post(client, "/auth/forgot-password", {"email": "ayse@example.com"}, token_from="/auth/forgot-password")
    assert outbox(db, template="password_reset")[-1]["locale"] == "tr"

    wrong = post(client, "/billing/account/language", {"locale": "de"}, token_from="/billing/account")
    assert wrong.status_code == 422 and "English veya Türkçe" in wrong.text
    back = post(client, "/billing/account/language", {"locale": "en"}, token_from="/billing/account",
                follow_redirects=True)
    assert "Language saved. Pages and emails will be in English from now on." in visible(back)
    assert one(db, "SELECT locale FROM users")["locale"] == "en"


def test_the_account_page_needs_a_login(client):
    response = client.get("/billing/account", follow_redirects=False)
    assert response.status_code in (302, 303) and "/auth/login" in response.headers["location"]


def test_form_errors_of_the_domain_in_both_languages():
    for locale, expected in (("en", "Use at least 8 characters."), ("tr", "En az 8 karakter kullanın.")):
        with i18n.using(locale), pytest.raises(FormError) as caught:
            accounts.check_password("short")
        assert caught.value.errors == {"password": expected}
    with i18n.using("tr"), pytest.raises(FormError) as caught:
        accounts.check_text("\x00", "name", "your name", 10)
    assert "denetim karakterlerini" in caught.value.errors["name"]
    with i18n.using("tr"), pytest.raises(FormError) as caught:
        accounts.check_text("x" * 11, "name", "your name", 10)
    assert caught.value.errors["name"] == "Adınız en fazla 10 karakter olabilir."
    with i18n.using("en"):
        assert accounts.check_email.__name__ and accounts.ADDRESS_TAKEN.startswith("An account")


# --- every email, in both languages ------------------------------------------------------------

LIFE = {"name": "Ayşe", "company": "Acme", "plan_name": "Team", "next_plan_name": "Starter", "price": 2900,
        "currency": "USD", "trial_ends_at": "2026-12-11T09:00:00Z", "period_end": "2027-01-11T09:00:00Z",
        "grace_days": 7, "tz": "Europe/Istanbul", "pay_url": "http://x/billing/renew",
        "dashboard_url": "http://x/billing/", "pricing_url": "http://x/billing/#plans"}
RECEIPT = {"company": "Acme", "plan_name": "Starter", "amount": 2900, "currency": "USD",
           "period_start": "2026-12-11T09:00:00Z", "period_end": "2027-01-11T09:00:00Z",
           "invoice_number": "INV-2026-000001", "tz": "Europe/Istanbul",
           "invoice_url": "http://x/billing/invoices/INV-2026-000001"}
USAGE = {"name": "Ayşe", "company": "Acme", "plan_name": "Starter", "limit": "workspaces", "level": 80,
         "over": False, "amount": "4 of 5 workspaces", "upgrade_path": "/billing/plan/team", "suggested_name": "Team",
         "suggested_limits": "20 workspaces and 50 GB storage"}

ALERT = {"name": "Ayşe", "when": "2026-11-27T09:00:00Z", "tz": "Europe/Istanbul", "ip": "10.0.0.1",
         "browser": "Chrome", "system": "Linux", "reset_url": "http://x/auth/forgot-password",
         "account_url": "http://x/billing/account", "is_staff": False}
# (template, context) pairs covering each template's branches; sample contexts as in tests/test_mail.py.
SAMPLES = {
    "welcome": {"name": "Ayşe", "company": "Acme", "plan": {"name": "Starter"}, "trial_days": 14,
                "trial_ends_at": "2026-12-11T09:00:00Z", "dashboard_url": "http://x/billing/"},
    "welcome:api": {"name": "Ayşe", "company": "Acme", "plan": {"name": "Starter"}, "trial_days": 1,
                    "trial_ends_at": "2026-12-11T09:00:00Z", "dashboard_url": "http://x/billing/",
                    "set_password_url": "http://x/auth/forgot-password"},
    "password_reset": {"name": "Ayşe", "reset_url": "http://x/auth/reset/t", "minutes": 20},
    "invite": {"inviter": "Ayşe", "company": "Acme", "role": "member", "invite_url": "http://x/i", "days": 7},
    "invite:owner": {"inviter": "Ayşe", "company": "Acme", "role": "owner", "invite_url": "http://x/i", "days": 1},
    "staff_alert": {"title": "Payment needs a look", "body": "Details"},
    "payment_succeeded": RECEIPT,
    "payment_succeeded:renewal": {**RECEIPT, "name": "Ayşe", "renewal": True, "previous_plan_name": "Team"},
    "payment_succeeded:automatic": {**RECEIPT, "renewal": True, "automatic": True},
    "payment_failed": {"company": "Acme", "plan_name": "Starter", "amount": 2900, "currency": "USD",
                       "reason": "Kartın bakiyesi yetersiz", "retry_url": "http://x/billing/payment/fail?oid=1"},
    "trial_reminder": {**LIFE, "days_left": 3},
    "trial_reminder:1": {**LIFE, "days_left": 1},
    "trial_ended": LIFE,
    "renewal_notice": {**LIFE, "days_left": 7, "card": False},
    "renewal_notice:1": {**LIFE, "days_left": 1, "card": False},
    "renewal_notice:card": {**LIFE, "days_left": 7, "card": True},
    "renewal_notice:yearly": {**LIFE, "days_left": 7, "card": False, "interval": "year"},
    "renewal_failed": {**LIFE, "step": 1, "card": True, "reason": "Kartın bakiyesi yetersiz"},
    "renewal_failed:link": {**LIFE, "step": 0, "card": False, "grace_days": 1},
    "subscription_canceled": {**LIFE, "reason": "unpaid"},
    "subscription_canceled:asked": {**LIFE, "reason": "at_period_end"},
    "cancel_scheduled": LIFE,
    "plan_change_scheduled": LIFE,
    "plan_changed": {**LIFE, "previous_plan_name": "Starter", "charged": 4667, "invoice_number": "INV-2026-000002"},
    "plan_changed:free": {**LIFE, "previous_plan_name": None, "charged": 0, "invoice_number": None},
    "card_removed": {**LIFE, "card_label": "Visa ending 4358", "removed_by": "Ayşe"},
    "card_removed:others": {**LIFE, "card_label": None, "removed_by": "Ayşe", "other_cards": 1},
    "card_removed:renewals": {**LIFE, "card_label": "Visa ending 4358", "removed_by": "Ayşe",
                              "renewals_card": "Mastercard ending 5403"},
    "refund_issued": {"company": "Acme", "amount": 1500, "currency": "USD", "paid": 2900,
                      "paid_at": "2026-11-27T09:00:00Z", "description": "Starter plan", "reason": "Paid twice",
                      "tz": "Europe/Istanbul"},
    "usage_warning": USAGE,
    "usage_warning:full": {**USAGE, "level": 100, "amount": "5 of 5 workspaces"},
    "usage_warning:over": {**USAGE, "limit": "storage_gb", "level": 100, "over": True,
                           "amount": "10.1 GB of 10 GB storage", "suggested_name": None, "plan_name": "Enterprise"},
    "usage_over_scheduled_plan": {**LIFE, "reasons": ["You use 12 workspaces; Starter allows 5."]},
    "price_change_notice": {"name": "Ayşe", "company": "Acme", "plan": {"__plan__": True, "code": "team", "name_en": "Team", "name_tr": "Ekip", "description_en": "",
                 "description_tr": "", "price": 9900, "currency": "USD", "interval": "month", "workspaces": 20,
                 "storage_gb": 50, "trial_days": 14, "sort_order": 20, "public": True, "archived_at": None,
                 "featured": True}, "old_price": 9900,
                            "new_price": 11900, "currency": "USD", "from_date": "2027-01-11T09:00:00Z",
                            "tz": "Europe/Istanbul", "dashboard_url": "http://x/billing/"},
    # What staff do from the console (billing/staff_actions.py).
    "subscription_canceled_by_staff": {**LIFE, "when": "now", "refund": 1871, "ended_at": "2026-12-22T09:00:00Z"},
    "subscription_canceled_by_staff:no_refund": {**LIFE, "when": "now", "refund": 0,
                                                 "ended_at": "2026-12-22T09:00:00Z"},
    "subscription_canceled_by_staff:period_end": {**LIFE, "when": "period_end", "refund": 0,
                                                  "ended_at": "2027-01-11T09:00:00Z"},
    "subscription_resumed": LIFE,
    "free_days_granted": {**LIFE, "days": 10, "trial": False, "until": "2027-01-21T09:00:00Z"},
    "free_days_granted:1": {**LIFE, "days": 1, "trial": False, "until": "2027-01-12T09:00:00Z"},
    "free_days_granted:trial": {**LIFE, "days": 5, "trial": True, "until": "2026-12-16T09:00:00Z"},
    "upgrade_offered": {**LIFE, "new_plan_name": "Team", "amount": 4516, "days_left": 20,
                        "change_url": "http://x/billing/plan/team"},
    "security_alert": {**ALERT, "kind": "new_browser"},
    "security_alert:password": {**ALERT, "kind": "password_changed", "how": "change"},
    "security_alert:reset": {**ALERT, "kind": "password_changed", "how": "reset", "is_staff": True},
    "security_alert:email": {**ALERT, "kind": "email_changed", "old_email": "a@example.com",
                             "new_email": "b@example.com", "undo_url": "http://x/auth/undo-email/t", "undo_days": 7},
    "security_alert:on": {**ALERT, "kind": "two_factor_on", "browser": None},
    "security_alert:off": {**ALERT, "kind": "two_factor_off", "browser": None, "system": None, "ip": None},
    "security_alert:recovery": {**ALERT, "kind": "recovery_code_used", "remaining": 1},
    "staff_invite": {"inviter": "Ayşe", "role": "admin", "invite_url": "http://x/auth/staff-invite/t", "days": 7},
    "staff_invite:finance": {"inviter": "Ayşe", "role": "finance", "invite_url": "http://x/i", "days": 1},
    "staff_invite:support": {"inviter": "Ayşe", "role": "support", "invite_url": "http://x/i", "days": 7},
}
# What the callers put in the context is data in the sender's words: a refund reason typed by staff,
# the payment's line, usage figures (billing/usage.py builds them in the recipient's language).
IN_TURKISH = {
    "refund_issued": {"description": "Starter planı, 11 Aralık 2026 – 11 Ocak 2027", "reason": "İki kez ödendi"},
    "usage_warning": {"amount": "5 çalışma alanından 4'ü", "suggested_limits": "20 çalışma alanı ve 50 GB depolama"},
    "usage_over_scheduled_plan": {"reasons": ["12 çalışma alanı kullanıyorsunuz; Starter en fazla 5 izin veriyor."]},
}


def render(sample: str, locale: str):
    template = sample.split(":")[0]
    context = dict(SAMPLES[sample])
    if locale == "tr":
        context.update(IN_TURKISH.get(template, {}))
        if sample == "usage_warning:full":
            context.update(amount="5 çalışma alanından 5'i")
        if sample == "usage_warning:over":
            context.update(amount="10,1 GB / 10 GB depolama", suggested_limits=None)
    return mail.render(template, EMAIL_SETTINGS, json.loads(json.dumps(context)), locale)


def test_every_template_has_samples():
    from pathlib import Path

    names = {p.stem for p in Path(mail.TEMPLATES, "emails").glob("*.txt")}
    assert names == {sample.split(":")[0] for sample in SAMPLES}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_email_in_turkish(sample):
    subject, text, html = render(sample, "tr")
    extra = ("Payment needs a look", "Details") if sample == "staff_alert" else ()  # staff's own words
    no_english(subject, *extra)
    no_english(text, *extra)
    no_english(html, *extra)
    assert '<html lang="tr">' in html
    if sample != "staff_alert":
        assert "PayTR Billing ekibi" in text or "invite" in sample and "PayTR Billing ekibi" in text


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_email_in_english(sample):
    subject, text, html = render(sample, "en")
    assert '<html lang="en">' in html
    assert re.search(r"\b(the|your|you|we)\b", text, re.I), text
    if sample != "staff_alert":
        assert "The PayTR Billing team" in text


def test_email_plurals_in_both_languages():
    assert render("trial_reminder", "en")[0] == "Your PayTR Billing trial ends in 3 days"
    assert render("trial_reminder:1", "en")[0] == "Your PayTR Billing trial ends in 1 day"
    assert render("trial_reminder", "tr")[0] == "PayTR Billing deneme sürenizin bitmesine 3 gün kaldı"
    assert render("trial_reminder:1", "tr")[0] == "PayTR Billing deneme sürenizin bitmesine 1 gün kaldı"
    assert "in 1 day." in render("renewal_notice:1", "en")[1]
    assert "in 7 days." in render("renewal_notice", "en")[1]
    assert "within 1 day of" in render("renewal_failed:link", "en")[1]
    assert "1 gün içinde" in render("renewal_failed:link", "tr")[1]
    assert "7 gün içinde" in render("renewal_failed", "tr")[1]
    assert "The link expires in 1 day." in render("invite:owner", "en")[1]
    assert "1-day trial" in render("welcome:api", "en")[0]


def test_turkish_dates_and_money_in_emails():
    subject, text, html = render("payment_succeeded", "tr")
    assert subject == "Ödemeniz alındı: Starter için $29,00"
    assert "11 Ocak 2027" in text and "11 Aralık 2026" in text
    assert "$29,00" in text or "29,00 $" in text
    subject, text, html = render("payment_succeeded", "en")
    assert "$29.00" in text and "11 January 2027" in text


def test_the_receipt_and_refund_read_naturally_in_turkish():
    subject, text, html = render("payment_succeeded", "tr")
    assert "Acme şirketinin Starter planı için $29,00 tutarındaki ödemenizi aldık." in text
    assert "Aboneliğiniz etkin ve 11 Ocak 2027 tarihine kadar ödendi." in text
    subject, text, html = render("payment_succeeded:automatic", "tr")
    assert "Planınız yenilendi: Starter için $29,00" == subject
    assert "kayıtlı kartınızdan $29,00 tahsil ettik" in text
    subject, text, html = render("refund_issued", "tr")
    assert subject == "İadeniz yapıldı: Acme için $15,00"
    assert "27 Kasım 2026 tarihli ödemede kullanılan karta $15,00 iade ettik." in text
    assert "İade edilen: $15,00" in text and "Ödenen: $29,00" in text


def test_the_greeting_uses_the_name_when_known(db, settings, password_hash):
    from billing import clock
    from billing.db import write

    now = clock.parse("2026-12-01T09:00:00Z")
    with write(db):
        accounts.create_company(db, now, settings, "Acme", "Ayşe Yılmaz", "ayse@example.com", password_hash,
                                "starter", locale="tr")
        mail.enqueue(db, now, settings, template="payment_failed", to="ayse@example.com", dedupe_key="f1",
                     context=SAMPLES["payment_failed"])
        mail.enqueue(db, now, settings, template="payment_failed", to="someone@example.com", dedupe_key="f2",
                     context=SAMPLES["payment_failed"])
    known, unknown = outbox(db, template="payment_failed")
    # The first name; an address with no account is greeted by the company's name, never an empty "Hello,".
    assert known["locale"] == "tr" and "Merhaba Ayşe," in known["body_text"].splitlines()
    assert "Hello Acme," in unknown["body_text"].splitlines()


def test_staff_alerts_go_in_the_default_language(db, settings, password_hash):
    from billing import clock
    from billing.db import write

    now = clock.parse("2026-12-01T09:00:00Z")
    staff = accounts.create_staff(db, now, email="ops@example.com", name="Ops", password_hash=password_hash)
    accounts.set_locale(db, staff["id"], "tr")
    with write(db):
        mail.alert_staff(db, now, settings, dedupe_key="a1", title="Payment needs a look", body="Details")
    [row] = outbox(db, template="staff_alert")
    assert row["locale"] == settings.default_locale == "en"
    assert "Open the admin console" in row["body_text"]


def test_a_failed_payment_email_gives_our_own_reason_first(monkeypatch):
    """With PayTR's failed_reason_code in the context, the email says our sentence (billing.payments.
    failure_reason, in the email's language); PayTR's own words follow only as a labelled detail."""
    from billing import payments

    def failure_reason(code):
        return i18n.gettext("Enter your email address.") if code == "0" else "?"  # any translated sentence

    monkeypatch.setattr(payments, "failure_reason", failure_reason, raising=False)
    for sample in ("payment_failed", "renewal_failed"):
        context = {**SAMPLES[sample], "reason_code": "0"}
        subject, text, html = mail.render(sample, EMAIL_SETTINGS, context, "tr")
        assert "E-posta adresinizi girin." in text and "E-posta adresinizi girin." in html
        assert text.index("E-posta adresinizi girin.") < text.index("PayTR mesajı: Kartın bakiyesi yetersiz")
        subject, text, html = mail.render(sample, EMAIL_SETTINGS, context, "en")
        assert "Enter your email address." in text and "PayTR said: Kartın bakiyesi yetersiz" in text
