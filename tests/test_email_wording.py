"""Every email reads right, in English and in Turkish, as the customer receives it.

Each template found in templates/emails/ is queued the way the app queues it (billing/mail.py
`enqueue`: the recipient looked up by address for their name and language) and built by the
sender (`rendered`, then `build_message`, the MIME message that leaves), for a company named
"Anadolu Yazılım A.Ş." — a name that ends in a period — and its owner Deniz Aydın. What a reader
would notice is checked: a doubled period after "A.Ş.", stray spaces before punctuation, an empty
"Hello,", a placeholder left unrendered, an HTML part that says something the text part does not
(or the other way round), a subject missing or left untranslated. A new template without a
scenario here fails `test_every_email_template_has_a_scenario`.
"""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path

import pytest

from billing import accounts, mail
from billing.db import one, write
from conftest import EMAIL_SETTINGS, START, login, outbox, post, register, second_browser
from test_checkout_http import checkout_oid, pay, subscribe

COMPANY = "Anadolu Yazılım A.Ş."
PERSON = "Deniz Aydın"
ADDRESS = "deniz@anadolu.com.tr"
NEWCOMER = "selin@anadolu.com.tr"  # an invited address with no account yet
STAFF, STAFF_ADDRESS = "Mert Kaya", "mert@paytr-billing.example"
LOCALES = ("en", "tr")
GREETING = {"en": "Hello", "tr": "Merhaba"}
URL = "https://billing.example.com.tr"

TEMPLATES = sorted(path.stem for path in Path(mail.TEMPLATES, "emails").glob("*.txt"))

_LIFE = {"name": PERSON, "company": COMPANY, "plan_name": "Team", "next_plan_name": "Starter", "price": 2900,
         "currency": "USD", "interval": "month", "trial_ends_at": "2026-12-11T09:00:00Z",
         "period_end": "2027-01-11T09:00:00Z", "grace_days": 7, "tz": "Europe/Istanbul",
         "pay_url": f"{URL}/billing/renew", "dashboard_url": f"{URL}/billing/", "pricing_url": f"{URL}/billing/#plans"}
_RECEIPT = {"company": COMPANY, "plan_name": "Starter", "amount": 2900, "currency": "USD",
            "period_start": "2026-12-11T09:00:00Z", "period_end": "2027-01-11T09:00:00Z",
            "invoice_number": "INV-2026-000001", "tz": "Europe/Istanbul", "renewal": False, "automatic": False,
            "previous_plan_name": None, "invoice_url": f"{URL}/billing/invoices/INV-2026-000001"}
_USAGE = {"name": PERSON, "company": COMPANY, "plan_name": "Starter", "limit": "workspaces", "level": 80,
          "over": False, "amount": "4 of 5 workspaces", "upgrade_path": "/billing/plan/team", "suggested_name": "Team",
          "suggested_limits": "20 workspaces and 50 GB storage"}
_ALERT = {"name": PERSON, "when": "2026-11-27T09:00:00Z", "tz": "Europe/Istanbul", "ip": "10.0.0.1",
          "browser": "Chrome", "system": "Linux", "reset_url": f"{URL}/auth/forgot-password",
          "account_url": f"{URL}/billing/account", "is_staff": False}
_PLAN = {"__plan__": True, "code": "team", "name_en": "Team", "name_tr": "Ekip", "description_en": "",
         "description_tr": "", "price": 11900, "currency": "USD", "interval": "month", "workspaces": 20,
         "storage_gb": 50, "trial_days": 14, "sort_order": 20, "public": True, "archived_at": None, "featured": True}

