"""The outbox: written with the change, sent with retries, never blocking the change."""

from datetime import timedelta

import pytest

from billing import mail
from billing.db import rows, write
from conftest import START, free_port, make_company, outbox, register, wait_for


class FailingTransport:
    def __init__(self, error=OSError("connection refused")):
        self.error = error
        self.tries = 0

    def __enter__(self):
        self.tries += 1
        raise self.error

    def __exit__(self, *exc):
        return False


class Recorder:
    def __init__(self):
        self.sent = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, msg, row):
        from email import message_from_bytes, policy

        self.sent.append(message_from_bytes(msg.as_bytes(), policy=policy.default))  # as a mail client reads it


def queue(db, settings, key="k1", to="a@example.com"):
    with write(db):
        return mail.enqueue(db, START, settings, template="staff_alert", to=to, dedupe_key=key,
                            context={"title": "Hello", "body": "Body"})


def test_enqueue_is_deduplicated_by_key(db, settings):
    assert queue(db, settings) is True
    assert queue(db, settings) is False
    assert len(outbox(db)) == 1


def test_a_rolled_back_change_sends_nothing(db, settings):
    with pytest.raises(RuntimeError):
        with write(db):
            mail.enqueue(db, START, settings, template="staff_alert", to="a@example.com", dedupe_key="gone",
                         context={"title": "T", "body": "B"})
            raise RuntimeError("the change failed")
    assert outbox(db) == []


def test_sender_sends_html_and_text(db, settings):
    queue(db, settings)
    recorder = Recorder()
    assert mail.deliver_due(db, START, settings, recorder) == {"sent": 1, "retrying": 0, "failed": 0}
    [msg] = recorder.sent
    assert msg.get_body(("plain",)).get_content().startswith("Hello")
    assert "<html" in msg.get_body(("html",)).get_content()
    assert msg["Subject"] == "Staff alert: Hello"
    assert outbox(db)[0]["status"] == "sent"
    assert mail.deliver_due(db, START, settings, recorder)["sent"] == 0  # nothing sent twice


def test_failures_back_off_and_finally_fail_for_staff_to_see(db, settings):
    queue(db, settings)
    transport = FailingTransport()
    now = START
    for attempt in range(1, settings.mail_max_attempts + 1):
        counts = mail.deliver_due(db, now, settings, transport)
        row = outbox(db)[0]
        assert row["attempts"] == attempt
        assert "connection refused" in row["last_error"]
        if attempt < settings.mail_max_attempts:
            assert counts["retrying"] == 1 and row["status"] == "pending"
            due = mail.next_due(db)
            assert due - now == mail.backoff(attempt)
            assert mail.deliver_due(db, due - timedelta(seconds=1), settings, transport)["retrying"] == 0  # not yet
            now = due
        else:
            assert counts["failed"] == 1 and row["status"] == "failed"
    assert mail.backoff(1) == timedelta(minutes=1) and mail.backoff(20) == timedelta(hours=1)


def test_a_leased_row_is_not_sent_by_a_second_sender(db, settings):
    queue(db, settings)
    claimed = mail.claim(db, START)
    assert len(claimed) == 1
    assert mail.claim(db, START) == []  # another sender finds nothing
    assert len(mail.claim(db, START + mail.LEASE)) == 1  # unless the first one died


def test_failed_emails_are_listed_in_the_admin_console(app, db, settings, password_hash):
    from starlette.testclient import TestClient

    from billing import accounts
    from conftest import login
    # Before the app (and its own sender) starts, so only the failing transport sees the email.
    queue(db, settings, to="bounce@example.com")
    mail.deliver_due(db, START, settings.replace(mail_max_attempts=1), FailingTransport())
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    with TestClient(app, base_url="http://testserver") as client:
        login(client, email="ops@example.com")
        page = client.get("/admin/").text
    assert "bounce@example.com" in page and "connection refused" in page


@pytest.fixture
def env(request):
    return getattr(request, "param", {})


@pytest.mark.parametrize("env", [{"SMTP_HOST": "127.0.0.1", "SMTP_PORT": free_port(), "SMTP_TLS": "none"}],
                         indirect=True)
def test_registration_succeeds_while_the_mail_server_is_down(client, db):
    response = register(client)
    assert response.status_code == 303
    assert "14 days left" in client.get("/billing/").text
    row = wait_for(lambda: (r := outbox(db)[0]) and r["last_error"] and r, message="a failed send")
    assert row["status"] == "pending" and row["attempts"] == 1


