"""The landing and pricing pages, as each reader sees them: a visitor is offered a free trial;
a customer sees their plan marked and the others as the change-plan flow would take them
(upgrade now, or switch at period end); a company that has had its trial is never promised
another; staff and members see the plans without buttons."""

import re

import pytest

from billing import accounts
from billing.clock import parse
from billing.db import write
from conftest import START, login, post, register, visible
from i18n_support import english_left
from test_lifecycle import pay_iframe, sub, tick
from test_team import invite_and_join

TR = {"Accept-Language": "tr-TR,tr;q=0.9"}
TRIAL_LINE = "Every plan starts with a 14-day free trial"


def card(response, code: str) -> str:
    """The words of one plan's card."""
    found = re.search(rf'<article [^>]*aria-labelledby="plan-{code}">(.*?)</article>', response.text, re.S)
    assert found, f"no card for {code}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def card_html(response, code: str) -> str:
    return re.search(rf'<article [^>]*aria-labelledby="plan-{code}">(.*?)</article>', response.text, re.S).group(1)


def add_plan(db, code, name, **values):
    """A plan beside the three the catalog starts with (as staff would create it)."""
    with write(db):
        row = next(db.query("SELECT * FROM plans WHERE code = 'starter'"))
        row.update(code=code, name_en=name, name_tr=name, sort_order=50, featured=0, **values)
        db["plans"].insert(row)


# --- a visitor ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/pricing"])
def test_a_visitor_is_offered_a_trial_on_every_plan_and_reads_the_questions(client, path):
    page = client.get(path)
    text = visible(page)
    assert TRIAL_LINE in text
    for code in ("starter", "team", "enterprise"):
        assert "Start free trial" in card(page, code) and "14-day free trial" in card(page, code)
        assert f'href="/auth/register?plan={code}"' in card_html(page, code)
    assert "Current plan" not in text and "/billing/subscribe/" not in page.text
    for question in ("How does the free trial work?", "Can I cancel any time?", "Can I change plans later?",
                     "Do prices include VAT? Will I get an invoice?", "Is it safe to pay by card?"):
        assert f"<summary>{question}</summary>" in page.text
    assert "you don't need a card to start it" in text
    assert "every price shown includes 20% VAT, and it is exactly the amount you pay" in text
    assert "we never see or store your card number" in text
    # Renewals by emailed link where the operator does not charge saved cards (the test default).
    assert "Do I have to save my card?" not in text and "7 days before it starts" in text


def test_the_home_page_says_what_is_sold(client):
    page = client.get("/")
    assert re.findall(r"<h1[^>]*>(.*?)</h1>", page.text, re.S) == ["PayTR Billing for your team"]
    assert "A subscription for your company: every plan gives your team its workspaces and storage" in visible(page)
    assert '<h3 id="plan-starter">Starter</h3>' in page.text  # under the section's h2
    pricing = client.get("/pricing")
    assert re.findall(r"<h1[^>]*>(.*?)</h1>", pricing.text, re.S) == ["Simple monthly plans"]
    assert '<h2 id="plan-starter">Starter</h2>' in pricing.text


@pytest.mark.parametrize("env", [{"PAYTR_RECURRING": "1", "VAT_RATE": "10"}])
def test_where_cards_are_saved_the_questions_say_it_is_optional(client, env):
    text = visible(client.get("/"))
    assert "Do I have to save my card?" in text and "You can remove it any time from your billing page" in text
    assert "every price shown includes 10% VAT" in text


def test_a_visitor_reads_it_in_turkish(client):
    page = client.get("/", headers=TR)
    assert english_left(page.text, also_allowed=("PayTR Billing",)) == []
    text = visible(page)
    assert "Ekibiniz için PayTR Billing" in text and "Her plan 14 günlük ücretsiz denemeyle başlar" in text
    assert "gösterilen her fiyata %20 KDV dahildir" in text and "Sık sorulan sorular" in text


# --- customers ----------------------------------------------------------------------------


def test_on_a_trial_each_plan_offers_subscribe_and_no_second_trial(client):
    register(client, plan="team")
    page = client.get("/")
    text = visible(page)
    assert TRIAL_LINE not in text and "Start free trial" not in text
    assert "Pick the plan that fits; change or cancel it any time." in text
    assert "Your free trial ends on 11 December 2026." in text
    assert card(page, "team").startswith("Team Current plan")
    for code in ("starter", "team", "enterprise"):
        assert f'action="/billing/subscribe/{code}"' in card_html(page, code) and "Subscribe" in card(page, code)
    assert "Current plan" not in card(page, "starter")
    assert "The free trial comes once, with a new account." in text