# Per template: (recipient, context) for each branch worth reading, with the context its caller builds
# (a receipt, a refund, a failed payment carry no name: enqueue finds the recipient's).
SCENARIOS: dict[str, list[tuple[str, dict]]] = {
    "welcome": [(ADDRESS, {"name": PERSON, "company": COMPANY, "plan": {"name": "Starter"}, "trial_days": 14,
                           "trial_ends_at": "2026-12-11T09:00:00Z", "dashboard_url": f"{URL}/billing/",
                           "set_password_url": None}),
                (ADDRESS, {"name": PERSON, "company": COMPANY, "plan": {"name": "Starter"}, "trial_days": 1,
                           "trial_ends_at": "2026-12-11T09:00:00Z", "dashboard_url": f"{URL}/billing/",
                           "set_password_url": f"{URL}/auth/forgot-password"})],
    "password_reset": [(ADDRESS, {"name": PERSON, "reset_url": f"{URL}/auth/reset/t0k3n", "minutes": 30})],
    "invite": [(NEWCOMER, {"inviter": PERSON, "company": COMPANY, "role": role, "invite_url": f"{URL}/auth/invite/t",
                           "days": days}) for role, days in (("member", 7), ("owner", 1))],
    "staff_invite": [(NEWCOMER, {"inviter": STAFF, "role": role, "invite_url": f"{URL}/auth/staff-invite/t", "days": 7})
                     for role in ("admin", "finance", "support")],
    "staff_alert": [(STAFF_ADDRESS, {"title": "A payment needs a look",
                                     "body": f"PayTR reported a payment for {COMPANY} that we did not expect."})],
    "payment_succeeded": [(ADDRESS, _RECEIPT),
                          (ADDRESS, {**_RECEIPT, "renewal": True, "previous_plan_name": "Team"}),
                          (ADDRESS, {**_RECEIPT, "renewal": True, "automatic": True})],
    "payment_failed": [(ADDRESS, {"company": COMPANY, "plan_name": "Starter", "amount": 2900, "currency": "USD",
                                  "reason": "Kartın bakiyesi yetersiz", "reason_code": None,
                                  "retry_url": f"{URL}/billing/payment/fail?oid=ABC123"})],
    "refund_issued": [(ADDRESS, {"company": COMPANY, "amount": 1500, "currency": "USD", "paid": 2900,
                                 "paid_at": "2026-11-27T09:00:00Z", "description": "Starter plan",
                                 "reason": "Charged twice", "tz": "Europe/Istanbul", "credit_note": "CN-2026-000001"}),
                      (ADDRESS, {"company": COMPANY, "amount": 2900, "currency": "USD", "paid": 2900, "paid_at": None,
                                 "description": "", "reason": "Canceled by us", "tz": "Europe/Istanbul",
                                 "credit_note": None})],
    "trial_reminder": [(ADDRESS, {**_LIFE, "days_left": days}) for days in (3, 1)],
    "trial_ended": [(ADDRESS, _LIFE)],
    "renewal_notice": [(ADDRESS, {**_LIFE, "days_left": 7, "card": False}),
                       (ADDRESS, {**_LIFE, "days_left": 7, "card": True}),
                       (ADDRESS, {**_LIFE, "days_left": 1, "card": False, "interval": "year"})],
    "renewal_failed": [(ADDRESS, {**_LIFE, "step": 0, "card": True, "reason": "Kartın bakiyesi yetersiz"}),
                       (ADDRESS, {**_LIFE, "step": 1, "card": False, "reason": None, "grace_days": 1})],
    "subscription_canceled": [(ADDRESS, {**_LIFE, "reason": reason}) for reason in ("unpaid", "at_period_end")],
    "cancel_scheduled": [(ADDRESS, _LIFE)],
    "plan_change_scheduled": [(ADDRESS, _LIFE)],
    "plan_changed": [(ADDRESS, {**_LIFE, "previous_plan_name": "Starter", "charged": 4667,
                                "invoice_number": "INV-2026-000002"}),
                     (ADDRESS, {**_LIFE, "previous_plan_name": None, "charged": 0, "invoice_number": None})],
    "card_removed": [(ADDRESS, {**_LIFE, "card_label": "Visa ending 4358", "removed_by": PERSON}),
                     (ADDRESS, {**_LIFE, "card_label": None, "removed_by": PERSON, "other_cards": 1}),
                     (ADDRESS, {**_LIFE, "card_label": "Visa ending 4358", "removed_by": PERSON,
                                "renewals_card": "Mastercard ending 5403"})],
    "usage_warning": [(ADDRESS, _USAGE),
                      (ADDRESS, {**_USAGE, "level": 100, "amount": "5 of 5 workspaces"}),
                      (ADDRESS, {**_USAGE, "limit": "storage_gb", "level": 100, "over": True,
                                 "amount": "10.1 GB of 10 GB storage", "suggested_name": None,
                                 "plan_name": "Enterprise"})],
    "usage_over_scheduled_plan": [(ADDRESS, {**_LIFE, "reasons": ["You use 12 workspaces; Starter allows 5."]})],
    "price_change_notice": [(ADDRESS, {"name": PERSON, "company": COMPANY, "plan": _PLAN, "old_price": 9900,
                                       "new_price": 11900, "currency": "USD", "from_date": "2027-01-11T09:00:00Z",
                                       "tz": "Europe/Istanbul", "dashboard_url": f"{URL}/billing/"})],
    "subscription_canceled_by_staff": [
        (ADDRESS, {**_LIFE, "when": "now", "refund": 1871, "ended_at": "2026-12-22T09:00:00Z"}),
        (ADDRESS, {**_LIFE, "when": "now", "refund": 0, "ended_at": "2026-12-22T09:00:00Z"}),
        (ADDRESS, {**_LIFE, "when": "period_end", "refund": 0, "ended_at": "2027-01-11T09:00:00Z"})],
    "subscription_resumed": [(ADDRESS, _LIFE)],
    "free_days_granted": [(ADDRESS, {**_LIFE, "days": 10, "trial": False, "until": "2027-01-21T09:00:00Z"}),
                          (ADDRESS, {**_LIFE, "days": 5, "trial": True, "until": "2026-12-16T09:00:00Z"})],
    "upgrade_offered": [(ADDRESS, {**_LIFE, "plan_name": "Starter", "new_plan_name": "Team", "amount": 4516,
                                   "days_left": 20, "change_url": f"{URL}/billing/plan/team"})],
    "security_alert": [(ADDRESS, {**_ALERT, **extra}) for extra in (
        {"kind": "new_browser"}, {"kind": "password_changed", "how": "change"},
        {"kind": "password_changed", "how": "reset", "is_staff": True},
        {"kind": "email_changed", "old_email": "eski@anadolu.com.tr", "new_email": ADDRESS,
         "undo_url": f"{URL}/auth/undo-email/t", "undo_days": 7},
        {"kind": "two_factor_on", "browser": None}, {"kind": "two_factor_off", "browser": None, "system": None, "ip": None},
        {"kind": "recovery_code_used", "remaining": 1})],
}