def test_welcome_email_arrives_over_real_smtp(tmp_path, smtp):
    from starlette.testclient import TestClient

    from billing.app import create_app
    from billing.clock import FixedClock
    from conftest import make_settings

    settings = make_settings(tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="none",
                             MAIL_FROM="Faturalama <fatura@example.com>")
    with TestClient(create_app(settings, clock=FixedClock(START)), base_url="http://testserver") as client:
        register(client, email="smtp@example.com")
        [msg] = wait_for(lambda: smtp.received("smtp@example.com"), message="the welcome email over SMTP")
    assert msg["From"] == "Faturalama <fatura@example.com>"
    assert msg["Subject"] == "Welcome to PayTR Billing, your 14-day trial has started"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Hello Ayşe," in text and "11 December 2026" in text and "http://testserver/billing/" in text
    assert "Open your billing dashboard" in html and "Yılmaz Yazılım A.Ş." in html


def test_send_mail_drains_the_outbox_once(db, settings, password_hash):
    make_company(db, settings, START, password_hash)
    counts = mail.deliver_due(db, START, settings)
    assert counts["sent"] == 1
    assert list(settings.mail_capture_dir.glob("*.eml"))


def test_every_email_template_renders_from_a_json_context(settings):
    """Emails render when sent, from the JSON snapshot taken with the change; every template
    must render from such a snapshot (strings for dates, plain numbers for money)."""
    import json
    from pathlib import Path

    life = {"name": "Ayşe", "company": "Acme", "plan_name": "Team", "next_plan_name": "Starter", "price": 2900,
            "currency": "USD", "trial_ends_at": "2026-12-11T09:00:00Z", "period_end": "2027-01-11T09:00:00Z",
            "grace_days": 7, "tz": "Europe/Istanbul", "pay_url": "http://x/billing/renew",
            "dashboard_url": "http://x/billing/", "pricing_url": "http://x/billing/#plans"}
    samples = {
        "welcome": {"name": "Ayşe", "company": "Acme", "plan": {"name": "Starter"}, "trial_days": 14,
                    "trial_ends_at": "2026-12-11T09:00:00Z", "dashboard_url": "http://x/billing/"},
        "password_reset": {"name": "Ayşe", "reset_url": "http://x/auth/reset/t", "minutes": 20},
        "invite": {"inviter": "Ayşe", "company": "Acme", "role": "member", "invite_url": "http://x/i", "days": 7},
        "staff_alert": {"title": "Payment needs a look", "body": "Details"},
        "payment_succeeded": {"company": "Acme", "plan_name": "Starter", "amount": 2900, "currency": "USD",
                              "period_start": "2026-12-11T09:00:00Z", "period_end": "2027-01-11T09:00:00Z",
                              "invoice_number": "INV-2026-000001", "tz": "Europe/Istanbul",
                              "invoice_url": "http://x/billing/invoices/INV-2026-000001"},
        "payment_failed": {"company": "Acme", "plan_name": "Starter", "amount": 2900, "currency": "USD",
                           "reason": "Kartın bakiyesi yetersiz", "retry_url": "http://x/billing/payment/fail?oid=1"},
        "trial_reminder": {**life, "days_left": 3},
        "trial_ended": life,
        "renewal_notice": {**life, "days_left": 7, "card": False},
        "renewal_failed": {**life, "step": 1, "card": True, "reason": "Kartın bakiyesi yetersiz"},
        "subscription_canceled": {**life, "reason": "unpaid"},
        "cancel_scheduled": life,
        "plan_change_scheduled": life,
        "plan_changed": {**life, "previous_plan_name": "Starter", "charged": 4667,
                         "invoice_number": "INV-2026-000002"},
        "card_removed": {**life, "card_label": "Visa ending 4358", "removed_by": "Ayşe"},
        "refund_issued": {"company": "Acme", "amount": 1500, "currency": "USD", "paid": 2900,
                          "paid_at": "2026-11-27T09:00:00Z", "description": "Starter plan", "reason": "Paid twice",
                          "tz": "Europe/Istanbul"},
        "usage_warning": {"name": "Ayşe", "company": "Acme", "plan_name": "Starter", "limit": "workspaces",
                          "level": 80, "over": False, "amount": "4 of 5 workspaces", "upgrade_path": "/billing/plan/team",
                          "suggested_name": "Team", "suggested_limits": "20 workspaces and 50 GB storage"},
        "usage_over_scheduled_plan": {**life, "reasons": ["You use 12 workspaces; Starter allows 5."]},
        "price_change_notice": {"name": "Ayşe", "company": "Acme", "plan": {"__plan__": True, "code": "team", "name_en": "Team", "name_tr": "Ekip", "description_en": "",
                 "description_tr": "", "price": 9900, "currency": "USD", "interval": "month", "workspaces": 20,
                 "storage_gb": 50, "trial_days": 14, "sort_order": 20, "public": True, "archived_at": None,
                 "featured": True}, "old_price": 9900,
                                "new_price": 11900, "currency": "USD", "from_date": "2027-01-11T09:00:00Z",
                                "tz": "Europe/Istanbul", "dashboard_url": "http://x/billing/"},
        "subscription_canceled_by_staff": {**life, "when": "now", "refund": 1871, "ended_at": "2026-12-22T09:00:00Z"},
        "subscription_resumed": life,
        "free_days_granted": {**life, "days": 10, "trial": False, "until": "2027-01-21T09:00:00Z"},
        "upgrade_offered": {**life, "new_plan_name": "Team", "amount": 4516, "days_left": 20,
                            "change_url": "http://x/billing/plan/team"},
        "security_alert": {"name": "Ayşe", "kind": "email_changed", "when": "2026-11-27T09:00:00Z",
                           "tz": "Europe/Istanbul", "ip": "10.0.0.1", "browser": "Chrome", "system": "Linux",
                           "reset_url": "http://x/auth/forgot-password", "account_url": "http://x/billing/account",
                           "is_staff": False, "old_email": "a@example.com", "new_email": "b@example.com",
                           "undo_url": "http://x/auth/undo-email/t", "undo_days": 7},
        "staff_invite": {"inviter": "Ayşe", "role": "finance", "invite_url": "http://x/i", "days": 7},
    }
    names = {p.stem for p in Path(mail.TEMPLATES, "emails").glob("*.txt")}
    missing = names - set(samples)
    assert not missing, f"add a sample context for {missing}"
    for name, context in samples.items():
        subject, text, html = mail.render(name, settings, json.loads(json.dumps(context)))
        assert subject and text.strip() and "</html>" in html, name


