"""A subscription's life on autopilot, through the real app, its jobs and the PayTR emulator,
with a clock the tests move: reminders, renewals by pay link and by saved card, dunning,
cancel and resume, plan changes, reconciliation of a lost callback."""

import html
import re
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from billing import jobs
from billing.app import create_app
from billing.clock import iso, parse
from billing.db import one, rows, scalar
from conftest import START, login, outbox, post, register, visible

DAY = timedelta(days=1)
TRIAL_END = START + 14 * DAY  # 2026-12-11T09:00:00Z
CARD = {"cc_owner": "AYSE YILMAZ", "card_number": "4355084355084358", "expiry_month": "12", "expiry_year": "30",
        "cvv": "000"}


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def tick(client, app, clock_, at):
    """Run the scheduler's tick as of `at` and let PayTR's callbacks land."""
    clock_.at = at
    report = client.portal.call(jobs.tick, app.state.jobs, at)
    client.portal.call(app.state.emulator.wait_idle, 15)
    return report


def emails(db, template):
    return [m for m in outbox(db) if m["template"] == template]


def sub(db):
    return one(db, "SELECT * FROM subscriptions")


def pay_iframe(client, app, plan="starter", card="4355084355084358", token_from="/billing/"):
    response = post(client, f"/billing/subscribe/{plan}", token_from=token_from)
    assert response.status_code == 303, response.text[:300]
    page = client.get(response.headers["location"]).text
    src = re.search(r'<iframe id="paytriframe" src="([^"]+)"', page).group(1)
    client.post(src, data={"cc_owner": "A", "card_number": card, "expiry": "12/30", "cvv": "000"})
    client.portal.call(app.state.emulator.wait_idle, 15)


def pay_saving_card(client, app, plan="starter"):
    response = post(client, f"/billing/subscribe/{plan}", {"save_card": "1"}, token_from="/billing/")
    page = client.get(response.headers["location"]).text
    action = re.search(r'<form class="stacked" method="post" action="([^"]+)"', page).group(1)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    hidden.pop("csrf_token", None)
    assert "card_number" not in hidden  # the card never passes through our server
    answer = client.post(action, data={**{k: html.unescape(v) for k, v in hidden.items()}, **CARD})
    assert answer.status_code == 200, answer.text[:300]
    client.portal.call(app.state.emulator.wait_idle, 15)


# --- trial ----------------------------------------------------------------------------


def test_trial_reminders_go_out_once_each_then_the_trial_expires(client, app, clock, db):
    register(client)
    tick(client, app, clock, START)
    assert sub(db)["next_action_at"] == clock_iso(TRIAL_END - 7 * DAY)
    for at, days in [(TRIAL_END - 7 * DAY, 7), (TRIAL_END - 3 * DAY, 3), (TRIAL_END - DAY, 1)]:
        tick(client, app, clock, at)
        tick(client, app, clock, at + timedelta(minutes=1))  # a second tick sends nothing more
        [reminder] = [m for m in emails(db, "trial_reminder") if m["dedupe_key"].split(":")[2] == str(days)]
        assert f"ends in {days} day" in reminder["subject"]
    assert len(emails(db, "trial_reminder")) == 3
    tick(client, app, clock, TRIAL_END)
    assert sub(db)["status"] == "expired"
    [ended] = emails(db, "trial_ended")
    assert "11 December 2026" in ended["body_text"]
    login(client)  # two weeks later the session has run out
    assert "Your free trial has ended" in client.get("/billing/").text


def test_staff_extending_an_ended_trial_brings_new_reminders(client, app, clock, db, password_hash):
    from billing import accounts
    register(client)
    tick(client, app, clock, TRIAL_END)
    assert sub(db)["status"] == "expired"
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    client.cookies.clear()
    login(client, email="ops@example.com")
    company_id = one(db, "SELECT id FROM companies")["id"]
    response = post(client, f"/admin/companies/{company_id}/extend-trial", {"days": "10", "reason": "Support ticket"},
                    token_from=f"/admin/companies/{company_id}")
    assert response.status_code == 303
    assert sub(db)["status"] == "trialing" and sub(db)["trial_ends_at"] == clock_iso(TRIAL_END + 10 * DAY)
    tick(client, app, clock, TRIAL_END + 3 * DAY)  # 7 days before the new end
    keys = [m["dedupe_key"] for m in emails(db, "trial_reminder")]
    assert keys[-1].endswith(f":7:{clock_iso(TRIAL_END + 10 * DAY)}")
    login(client, email="ops@example.com")  # days later: the staff session (12 hours at most) has ended
    bad = post(client, f"/admin/companies/{company_id}/extend-trial", {"days": "0", "reason": "Support ticket"},
               token_from=f"/admin/companies/{company_id}")
    assert bad.status_code == 422 and "from 1 to 90" in bad.text