# --- reading an email as its reader does -------------------------------------------------------------

_BLOCKS = {"p", "div", "h1", "h2", "h3", "li", "ul", "ol", "tr", "td", "th", "table", "br", "body", "html"}
_VOID = {"br", "meta", "img", "hr", "input", "link"}


class _Visible(HTMLParser):
    """The text a mail client shows for an HTML part (not its <head>), the links it carries, and
    nothing marked data-html-only (the logo line; the "copy this address" hint under a button)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self.skipping: list[str] = []  # open tags of a skipped subtree

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in _VOID:
            if tag == "br":
                self.parts.append("\n")
            return
        if self.skipping or tag in ("head", "style") or "data-html-only" in attrs:
            self.skipping.append(tag)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if self.skipping:
            self.skipping.pop()
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def visible(html: str) -> tuple[str, list[str]]:
    parser = _Visible()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line), parser.links


def words(text: str) -> list[str]:
    """What a sentence says, without its layout: words, numbers and whole addresses, in order."""
    found = re.findall(r"https?://[^\s<>\"']+|\w+", text)
    return [token.rstrip(".,;:)") if token.startswith("http") else token for token in found]


def received(row: dict) -> tuple[str, str, str]:
    """(subject, text, html) of the MIME message the sender builds for an outbox row."""
    row = mail.rendered(row, EMAIL_SETTINGS)
    message = message_from_bytes(mail.build_message(row, EMAIL_SETTINGS).as_bytes(), policy=policy.default)
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return str(message["Subject"]), text, html


def problems(where: str, text: str) -> list[str]:
    """What a careful reader would circle in red."""
    found = []
    for pattern, what in ((r"(?<!\.)\.\.(?!\.)", "a doubled period"), (r" ,", "a space before a comma"),
                          (r",,", "a doubled comma"), (r" \.(?!\.)", "a space before a period"),
                          (r"%\(", "a %(placeholder)s"), (r"\{\{|\{%", "a Jinja tag"),
                          (r"\bNone\b", "None"), (r"\bUndefined\b", "Undefined"),
                          (r"(?m)^\s*(Hello|Merhaba),", "an empty greeting")):
        for match in re.finditer(pattern, text):
            found.append(f"{where}: {what} in …{text[max(0, match.start() - 40):match.end() + 20]!r}")
    return found


@pytest.fixture
def readers(db, settings, password_hash):
    """Deniz, owner of Anadolu Yazılım A.Ş., and Mert of the operator's staff: accounts the outbox finds."""
    with write(db):
        accounts.create_company(db, START, settings, COMPANY, PERSON, ADDRESS, password_hash, "starter")
    accounts.create_staff(db, START, email=STAFF_ADDRESS, name=STAFF, password_hash=password_hash)
    return db