# --- one message never holds up the others; a crash re-sends at most one ------------------


def over_smtp(settings, sink):
    return settings.replace(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none")


def queue_template(db, settings, key, to, template="staff_alert"):
    with write(db):
        mail.enqueue(db, START, settings, template=template, to=to, dedupe_key=key,
                     context={"title": f"Hello {key}", "body": "Body"})


def test_a_message_that_cannot_be_sent_fails_alone_and_the_rest_go(db, settings, smtp):
    """Addresses kept from before sign-up checked them properly, and a template bug: each of
    these waits for a retry with its reason, the good ones arrive once, nothing arrives twice."""
    queue_template(db, settings, "first", "first@example.com")
    queue_template(db, settings, "utf8", "ayşe@örnek.com.tr")  # this server does not offer SMTPUTF8
    queue_template(db, settings, "comma", "a,b@example.com")  # would have mailed a second recipient
    queue_template(db, settings, "render", "render@example.com", template="no_such_template")
    queue_template(db, settings, "idna", "ali@örnek.com.tr")  # fine: the domain travels as IDNA
    queue_template(db, settings, "last", "last@example.com")
    smtp_settings = over_smtp(settings, smtp)

    assert mail.deliver_due(db, START, smtp_settings) == {"sent": 3, "retrying": 3, "failed": 0}
    assert [e["rcpt_tos"] for e in smtp.envelopes] == [["first@example.com"], ["ali@xn--rnek-4qa.com.tr"],
                                                        ["last@example.com"]]
    assert [m["To"] for m in smtp.received()] == ["first@example.com", "ali@xn--rnek-4qa.com.tr",
                                                  "last@example.com"]
    waiting = {row["dedupe_key"]: row for row in rows(db, "SELECT * FROM outbox WHERE status != 'sent'")}
    assert set(waiting) == {"utf8", "comma", "render"}
    assert "SMTPUTF8" in waiting["utf8"]["last_error"]
    assert "not a single plain email address" in waiting["comma"]["last_error"]
    assert "could not render" in waiting["render"]["last_error"]
    for row in waiting.values():
        assert row["status"] == "pending" and row["attempts"] == 1
        assert row["next_attempt_at"] == "2026-11-27T09:01:00Z"  # backs off one minute

    assert mail.deliver_due(db, START, smtp_settings)["sent"] == 0
    retry = mail.deliver_due(db, START + timedelta(minutes=1), smtp_settings)
    assert retry == {"sent": 0, "retrying": 3, "failed": 0}
    assert len(smtp.received()) == 3  # nothing sent twice


def test_an_address_that_needs_smtputf8_is_sent_with_it_when_the_server_offers_it(db, settings, smtp_utf8):
    queue_template(db, settings, "utf8", "ayşe@örnek.com.tr")
    queue_template(db, settings, "ascii", "ayse@example.com")
    assert mail.deliver_due(db, START, over_smtp(settings, smtp_utf8))["sent"] == 2
    international, plain = smtp_utf8.envelopes
    assert international["rcpt_tos"] == ["ayşe@örnek.com.tr"] and "SMTPUTF8" in international["mail_options"]
    assert plain["rcpt_tos"] == ["ayse@example.com"] and "SMTPUTF8" not in plain["mail_options"]
    received = smtp_utf8.received()
    assert [m["To"] for m in received] == ["ayşe@örnek.com.tr", "ayse@example.com"]
    assert received[0]["Subject"] == "Staff alert: Hello utf8"
    assert received[0].get_body(("plain",)).get_content().startswith("Hello utf8")


@pytest.mark.parametrize("method, error", [
    ("rcpt", UnicodeEncodeError("ascii", "boom", 0, 1, "ordinal not in range(128)")),
    ("data", TypeError("a bug in the mail library")),
])
def test_an_unexpected_error_inside_smtplib_fails_only_that_message(db, settings, smtp, monkeypatch, method,
                                                                    error):
    """The error comes after MAIL FROM was accepted, so the server is inside a transaction;
    the next message still goes out on the same connection."""
    import smtplib

    original = getattr(smtplib.SMTP, method)

    def flaky(self, *args, **kwargs):
        if "boom" in (args[0] if method == "rcpt" else args[0].decode("ascii", "replace")):
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, method, flaky)
    queue_template(db, settings, "before", "before@example.com")
    queue_template(db, settings, "boom", "boom@example.com")
    queue_template(db, settings, "after", "after@example.com")
    assert mail.deliver_due(db, START, over_smtp(settings, smtp)) == {"sent": 2, "retrying": 1, "failed": 0}
    assert [m["To"] for m in smtp.received()] == ["before@example.com", "after@example.com"]
    [boom] = outbox(db, dedupe_key="boom")
    assert boom["status"] == "pending" and type(error).__name__ in boom["last_error"]
    assert mail.next_due(db) == START + mail.backoff(1)


