"""What an overdue customer sees and receives: one email per failure, retries a day apart even when
the renewal is noticed late, an overdue page that says what is overdue, and no "pay now" banner
while PayTR is confirming a payment. Also: cancel, resume, cancel writes to the owner once."""

from datetime import timedelta

import pytest

from billing.clock import parse
from billing.db import rows
from conftest import login, post, register, visible
from test_lifecycle import emails, pay_iframe, pay_saving_card, sub, tick

DAY = timedelta(days=1)


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def test_a_renewal_noticed_late_sends_one_email_then_retries_a_day_later(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    end = parse(sub(db)["current_period_end"])
    late = end + 2 * DAY  # the app was down over the period end
    tick(client, app, clock, late)
    assert sub(db)["status"] == "past_due"
    assert len(emails(db, "renewal_failed")) == 1
    tick(client, app, clock, late + timedelta(seconds=31))
    assert len(emails(db, "renewal_failed")) == 1  # not a second email 31 s later
    tick(client, app, clock, late + DAY)
    assert len(emails(db, "renewal_failed")) == 2  # the first retry, a day after the failure


def test_a_declined_card_noticed_late_is_charged_once_and_emails_once(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    end = parse(sub(db)["current_period_end"])
    app.state.emulator.set_card_outcome("4358", "insufficient_funds")
    late = end + 2 * DAY
    tick(client, app, clock, late)
    tick(client, app, clock, late + timedelta(seconds=31))
    charges = rows(db, "SELECT attempt, status FROM payments WHERE method = 'recurring' ORDER BY id")
    assert charges == [{"attempt": 0, "status": "failed"}]
    assert len(emails(db, "renewal_failed")) == 1
    tick(client, app, clock, late + DAY)
    assert len(rows(db, "SELECT id FROM payments WHERE method = 'recurring'")) == 2


def test_the_overdue_page_says_which_month_is_overdue(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    end = parse(sub(db)["current_period_end"])  # 2027-01-11T09:00:00Z
    tick(client, app, clock, end + DAY)
    login(client)
    text = visible(client.get("/billing/renew"))
    assert "Pay your overdue month" in text and "Pay for the next month" not in text
    assert "The month from 11 January 2027 to 11 February 2027 was due on 11 January 2027" in text
    assert "Overdue period" in text


def test_the_past_due_banner_is_hidden_while_a_payment_is_confirming(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end + DAY)
    login(client)
    assert 'class="banner pastdue"' in client.get("/billing/").text
    response = post(client, "/billing/subscribe/starter", token_from="/billing/renew")
    assert response.status_code == 303
    assert 'class="banner pastdue"' not in client.get("/billing/").text  # the checkout is open at PayTR
    clock.at = end + DAY + timedelta(minutes=45)  # the checkout page expired unpaid
    assert 'class="banner pastdue"' in client.get("/billing/").text


def test_cancel_resume_cancel_tells_the_owner_once_per_period(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    for path in ("/billing/cancel", "/billing/resume", "/billing/cancel"):
        clock.at += timedelta(hours=5)  # a few hours apart
        response = post(client, path, token_from="/billing/")
        assert response.status_code == 303, response.text[:200]
    assert sub(db)["cancel_at_period_end"] == 1
    assert len(emails(db, "cancel_scheduled")) == 1