def queued(db, template: str, to: str, context: dict, locale: str, key: str) -> dict:
    with write(db):
        mail.enqueue(db, START, EMAIL_SETTINGS, template=template, to=to, dedupe_key=key,
                     context=json.loads(json.dumps(context)), locale=locale)
    return one(db, "SELECT * FROM outbox WHERE dedupe_key = ?", [key])


def expected_greeting(to: str, context: dict, locale: str) -> str:
    """Deniz and Mert have accounts: their first names. An invited address has none: the company's
    name, or (a staff invitation has no company) the address itself."""
    name = {ADDRESS: "Deniz", STAFF_ADDRESS: "Mert"}.get(to) or context.get("company") or to
    return f"{GREETING[locale]} {name},"


# --- the tests -----------------------------------------------------------------------------------------


def test_every_email_template_has_a_scenario():
    assert TEMPLATES, "no email templates found"
    assert set(TEMPLATES) == set(SCENARIOS), "give each email in templates/emails/ a scenario here"
    for template in TEMPLATES:
        assert Path(mail.TEMPLATES, "emails", f"{template}.html").exists(), f"{template} has no HTML part"


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_email_reads_right_in_both_languages(readers, template):
    assert template in SCENARIOS, f"add a scenario for emails/{template} to SCENARIOS"
    found: list[str] = []
    for n, (to, context) in enumerate(SCENARIOS[template]):
        subjects = {}
        for locale in LOCALES:
            row = queued(readers, template, to, context, locale, f"{template}:{n}:{locale}")
            subject, text, html = received(row)
            shown, links = visible(html)
            where = f"{template}#{n} [{locale}]"
            subjects[locale] = subject
            assert subject.strip(), f"{where}: no subject"
            for part, content in (("subject", subject), ("text", text), ("html", shown)):
                found += problems(f"{where} {part}", content)
            greeting = expected_greeting(to, context, locale)
            assert greeting in text.splitlines(), f"{where}: the text part does not greet with {greeting!r}"
            assert greeting in shown.splitlines(), f"{where}: the HTML part does not greet with {greeting!r}"
            # The same sentences in both parts, in the same order; every link of the HTML written out in the text.
            assert words(shown) == words(text), f"{where}: the HTML and text parts differ\n--- html\n{shown}\n--- text\n{text}"
            missing = [link for link in links if link.startswith("http") and link not in text]
            assert not missing, f"{where}: links the text part does not write out: {missing}"
        # Translated, not only formatted differently ("$29.00" / "$29,00"): the words differ.
        assert [w for w in words(subjects["en"]) if not w.isdigit()] != [w for w in words(subjects["tr"]) if not w.isdigit()], \
            f"{template}#{n}: the subject is not translated: {subjects['en']!r}"
    assert not found, "\n".join(found)


def test_a_name_that_ends_in_a_period_ends_its_sentence_once(readers):
    row = queued(readers, "payment_succeeded", ADDRESS, _RECEIPT, "en", "receipt")
    subject, text, html = received(row)
    assert "We received $29.00 for the Starter plan of Anadolu Yazılım A.Ş.\n" in text
    assert "of <strong>Anadolu Yazılım A.Ş.</strong>" not in html  # the company is plain, the period is once:
    assert "of Anadolu Yazılım A.Ş.</p>" in html
    assert subject == "Payment received: $29.00 for Starter"
    row = queued(readers, "payment_succeeded", ADDRESS, _RECEIPT, "tr", "receipt-tr")
    assert received(row)[0] == "Ödemeniz alındı: Starter için $29,00"


def test_the_refund_email_says_which_card_in_plain_words(readers):
    refund = SCENARIOS["refund_issued"][0][1]
    subject, text, _html = received(queued(readers, "refund_issued", ADDRESS, refund, "en", "refund"))
    assert subject == "Refund issued: $15.00 for Anadolu Yazılım A.Ş."
    assert "We refunded $15.00 to the card used for the payment made on 27 November 2026." in text
    subject, text, _html = received(queued(readers, "refund_issued", ADDRESS, refund, "tr", "refund-tr"))
    assert subject == "İadeniz yapıldı: Anadolu Yazılım A.Ş. için $15,00"
    assert "27 Kasım 2026 tarihli ödemede kullanılan karta $15,00 iade ettik." in text