class CrashAfterAccepted(mail.SmtpTransport):
    """The process dies right after the server said 250 to the n-th message."""

    def __init__(self, settings, n):
        super().__init__(settings)
        self.n = n
        self.sent = 0

    def send(self, msg, row):
        super().send(msg, row)
        self.sent += 1
        if self.sent == self.n:
            raise SystemExit("killed")


def test_a_crash_mid_batch_re_sends_only_the_message_in_flight(db, settings, smtp):
    from collections import Counter

    for n in range(5):
        queue_template(db, settings, f"k{n}", f"person{n}@example.com")
    smtp_settings = over_smtp(settings, smtp)
    with pytest.raises(SystemExit):
        mail.deliver_due(db, START, smtp_settings, CrashAfterAccepted(smtp_settings, 3))
    assert [row["status"] for row in outbox(db)] == ["sent", "sent", "pending", "pending", "pending"]

    # The next run, once the dead sender's lease is over, sends the rest.
    assert mail.deliver_due(db, START + mail.LEASE, smtp_settings)["sent"] == 3
    deliveries = Counter(m["X-Billing-Template"] and m["Message-ID"] for m in smtp.received())
    [(twice, _)] = [(message_id, count) for message_id, count in deliveries.items() if count == 2]
    third = outbox(db, dedupe_key="k2")[0]
    assert twice.startswith(f"<{third['id']}.")  # the one the server took just before the crash
    assert sorted(deliveries.values()) == [1, 1, 1, 1, 2]
    assert {row["status"] for row in outbox(db)} == {"sent"}


def test_dev_mail_preview_opens_links_in_a_new_tab(client):
    import re

    register(client)
    page = wait_for(lambda: (p := client.get("/dev/mail")) and "Welcome to PayTR Billing" in p.text and p,
                    message="the welcome email to be captured")
    message_id = re.search(r'href="/dev/mail/(\d+)"', page.text).group(1)
    frame = re.search(r"<iframe[^>]*>", client.get(f"/dev/mail/{message_id}").text).group(0)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    preview = client.get(f"/dev/mail/{message_id}/html")
    assert "sandbox allow-popups allow-popups-to-escape-sandbox" in preview.headers["content-security-policy"]
    head = re.search(r"<head[^>]*>(.*?)</head>", preview.text, re.S).group(1)
    assert '<base target="_blank">' in head
    assert '<a href="http://testserver/billing/"' in preview.text  # the links themselves are as sent