def clock_iso(at):
    return iso(at)


# --- renewal with a pay link, and dunning -------------------------------------------------


def test_pay_link_renewal_notice_then_past_due_then_paying_restores_it(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    end = parse(sub(db)["current_period_end"])  # 2027-01-11T09:00:00Z
    tick(client, app, clock, end - 7 * DAY)
    [notice] = emails(db, "renewal_notice")
    assert "http://testserver/billing/renew" in notice["body_text"] and "$29.00" in notice["body_text"]
    tick(client, app, clock, end)
    assert sub(db)["status"] == "past_due"
    [overdue] = emails(db, "renewal_failed")
    assert "http://testserver/billing/renew" in overdue["body_text"]
    login(client)  # a month later the session has run out
    page = client.get("/billing/")
    assert "Payment overdue" in page.text and 'class="banner pastdue"' in page.text

    tick(client, app, clock, end + 1 * DAY)
    assert len(emails(db, "renewal_failed")) == 2  # dunning step 1
    clock.at = end + 2 * DAY
    assert "Pay by 18 January 2027" in client.get("/billing/renew").text
    pay_iframe(client, app, token_from="/billing/renew")
    s = sub(db)
    assert s["status"] == "active" and s["current_period_end"] == "2027-02-11T09:00:00Z"  # from the old end
    tick(client, app, clock, end + 7 * DAY)
    assert sub(db)["status"] == "active"  # the grace period no longer applies


def test_unpaid_after_the_grace_period_is_canceled_with_an_email(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    end = parse(sub(db)["current_period_end"])
    for day in (0, 1, 3, 5, 7):
        tick(client, app, clock, end + day * DAY)
    assert sub(db)["status"] == "canceled"
    assert [m["dedupe_key"].rsplit(":", 1)[1] for m in emails(db, "renewal_failed")] == ["0", "1", "2", "3"]
    [canceled] = emails(db, "subscription_canceled")
    assert "did not arrive within 7 days" in canceled["body_text"]
    login(client)
    assert "Your subscription has ended" in client.get("/billing/").text


# --- renewal with a saved card ----------------------------------------------------------------


def test_saved_card_renews_automatically_with_a_second_invoice(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    company = one(db, "SELECT * FROM companies")
    assert company["paytr_utoken"] and sub(db)["status"] == "active"
    tick(client, app, clock, clock.now())  # the scheduler lists the card just saved (pages never ask PayTR)
    page = client.get("/billing/").text
    assert "Visa ending" in page and "4358" in page
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end - 7 * DAY)
    [notice] = emails(db, "renewal_notice")
    assert "saved card" in notice["body_text"]
    tick(client, app, clock, end)
    s = sub(db)
    assert s["status"] == "active" and s["current_period_end"] == "2027-02-11T09:00:00Z"
    assert [r["number"] for r in rows(db, "SELECT number FROM invoices ORDER BY id")] == [
        "INV-2026-000001", "INV-2027-000001"]
    renewal = one(db, "SELECT * FROM payments WHERE method = 'recurring'")
    assert (renewal["status"], renewal["attempt"], renewal["amount"]) == ("succeeded", 0, 2900)
    receipts = emails(db, "payment_succeeded")
    assert len(receipts) == 2 and "renewed automatically" in receipts[-1]["body_text"]
    tick(client, app, clock, end + timedelta(hours=2))
    assert scalar(db, "SELECT count(*) FROM payments WHERE method = 'recurring'") == 1  # charged once


def test_the_built_in_emulator_keeps_the_saved_card_across_a_restart(client, app, clock, db, settings):
    register(client)
    pay_saving_card(client, app)
    client.__exit__(None, None, None)  # the server stops
    restarted = create_app(settings, clock=clock)
    with TestClient(restarted, base_url="http://testserver") as again:
        login(again)
        # The restarted scheduler lists the card just saved (pages never ask PayTR): the emulator still has it.
        assert tick(again, restarted, clock, clock.now())["cards_refreshed"] == 1
        page = again.get("/billing/").text
        assert "Visa ending" in page and "4358" in page and "no longer lists" not in page
        end = parse(sub(db)["current_period_end"])
        tick(again, restarted, clock, end)  # the renewal charges the card PayTR still has
        assert sub(db)["current_period_end"] == "2027-02-11T09:00:00Z"


def test_a_declined_renewal_goes_past_due_retries_and_recovers(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    end = parse(sub(db)["current_period_end"])
    app.state.emulator.set_card_outcome("4358", "insufficient_funds")
    tick(client, app, clock, end)
    assert sub(db)["status"] == "past_due"
    [first] = emails(db, "renewal_failed")
    assert "insufficient funds" in first["body_text"] and "http://testserver/billing/renew" in first["body_text"]
    tick(client, app, clock, end + DAY)  # retry 1 fails too
    assert [p["attempt"] for p in rows(db, "SELECT attempt FROM payments WHERE method = 'recurring' ORDER BY id")] \
        == [0, 1]
    assert len(emails(db, "renewal_failed")) == 2
    app.state.emulator.set_card_outcome("4358", "success")
    tick(client, app, clock, end + 3 * DAY)  # retry 2 succeeds
    s = sub(db)
    assert s["status"] == "active" and s["current_period_end"] == "2027-02-11T09:00:00Z"
    assert s["past_due_since"] is None


def test_removing_the_saved_card_switches_renewal_to_a_pay_link(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    response = post(client, "/billing/card/remove", token_from="/billing/")
    assert response.status_code == 303
    assert one(db, "SELECT paytr_utoken FROM companies")["paytr_utoken"] is None
    [removed] = emails(db, "card_removed")
    assert "Visa ending 4358" in removed["body_text"]
    assert "No saved card" in client.get("/billing/").text
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end)
    assert sub(db)["status"] == "past_due"  # no card to charge: the pay link path
    assert scalar(db, "SELECT count(*) FROM payments WHERE method = 'recurring'") == 0


# --- self-service ------------------------------------------------------------------------------


def test_cancel_at_period_end_then_resume(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    page = client.get("/billing/cancel")
    assert "will end on <strong>11 January 2027</strong>" in page.text
    post(client, "/billing/cancel", token_from="/billing/cancel")
    assert sub(db)["cancel_at_period_end"] == 1
    assert "Ends on 11 January 2027" in client.get("/billing/").text
    [scheduled] = emails(db, "cancel_scheduled")
    assert "will end on 11 January 2027" in scheduled["body_text"]
    post(client, "/billing/resume", token_from="/billing/")
    assert sub(db)["cancel_at_period_end"] == 0
    post(client, "/billing/cancel", token_from="/billing/cancel")
    end = parse(sub(db)["current_period_end"])
    tick(client, app, clock, end - 7 * DAY)
    assert emails(db, "renewal_notice") == []  # no renewal for a plan that ends
    tick(client, app, clock, end)
    assert sub(db)["status"] == "canceled"
    [ended] = emails(db, "subscription_canceled")
    assert "As you asked" in ended["body_text"]


def starter_with_20_days_left(client, app, clock, db, pay):
    """A customer whose trial ended, who paid Starter (12 Dec -> 12 Jan), eleven days in."""
    register(client)
    tick(client, app, clock, TRIAL_END + timedelta(days=1))  # after the trial: the paid month starts now
    login(client)
    pay(client, app)
    clock.at = parse(sub(db)["current_period_start"]) + timedelta(days=11)  # 20 of 31 days left


def test_upgrade_charges_the_prorated_difference_and_switches_now(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_iframe)
    page = client.get("/billing/plan/team")
    assert "$45.16" in page.text and "20 days left" in page.text  # 7000 * 20/31 = 4516.13
    response = post(client, "/billing/plan/upgrade", {"plan": "team"}, token_from="/billing/plan/team")
    oid = response.headers["location"].rsplit("/", 1)[1]
    src = re.search(r'<iframe id="paytriframe" src="([^"]+)"', client.get(response.headers["location"]).text).group(1)
    client.post(src, data={"cc_owner": "A", "card_number": "4355084355084358", "expiry": "12/30", "cvv": "000"})
    client.portal.call(app.state.emulator.wait_idle, 15)
    s = sub(db)
    assert s["plan"] == "team" and s["current_period_end"] == "2027-01-12T09:00:00Z"  # the period stays
    payment = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])
    assert (payment["kind"], payment["amount"], payment["status"]) == ("upgrade", 4516, "succeeded")
    line = one(db, "SELECT * FROM invoice_lines ORDER BY id DESC LIMIT 1")
    assert line["amount"] == 4516 and "Upgrade Starter → Team" in line["description"]
    [changed] = emails(db, "plan_changed")
    assert "$45.16" in changed["body_text"]


def test_upgrade_with_a_saved_card_charges_it_at_once(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_saving_card)  # card saved
    tick(client, app, clock, clock.now())  # the scheduler has listed it since (pages never ask PayTR)
    page = client.get("/billing/plan/team").text
    assert "Upgrade and charge $45.16 to Visa ending 4358" in page and "Pay with another card" in page
    response = post(client, "/billing/plan/upgrade", {"plan": "team", "pay_with": "saved_card"},
                    token_from="/billing/plan/team")
    assert response.headers["location"].startswith("/billing/payment/success?oid=")
    client.portal.call(app.state.emulator.wait_idle, 15)
    assert "Your Team plan is active" in client.get(response.headers["location"]).text
    s = sub(db)
    assert (s["plan"], s["status"], s["current_period_end"]) == ("team", "active", "2027-01-12T09:00:00Z")
    upgrade = one(db, "SELECT * FROM payments WHERE kind = 'upgrade'")
    assert (upgrade["method"], upgrade["amount"], upgrade["status"]) == ("recurring", 4516, "succeeded")
    transaction = app.state.emulator.transaction(upgrade["merchant_oid"])
    assert transaction.api == "stored card" and transaction.amount == 4516
    assert "$45.16" in emails(db, "plan_changed")[0]["body_text"]
    # The tick does not charge it a second time.
    tick(client, app, clock, clock.at + timedelta(minutes=5))
    assert len([t for t in app.state.emulator.transactions() if t.api == "stored card"]) == 1


def test_a_second_upgrade_payment_is_kept_for_review_not_applied_twice(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_iframe)
    # Two tabs: each starts the upgrade; the customer pays the newer one, then the replaced one.
    pages = []
    for _ in range(2):
        response = post(client, "/billing/plan/upgrade", {"plan": "team"}, token_from="/billing/plan/team")
        pages.append(re.search(r'<iframe id="paytriframe" src="([^"]+)"',
                               client.get(response.headers["location"]).text).group(1))
    for src in reversed(pages):
        client.post(src, data={"cc_owner": "A", "card_number": "4355084355084358", "expiry": "12/30", "cvv": "000"})
        client.portal.call(app.state.emulator.wait_idle, 15)
    upgrades = rows(db, "SELECT status FROM payments WHERE kind = 'upgrade' ORDER BY id")
    assert [u["status"] for u in upgrades] == ["needs_review", "succeeded"]
    assert one(db, "SELECT kind FROM anomalies")["kind"] == "stale_upgrade"
    assert len(emails(db, "plan_changed")) == 1 and scalar(db, "SELECT count(*) FROM invoices") == 2


def test_a_saved_card_upgrade_is_charged_once_however_often_it_is_confirmed(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_saving_card)
    app.state.emulator.set_faults(callback_delay=3600)  # PayTR's answer is slow to come
    for _ in range(2):
        post(client, "/billing/plan/upgrade", {"plan": "team", "pay_with": "saved_card"},
             token_from="/billing/plan/team")
    assert "already being charged to your saved card" in client.get("/billing/").text
    assert len([t for t in app.state.emulator.transactions() if t.api == "stored card"]) == 1
    assert scalar(db, "SELECT count(*) FROM payments WHERE kind = 'upgrade'") == 1


def test_a_declined_saved_card_upgrade_changes_nothing_and_is_not_dunning(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_saving_card)
    app.state.emulator.set_card_outcome("4358", "insufficient_funds")
    response = post(client, "/billing/plan/upgrade", {"plan": "team", "pay_with": "saved_card"},
                    token_from="/billing/plan/team")
    client.portal.call(app.state.emulator.wait_idle, 15)
    oid = response.headers["location"].rsplit("=", 1)[1]
    fail = client.get(f"/billing/payment/fail?oid={oid}").text
    assert "did not go through" in fail and 'href="/billing/plan/team">Try again' in fail
    s = sub(db)
    assert (s["plan"], s["status"]) == ("starter", "active")  # still paid for; no dunning
    assert emails(db, "renewal_failed") == [] and len(emails(db, "payment_failed")) == 1


def test_downgrade_waits_for_the_period_end_and_can_be_undone(client, app, clock, db):
    register(client, plan="team")
    clock.at = TRIAL_END + DAY
    login(client)
    pay_iframe(client, app, plan="team")
    page = client.get("/billing/plan/starter")
    assert "happens on <strong>12 January 2027</strong>" in page.text
    post(client, "/billing/plan/downgrade", {"plan": "starter"}, token_from="/billing/plan/starter")
    assert sub(db)["scheduled_plan"] == "starter" and sub(db)["plan"] == "team"
    assert "Moving to Starter on 12 January 2027" in client.get("/billing/").text
    post(client, "/billing/plan/undo", token_from="/billing/")
    assert sub(db)["scheduled_plan"] is None
    post(client, "/billing/plan/downgrade", {"plan": "starter"}, token_from="/billing/plan/starter")
    renew = client.get("/billing/renew").text
    assert "Starter" in renew and "$29.00" in renew
    clock.at = parse(sub(db)["current_period_end"]) - 2 * DAY
    login(client)
    # Paying two days early would switch to Starter while the paid Team month still runs.
    assert "you can pay for its first month from that day" in visible(client.get("/billing/renew"))
    clock.at = parse(sub(db)["current_period_end"]) + timedelta(hours=1)
    pay_iframe(client, app, plan="starter", token_from="/billing/renew")
    s = sub(db)
    assert s["plan"] == "starter" and s["scheduled_plan"] is None
    assert "moved from Team to Starter" in emails(db, "payment_succeeded")[-1]["body_text"]


def test_plan_change_refusals(client, app, clock, db):
    register(client)
    assert "Plans can be changed while the subscription is active" in client.get("/billing/plan/team").text
    pay_iframe(client, app)
    assert client.get("/billing/plan/starter").status_code == 409  # already on it
    assert client.get("/billing/plan/gold").status_code == 404
    assert post(client, "/billing/plan/upgrade", {"plan": "gold"}, token_from="/billing/").status_code == 404
    post(client, "/billing/cancel", token_from="/billing/cancel")
    page = client.get("/billing/plan/team")
    assert page.status_code == 409 and "resume it before changing plans" in page.text
    before = scalar(db, "SELECT count(*) FROM payments")
    refused = post(client, "/billing/plan/upgrade", {"plan": "team"}, token_from="/billing/", follow_redirects=True)
    assert "resume it before changing plans" in refused.text
    assert scalar(db, "SELECT count(*) FROM payments") == before and sub(db)["plan"] == "starter"


# --- reconciliation ------------------------------------------------------------------------------


def test_a_lost_callback_is_found_by_the_status_query_and_applied_once(client, app, clock, db):
    register(client)
    app.state.emulator.set_faults(drop_first=1000)  # PayTR's callbacks never arrive
    response = post(client, "/billing/subscribe/starter", token_from="/billing/")
    page = client.get(response.headers["location"]).text
    src = re.search(r'<iframe id="paytriframe" src="([^"]+)"', page).group(1)
    client.post(src, data={"cc_owner": "A", "card_number": "4355084355084358", "expiry": "12/30", "cvv": "000"})
    client.portal.call(jobs.tick, app.state.jobs, START + timedelta(minutes=10))
    assert sub(db)["status"] == "trialing"  # too early to ask
    clock.at = START + timedelta(minutes=31)
    client.portal.call(jobs.tick, app.state.jobs, clock.at)
    assert sub(db)["status"] == "active"
    [cb] = rows(db, "SELECT * FROM callbacks")
    assert cb["outcome"] == "applied" and '"source": "status-query"' in cb["fields"]
    client.portal.call(jobs.tick, app.state.jobs, clock.at + timedelta(hours=1))
    assert scalar(db, "SELECT count(*) FROM invoices") == 1


def test_an_abandoned_checkout_is_closed_after_its_page_expired(client, app, clock, db):
    register(client)
    post(client, "/billing/subscribe/starter", token_from="/billing/")
    client.portal.call(jobs.tick, app.state.jobs, START + timedelta(minutes=31))
    payment = one(db, "SELECT * FROM payments")
    assert payment["status"] == "abandoned" and "no payment reached PayTR" in payment["abandon_reason"]


def test_the_timeline_lists_events_payments_invoices_and_emails(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    page = re.sub(r"\s+", " ", client.get("/billing/timeline").text)
    for text in ("Account opened: your free trial started (14 days)",
                 "You subscribed to the Starter plan: $29.00 paid", "Invoice INV-2026-000001 issued: $29.00",
                 "We emailed you: “Welcome to PayTR Billing", "“Payment received: $29.00 for Starter"):
        assert text in page, text