def test_an_address_without_an_account_is_greeted_by_the_company_or_itself(readers):
    context = {"company": COMPANY, "plan_name": "Starter", "amount": 2900, "currency": "USD", "reason": None,
               "reason_code": None, "retry_url": f"{URL}/billing/payment/fail?oid=1"}
    _s, text, _h = received(queued(readers, "payment_failed", "muhasebe@anadolu.com.tr", context, "tr", "unknown"))
    assert "Merhaba Anadolu Yazılım A.Ş.," in text.splitlines()
    invite = SCENARIOS["staff_invite"][0][1]
    _s, text, _h = received(queued(readers, "staff_invite", NEWCOMER, invite, "en", "staff-invite"))
    assert f"Hello {NEWCOMER}," in text.splitlines()


def test_a_real_checkout_and_refund_greet_the_customer_by_name(client, app, db, password_hash):
    """The receipt and the refund of a paid checkout, and the refund as staff preview it, through the app's
    own paths: Deniz is greeted by name and "A.Ş." ends its sentence once, in both languages."""
    register(client, email=ADDRESS, company=COMPANY, name=PERSON)
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid)
    [receipt] = outbox(db, template="payment_succeeded")
    assert receipt["subject"] == "Payment received: $29.00 for Starter"
    for locale in LOCALES:
        subject, text, html = received({**receipt, "locale": locale, "body_html": None})
        assert expected_greeting(ADDRESS, {}, locale) in text.splitlines()
        assert not problems(f"receipt [{locale}]", text) and not problems(f"receipt [{locale}]", visible(html)[0])

    accounts.create_staff(db, START, email=STAFF_ADDRESS, name=STAFF, password_hash=password_hash)
    staff = second_browser(app)
    assert login(staff, email=STAFF_ADDRESS).status_code == 303
    payment = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])
    page = f"/admin/payments/{payment['id']}/refund"
    key = re.search(r'name="request_key" value="([^"]+)"', staff.get(page).text).group(1)
    form = {"amount": "10.00", "reason": "Charged twice", "request_key": key}
    review = post(staff, page, form, token_from=page)  # the step that shows the email before it is sent
    assert review.status_code == 200 and "Hello Deniz," in review.text
    assert "Refund issued: $10.00 for Anadolu Yazılım A.Ş." in review.text
    assert post(staff, page, {**form, "step": "confirm"}, token_from=page).status_code == 303
    [email] = outbox(db, template="refund_issued")
    assert email["subject"] == "Refund issued: $10.00 for Anadolu Yazılım A.Ş."
    for locale in LOCALES:
        subject, text, html = received({**email, "locale": locale, "body_html": None})
        assert expected_greeting(ADDRESS, {}, locale) in text.splitlines()
        assert not problems(f"refund [{locale}]", text) and not problems(f"refund [{locale}]", visible(html)[0])


def test_end_sentence_joins_a_names_period_with_the_sentences_and_leaves_ellipses_alone():
    from markupsafe import Markup

    from billing.notify.wording import end_sentence, first_name

    assert end_sentence("We received $29.00 from Anadolu Yazılım A.Ş..") == "We received $29.00 from Anadolu Yazılım A.Ş."
    assert end_sentence("Acme Inc.. Then more.") == "Acme Inc. Then more."
    bold = end_sentence(Markup("of <strong>Acme Ltd.</strong>."))
    assert bold == Markup("of <strong>Acme Ltd.</strong>") and isinstance(bold, Markup)
    for unchanged in ("Wait...", "Anadolu Yazılım A.Ş....", "A.Ş., then", "$29.00.", "v1.2.3"):
        assert end_sentence(unchanged) == unchanged
    assert (first_name("Deniz Aydın"), first_name(" Ayşe  Nur Yılmaz "), first_name("Deniz")) == ("Deniz", "Ayşe", "Deniz")
    assert (first_name("Dr. Deniz Aydın"), first_name("Aydın, Deniz"), first_name(None)) == (
        "Dr. Deniz Aydın", "Aydın, Deniz", "")
