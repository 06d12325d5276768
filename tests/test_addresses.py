"""Email addresses: checked with email-validator where people type them, kept in one normal
form, and refused at the form when the mail server could never deliver to them."""

from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

from billing import accounts, cli
from billing.app import create_app
from billing.clock import FixedClock
from billing.db import scalar
from conftest import START, login, make_settings, post, register, visible, wait_for

CANNOT_DELIVER = "This address has characters our mail server cannot deliver to (ş); use another address."


def counts(db):
    return {t: scalar(db, f"SELECT count(*) FROM {t}") for t in ("companies", "users", "outbox")}


@contextmanager
def browser(settings):
    with TestClient(create_app(settings, clock=FixedClock(START)), base_url="http://testserver") as client:
        yield client


def log_out(client):
    assert post(client, "/auth/logout", token_from="/billing/").status_code == 303


@pytest.fixture
def env(request):
    return getattr(request, "param", {})


# A mail server that has not been declared to offer SMTPUTF8 (nothing needs to listen).
NO_SMTPUTF8 = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": 9, "SMTP_TLS": "none"}


def test_smtputf8_is_on_for_the_capture_and_off_for_a_server_unless_the_operator_says_so(tmp_path):
    assert make_settings(tmp_path).smtp_smtputf8 is True
    assert make_settings(tmp_path, SMTP_HOST="mail.example.com").smtp_smtputf8 is False
    assert make_settings(tmp_path, SMTP_HOST="mail.example.com", SMTP_SMTPUTF8="1").smtp_smtputf8 is True


@pytest.mark.parametrize("env", [NO_SMTPUTF8], indirect=True)
def test_sign_up_refuses_an_address_the_mail_server_cannot_deliver_to(client, db):
    before = counts(db)
    response = register(client, email="ayşe@örnek.com.tr")
    assert response.status_code == 422
    assert CANNOT_DELIVER in visible(response)
    assert counts(db) == before


@pytest.mark.parametrize("env", [NO_SMTPUTF8], indirect=True)
def test_forgot_password_and_invites_follow_the_same_rule(client, db):
    forgot = post(client, "/auth/forgot-password", {"email": "ayşe@örnek.com.tr"}, token_from="/auth/forgot-password")
    assert forgot.status_code == 422 and CANNOT_DELIVER in visible(forgot)
    register(client)
    before = counts(db)
    invite = post(client, "/billing/team/invite", {"email": "ayşe@örnek.com.tr"}, token_from="/billing/team")
    assert invite.status_code == 422 and CANNOT_DELIVER in visible(invite)
    assert counts(db) == before and scalar(db, "SELECT count(*) FROM invites") == 0


def test_create_staff_follows_the_same_rule(tmp_path, capsys):
    settings = make_settings(tmp_path, **NO_SMTPUTF8)
    assert cli.create_staff(settings, "ayşe@örnek.com.tr", None) == 2
    assert CANNOT_DELIVER in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("ay\x00se@example.com", "cannot contain control characters"),
    ("ayse@exam\tple.com", "cannot contain control characters"),
    ("ayse@example.com\u0085x", "cannot contain control characters"),
    ("ayse@example.com, patron@example.com", "Enter one email address, without commas or semicolons."),
    ("ayse,patron@example.com", "Enter one email address, without commas or semicolons."),
    ("Ayşe <ayse@example.com>", "Enter a valid email address, like name@company.com."),
    ("ayse@example", "Enter a valid email address, like name@company.com. The part after the @-sign is not valid."),
    ("ayse@localhost", "Enter a valid email address"),
    ("ayse@", "Enter a valid email address"),
])
def test_sign_up_refuses_what_is_not_one_address_and_says_why(client, db, value, message):
    before = counts(db)
    response = register(client, email=value)
    assert response.status_code == 422
    assert message in visible(response)
    assert counts(db) == before


def test_an_address_is_kept_in_one_form_however_it_is_typed():
    stored = accounts.check_email("  Ali@Örnek.COM.tr ")
    assert stored == "ali@örnek.com.tr"
    assert accounts.check_email("ALI@XN--RNEK-4QA.COM.TR") == stored  # the domain typed as IDNA
    assert accounts.normalize_email("ali@xn--rnek-4qa.com.tr") == stored  # what login looks up
    assert accounts.check_email("Ayşe@Örnek.com.tr", smtputf8=True) == "ayşe@örnek.com.tr"
    assert accounts.check_email("AYŞE@örnek.com.tr", smtputf8=True) == "ayşe@örnek.com.tr"
    assert accounts.normalize_email("not an address") == "not an address"  # finds no one, raises nothing


def test_an_international_domain_signs_up_without_smtputf8_and_its_mail_goes_as_idna(tmp_path, smtp, db):
    settings = make_settings(tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="none")
    with browser(settings) as client:
        assert register(client, email="Ali@Örnek.com.tr").status_code == 303
        [welcome] = wait_for(lambda: smtp.received(), message="the welcome email over SMTP")
        log_out(client)
        assert login(client, email="ali@xn--rnek-4qa.com.tr").status_code == 303  # same account
    assert scalar(db, "SELECT email FROM users") == "ali@örnek.com.tr"
    assert welcome["To"] == "ali@xn--rnek-4qa.com.tr"
    assert smtp.envelopes[0]["rcpt_tos"] == ["ali@xn--rnek-4qa.com.tr"]
    assert "SMTPUTF8" not in smtp.envelopes[0]["mail_options"]


def test_with_smtputf8_ayse_signs_up_logs_in_and_gets_her_welcome_email(tmp_path, smtp_utf8, db):
    settings = make_settings(tmp_path, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_utf8.port, SMTP_TLS="none",
                             SMTP_SMTPUTF8="1")
    with browser(settings) as client:
        assert register(client, email="Ayşe@Örnek.com.tr").status_code == 303
        [welcome] = wait_for(lambda: smtp_utf8.received(), message="the welcome email over SMTP")
        log_out(client)
        assert login(client, email="AYŞE@ÖRNEK.COM.TR").status_code == 303
    assert scalar(db, "SELECT email FROM users") == "ayşe@örnek.com.tr"
    assert welcome["To"] == "ayşe@örnek.com.tr"
    assert welcome["Subject"] == "Welcome to PayTR Billing, your 14-day trial has started"
    assert smtp_utf8.envelopes[0]["rcpt_tos"] == ["ayşe@örnek.com.tr"]
    assert "SMTPUTF8" in smtp_utf8.envelopes[0]["mail_options"]


def test_the_development_capture_takes_any_address_and_shows_it(client, db):
    assert register(client, email="ayşe@örnek.com.tr").status_code == 303
    page = wait_for(lambda: (p := client.get("/dev/mail")) and "Welcome to PayTR Billing" in p.text and p,
                    message="the welcome email to be captured")
    assert "ayşe@örnek.com.tr" in visible(page)
    assert scalar(db, "SELECT status FROM outbox") == "sent"