def test_active_on_starter_marks_it_and_offers_upgrades_through_the_change_plan_page(client, app):
    register(client)
    pay_iframe(client, app)
    page = client.get("/pricing")
    starter = card(page, "starter")
    assert starter.startswith("Starter Current plan") and "Paid until" in starter
    assert "<a " not in card_html(page, "starter") and "<button" not in card_html(page, "starter")
    assert "Upgrade to Team" in card(page, "team") and 'href="/billing/plan/team"' in card_html(page, "team")
    assert "Upgrade to Enterprise" in card(page, "enterprise")
    assert TRIAL_LINE not in visible(page) and "/billing/subscribe/" not in page.text
    # The link is the dashboard's: the change-plan page quotes the prorated charge.
    change = client.get("/billing/plan/team")
    assert change.status_code == 200 and "Upgrade and pay" in visible(change)


def test_a_cheaper_plan_and_another_interval_switch_at_period_end_and_another_currency_is_not_offered(client, app, db):
    add_plan(db, "starter-yearly", "Starter Yearly", interval="year", price=29000)
    add_plan(db, "starter-try", "Starter TL", currency="TRY", price=99900)
    register(client, plan="team")
    pay_iframe(client, app, plan="team")
    page = client.get("/")
    assert "Switch to Starter at period end" in card(page, "starter")
    assert 'href="/billing/plan/starter"' in card_html(page, "starter")
    # Yearly costs more, yet like the change-plan flow it waits for the period's end.
    assert "Switch to Starter Yearly at period end" in card(page, "starter-yearly")
    assert "Upgrade to Enterprise" in card(page, "enterprise")
    assert "Not available: your subscription is paid in USD." in card(page, "starter-try")
    assert "/billing/plan/starter-try" not in page.text
    # Scheduled: the plan says when it starts instead of offering the move again.
    post(client, "/billing/plan/downgrade", {"plan": "starter"}, token_from="/billing/plan/starter")
    assert re.search(r"Starts \d+ \w+ \d{4}", card(client.get("/"), "starter"))


def test_an_ending_subscription_is_resumed_before_plans_change(client, app):
    register(client)
    pay_iframe(client, app)
    post(client, "/billing/cancel", token_from="/billing/cancel")
    page = client.get("/")
    text = visible(page)
    assert re.search(r"Your subscription ends on \d+ \w+ \d{4}\. To change plans, first resume it", text)
    assert card(page, "starter").startswith("Starter Current plan") and "Ends on" in card(page, "starter")
    assert "Upgrade" not in card(page, "team") and "/billing/plan/" not in page.text


def test_a_canceled_company_pays_at_once_and_is_not_promised_a_trial(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    post(client, "/billing/cancel", token_from="/billing/cancel")
    tick(client, app, clock, parse(sub(db)["current_period_end"]))
    assert sub(db)["status"] == "canceled"
    login(client)  # a month later: the session has lapsed
    page = client.get("/")
    text = visible(page)
    assert TRIAL_LINE not in text and "day free trial" not in text and "Start free trial" not in text
    assert "Your subscription has ended. Subscribe again below whenever you like." in text
    assert "Current plan" not in text
    for code in ("starter", "team", "enterprise"):
        assert f'action="/billing/subscribe/{code}"' in card_html(page, code)


def test_a_member_sees_the_plan_but_only_the_owner_changes_it(client, app, db):
    register(client)
    pay_iframe(client, app)
    colleague = invite_and_join(client, app, db)
    page = colleague.get("/")
    assert "Only the account owner can change the plan." in visible(page)
    assert card(page, "starter").startswith("Starter Current plan")
    assert "/billing/plan/" not in page.text and "/billing/subscribe/" not in page.text


# --- staff -------------------------------------------------------------------------------


def test_staff_see_the_public_offer_without_buttons(client, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    login(client, "ops@example.com")
    page = client.get("/")
    text = visible(page)
    assert "You're signed in as staff: this is the page visitors see, without the buttons to sign up or pay." in text
    assert 'href="/admin/plans"' in page.text and TRIAL_LINE in text
    for code in ("starter", "team", "enterprise"):
        assert "<a " not in card_html(page, code) and "<form" not in card_html(page, code)


def test_an_overdue_subscription_is_paid_before_plans_change(client, app, db):
    register(client)
    pay_iframe(client, app)
    with write(db):  # as a failed renewal leaves it
        db.execute("UPDATE subscriptions SET status = 'past_due', price = 1900")
    page = client.get("/pricing")
    assert "Your payment is overdue: pay it before changing plans." in visible(page)
    assert 'href="/billing/renew"' in page.text and "/billing/plan/" not in page.text
    starter = card(page, "starter")
    assert starter.startswith("Starter Current plan") and "Payment overdue." in starter
    assert "You pay $19.00 / month." in starter  # renews below today's catalog price
