"""The operator's catalog: plans in the database, edited at /admin/plans, yearly periods, three
currencies, archived and hidden plans, and price changes that reach subscribers only with notice."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from billing import accounts, plans, subscriptions
from billing.clock import iso, parse
from billing.db import one, rows, scalar
from conftest import START, login, post, register, second_browser, visible
from test_lifecycle import DAY, emails, pay_iframe, pay_saving_card, sub, tick

IST = ZoneInfo("Europe/Istanbul")


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


@pytest.fixture
def admin(app, db, password_hash):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    browser = second_browser(app)
    assert login(browser, email="ops@example.com").status_code == 303
    return browser


PLAN_FORM = {"code": "kurumsal-yillik", "name_en": "Business yearly", "name_tr": "Kurumsal yıllık",
             "description_en": "For teams that plan a year ahead.", "description_tr": "Yılı planlayan ekipler için.",
             "price": "11.999,00", "currency": "TRY", "interval": "year", "workspaces": "", "storage_gb": "500",
             "trial_days": "30", "sort_order": "5", "public": "1", "reason": "Yıllık teklif"}


def create(admin, **changes):
    return post(admin, "/admin/plans/new", {**PLAN_FORM, **changes}, token_from="/admin/plans/new")


# --- periods -------------------------------------------------------------------------------


def test_a_yearly_period_is_twelve_calendar_months_on_the_anchor_day():
    leap = parse("2028-02-29T09:00:00Z")
    one_year = subscriptions.add_month(leap, 29, IST, "12:00:00", 12)
    assert one_year == parse("2029-02-28T09:00:00Z")  # no Feb 29: the month's last day
    assert subscriptions.add_month(parse("2031-02-28T09:00:00Z"), 29, IST, "12:00:00", 12) == \
        parse("2032-02-29T09:00:00Z")  # back on the anchor day when it exists
    assert subscriptions.add_month(parse("2026-12-31T09:00:00Z"), 31, IST, "12:00:00", 12) == \
        parse("2027-12-31T09:00:00Z")
    assert subscriptions.add_month(parse("2026-12-31T09:00:00Z"), 31, IST, "12:00:00") == \
        parse("2027-01-31T09:00:00Z")  # monthly is unchanged


# --- editing the catalog -------------------------------------------------------------------


def test_staff_create_a_yearly_try_plan_and_it_is_offered_at_once(client, admin, db):
    answer = create(admin)
    assert answer.status_code == 303, visible(answer)[:600]
    plan = plans.get(db, "kurumsal-yillik")
    assert (plan.price, plan.currency, plan.interval, plan.workspaces, plan.trial_days) == (1199900, "TRY", "year",
                                                                                          None, 30)
    entry = one(db, "SELECT * FROM audit_log WHERE action = 'plan.create'")
    assert entry["target"] == "plan:kurumsal-yillik" and entry["reason"] == "Yıllık teklif"
    pricing = visible(client.get("/pricing", headers={"accept-language": "tr"}))
    assert "Kurumsal yıllık" in pricing and "Yılı planlayan ekipler için." in pricing and "/ yıl" in pricing
    assert "₺11.999,00" in pricing
    english = visible(client.get("/pricing", headers={"accept-language": "en"}))
    assert "Business yearly" in english and "30-day free trial" in english


@pytest.mark.parametrize("field, value, message", [
    ("code", "Kötü Kod", "lowercase letters"),
    ("name_tr", "", "Enter the turkish name"),
    ("price", "12,3,4", "Enter the price like"),
    ("price", "0,50", "at least 1.00"),
    ("price", "29.01", "No net amount gives exactly this price"),
    ("currency", "GBP", "Choose TRY, USD or EUR"),
    ("trial_days", "400", "from 0 to 365"),
    ("workspaces", "٣", "whole number of workspaces"),
])
def test_a_wrong_field_is_named_and_nothing_is_saved(admin, db, field, value, message):
    answer = create(admin, **{field: value})
    assert answer.status_code == 422 and message.lower() in visible(answer).lower()
    assert plans.find(db, "kurumsal-yillik") is None and scalar(db, "SELECT count(*) FROM audit_log") == 0


def test_code_currency_and_interval_are_fixed_once_a_customer_used_the_plan(client, app, admin, db):
    register(client)  # on Starter's trial
    form = {"name_en": "Starter", "name_tr": "Başlangıç", "price": "29.00", "currency": "EUR", "interval": "month",
            "storage_gb": "10", "workspaces": "5", "trial_days": "14", "public": "1", "reason": "euro"}
    answer = post(admin, "/admin/plans/starter", form, token_from="/admin/plans/starter")
    assert answer.status_code == 422 and "can no longer change" in visible(answer)
    assert plans.get(db, "starter").currency == "USD"
    renamed = post(admin, "/admin/plans/starter", {**form, "currency": "USD", "reason": "Türkçe ad"},
                   token_from="/admin/plans/starter")
    assert renamed.status_code == 303 and plans.get(db, "starter").name_tr == "Başlangıç"


def test_a_plan_in_use_is_archived_not_deleted_and_its_subscriber_keeps_renewing(client, app, clock, admin, db):
    register(client)
    pay_saving_card(client, app)
    refused = post(admin, "/admin/plans/starter/delete", {"reason": "eski"}, token_from="/admin/plans/starter")
    assert refused.status_code == 303 and plans.find(db, "starter") is not None
    post(admin, "/admin/plans/starter/archive", {"reason": "Yeni fiyatlandırma"}, token_from="/admin/plans/starter")
    assert plans.get(db, "starter").archived
    assert "Starter" not in visible(second_browser(app).get("/pricing"))  # no longer offered to anyone new
    # Its subscriber still sees it, as their current plan, with nothing to buy.
    mine = visible(client.get("/pricing"))
    assert "Starter Current plan" in mine and "/billing/subscribe/starter" not in client.get("/pricing").text
    assert client.get("/auth/register?plan=starter").status_code == 200  # falls back to the first offered plan
    assert post(client, "/billing/subscribe/starter", token_from="/billing/").status_code == 404
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end)
    assert sub(db)["plan"] == "starter" and sub(db)["current_period_end"] == "2027-02-11T09:00:00Z"


def test_an_unused_plan_can_be_deleted(admin, db):
    create(admin)
    answer = post(admin, "/admin/plans/kurumsal-yillik/delete", {"reason": "Yanlış oluşturuldu"},
                  token_from="/admin/plans/kurumsal-yillik")
    assert answer.status_code == 303 and plans.find(db, "kurumsal-yillik") is None
    assert one(db, "SELECT action FROM audit_log ORDER BY id DESC LIMIT 1")["action"] == "plan.delete"


def test_a_hidden_plan_is_not_offered_to_customers(client, admin, db):
    create(admin, public="", code="ozel")
    assert "Kurumsal yıllık" not in visible(client.get("/pricing", headers={"accept-language": "tr"}))
    register(client)
    assert post(client, "/billing/subscribe/ozel", token_from="/billing/").status_code == 404
    assert plans.get(db, "ozel").public is False  # staff can still move a customer to it


def test_support_can_read_the_catalog_but_not_change_it(app, db, password_hash):
    accounts.create_staff(db, START, email="destek@example.com", name="Destek", password_hash=password_hash,
                          staff_role="support")
    support = second_browser(app)
    login(support, email="destek@example.com")
    assert "Starter" in visible(support.get("/admin/plans"))
    assert support.get("/admin/plans/new").status_code == 403


# --- currencies and yearly plans through PayTR -----------------------------------------------


def test_a_yearly_try_plan_is_paid_in_tl_for_twelve_months_and_invoiced_in_lira(client, app, admin, db, clock):
    create(admin)
    register(client)
    pay_iframe(client, app, plan="kurumsal-yillik")
    payment = one(db, "SELECT * FROM payments")
    assert (payment["status"], payment["amount"], payment["currency"]) == ("succeeded", 1199900, "TRY")
    assert app.state.emulator.transaction(payment["merchant_oid"]).currency == "TL"  # PayTR's code for lira
    s = sub(db)
    assert (s["price"], s["currency"]) == (1199900, "TRY")
    start, end = parse(s["current_period_start"]), parse(s["current_period_end"])
    assert (end.year - start.year, end.month, end.day) == (1, start.month, start.day)
    invoice = one(db, "SELECT number FROM invoices")
    page = visible(client.get(f"/billing/invoices/{invoice['number']}"))
    assert "₺11,999.00" in page or "₺11.999,00" in page


def test_a_customer_cannot_switch_currency_and_switches_interval_at_period_end(client, app, admin, db):
    create(admin, code="team-yearly", currency="USD", price="990.00", name_en="Team yearly", name_tr="Ekip yıllık")
    create(admin, code="lira", currency="TRY", interval="month", price="999.00", name_en="Lira", name_tr="Lira")
    register(client)
    pay_iframe(client, app, plan="team")
    dashboard = visible(client.get("/billing/"))
    assert "Switch to Team yearly at period end" in dashboard and "Lira" not in dashboard
    assert client.get("/billing/plan/lira").status_code == 409
    page = client.get("/billing/plan/team-yearly")
    assert page.status_code == 200 and "happens on" in visible(page)


# --- price changes ------------------------------------------------------------------------


def edit_price(admin, price, apply=False, reason="Fiyat güncellemesi"):
    form = {"name_en": "Starter", "name_tr": "Starter", "description_en": "For small teams getting started.",
            "description_tr": "Yeni başlayan küçük ekipler için.", "price": price, "currency": "USD",
            "interval": "month", "workspaces": "5", "storage_gb": "10", "trial_days": "14", "sort_order": "10",
            "public": "1", "reason": reason, **({"apply_to_existing": "1"} if apply else {})}
    return post(admin, "/admin/plans/starter", form, token_from="/admin/plans/starter")


def test_a_new_price_is_for_new_subscriptions_unless_staff_apply_it(client, app, clock, admin, db):
    register(client)
    pay_saving_card(client, app)
    assert edit_price(admin, "35.00").status_code == 303
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end)
    renewal = one(db, "SELECT amount FROM payments WHERE method = 'recurring'")
    assert renewal["amount"] == 2900 and sub(db)["price"] == 2900  # they keep their price
    assert emails(db, "price_change_notice") == []
    other = second_browser(app)
    register(other, email="mehmet@example.com", company="Demir Ltd")
    post(other, "/billing/subscribe/starter", token_from="/billing/")
    assert one(db, "SELECT amount FROM payments WHERE email = 'mehmet@example.com'")["amount"] == 3500


def test_an_applied_price_waits_for_the_first_renewal_after_the_notice_then_sticks(client, app, clock, admin, db):
    register(client)
    pay_saving_card(client, app)  # paid 27 Nov; renews 11 Jan (after the trial), 11 Feb, 11 Mar ...
    clock.at = parse("2027-01-01T09:00:00Z")
    login(admin, email="ops@example.com")  # a month on: a fresh session
    assert edit_price(admin, "35.00", apply=True).status_code == 303
    s = sub(db)
    assert (s["next_price"], s["next_price_from"]) == (3500, "2027-02-11T09:00:00Z")  # 11 Jan is < 30 days away
    [notice] = emails(db, "price_change_notice")
    assert "$29.00" in notice["body_text"] and "$35.00" in notice["body_text"]
    assert "11 February 2027" in notice["body_text"]
    entry = one(db, "SELECT * FROM audit_log WHERE action = 'plan.price_change'")
    assert '"price": 2900' in entry["before"] and '"applied_to_existing": 1' in entry["after"]
    tick(client, app, clock, parse("2027-01-11T09:00:00Z"))
    tick(client, app, clock, parse("2027-02-11T09:00:00Z"))
    tick(client, app, clock, parse("2027-03-11T09:00:00Z"))
    amounts = [r["amount"] for r in rows(db, "SELECT amount FROM payments WHERE method = 'recurring' ORDER BY id")]
    assert amounts == [2900, 3500, 3500]
    assert sub(db)["price"] == 3500 and sub(db)["next_price"] is None
    changed = one(db, "SELECT data FROM events WHERE kind = 'subscription.price_changed'")
    assert '"previous_price": 2900' in changed["data"] and '"price": 3500' in changed["data"]


def test_price_changes_need_a_recent_password(client, app, clock, admin, db):
    clock.advance(timedelta(minutes=11))
    answer = admin.get("/admin/plans/starter", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/auth/confirm")


def test_a_yearly_plans_renewal_notice_and_renew_page_speak_of_a_year(settings):
    from billing import mail

    context = {"name": "Ayşe", "company": "Acme", "plan_name": "Team yearly", "next_plan_name": "Team yearly",
               "price": 99000, "currency": "USD", "period_end": "2027-11-27T09:00:00Z", "grace_days": 7,
               "tz": "Europe/Istanbul", "pay_url": "http://x/billing/renew", "dashboard_url": "http://x/billing/",
               "days_left": 7, "card": False, "interval": "year"}
    subject, text, html = mail.render("renewal_notice", settings, context)
    assert "pay for the next year" in subject and "next year of the Team yearly plan" in text
    assert "month" not in text and "Time to pay for next year" in html
    subject, text, _html = mail.render("renewal_notice", settings, context, "tr")
    assert "yıl" in subject and "ay " not in text
