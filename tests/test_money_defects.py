"""Regression tests for the money-path defects found in review (issue 7, section 1), each as
the reviewer's scenario: what the customer is charged, which period they get, what the
invoice says, and that a payment never undoes what the owner asked for."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing import changes, clock, events, jobs, lifecycle, migrations, money, payments, plans, refunds
from billing import settings as settings_module
from billing import subscriptions
from billing.paytr import protocol
from billing.db import Store, one, rows, scalar, write
from conftest import START, make_company, make_settings
from test_payments import apply, callback, checkout, sub_of

DAY = timedelta(days=1)
TRIAL_END = START + 14 * DAY  # 2026-12-11T09:00:00Z


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


@pytest.fixture
def owner(db, settings, password_hash):
    return make_company(db, settings, START, password_hash, email="owner@example.com", company_name="Acme A.Ş.")


def pay_period(db, settings, owner, at, plan="starter"):
    """Open a checkout at `at` and have PayTR report its success two minutes later."""
    payment = checkout(db, settings, owner, plan=plan, at=at).payment
    assert apply(db, settings, callback(settings, payment), at=at + timedelta(minutes=2)) == "applied"
    return payments.by_oid(db, payment["merchant_oid"])


def save_card(db, owner):
    with write(db):
        db.conn.execute("UPDATE companies SET paytr_utoken = 'UT1', paytr_ctoken = 'CT1', card_ip = '85.34.78.112' "
                        "WHERE id = ?",
                        [owner["company_id"]])


def advance_due(db, settings, at):
    """The scheduler's subscription work at `at` (the PayTR calls are the test's to make)."""
    return jobs.run_due_subscriptions(db, at, settings)


def pending_charges(db):
    return rows(db, "SELECT * FROM payments WHERE method = 'recurring' AND status = 'pending' ORDER BY id")


# --- 1. proration over the current period ---------------------------------------------------------


def test_an_upgrade_after_a_renewal_is_prorated_over_the_current_period(db, settings, owner):
    pay_period(db, settings, owner, START)  # during the trial: Dec 11 -> Jan 11
    pay_period(db, settings, owner, clock.parse("2027-01-08T09:00:00Z"))  # pay link: Jan 11 -> Feb 11
    sub = sub_of(db, owner)
    assert (sub["current_period_start"], sub["current_period_end"]) == ("2027-01-11T09:00:00Z",
                                                                       "2027-02-11T09:00:00Z")
    q = changes.upgrade_quote(db, clock.parse("2027-01-20T09:00:00Z"), settings, owner["company_id"], "team")
    assert (q.amount, q.days_left, q.period_days) == (4968, 22, 31)  # $49.68, not $24.84


def test_after_two_years_of_renewals_ten_days_left_still_costs_the_real_difference(db, settings, owner):
    pay_period(db, settings, owner, START)
    while sub_of(db, owner)["current_period_end"] < "2029-02-01":
        end = clock.parse(sub_of(db, owner)["current_period_end"])
        pay_period(db, settings, owner, end - 2 * DAY)
    sub = sub_of(db, owner)
    assert (sub["current_period_start"], sub["current_period_end"]) == ("2029-01-11T09:00:00Z",
                                                                       "2029-02-11T09:00:00Z")
    q = changes.upgrade_quote(db, clock.parse("2029-02-01T09:00:00Z"), settings, owner["company_id"], "team")
    assert q.amount == 2258  # $22.58: not $0.92 and not a free switch


def test_paid_early_the_quote_covers_the_rest_of_this_period_and_the_whole_next_one(db, settings, owner):
    pay_period(db, settings, owner, START)  # Dec 11 -> Jan 11 (31 days)
    pay_period(db, settings, owner, clock.parse("2026-12-27T09:00:00Z"))  # next month bought early
    q = changes.upgrade_quote(db, clock.parse("2027-01-04T09:00:00Z"), settings, owner["company_id"], "team")
    # net difference 8250 - 2417 = 5833: 7/31 of it for this period plus all of it for the next
    net = 5833 * 7 / 31 + 5833
    assert q.amount == money.gross_from_net(int(net + 0.5), Decimal(20))
    assert q.paid_ahead and q.days_left == 7 + 31


def test_paid_during_the_trial_an_upgrade_costs_the_first_period_difference_only(db, settings, owner):
    pay_period(db, settings, owner, START)  # the first month starts when the trial ends, Dec 11
    q = changes.upgrade_quote(db, START + 3 * DAY, settings, owner["company_id"], "team")
    assert (q.amount, q.days_left, q.period_days, q.starts_later) == (7000, 31, 31, True)
    payment = start_upgrade(db, settings, owner, "team", START + 3 * DAY)
    assert payment["description"] == "Upgrade Starter → Team, 31 of 31 days until 11.01.2027"


def test_the_migration_repairs_starts_left_behind_by_old_renewals(db, settings, owner):
    pay_period(db, settings, owner, START)
    pay_period(db, settings, owner, clock.parse("2027-01-08T09:00:00Z"))
    with write(db):  # what the old code left: the first period's start, never moved
        db.conn.execute("UPDATE subscriptions SET current_period_start = '2026-12-11T09:00:00Z', "
                        "period_anchor_time = NULL")
        migrations.repair_periods(db)
    sub = sub_of(db, owner)
    assert sub["current_period_start"] == "2027-01-11T09:00:00Z"
    assert sub["period_anchor_time"] == "12:00:00"  # 09:00Z is noon in Istanbul


# --- 3. a cancel is never undone by a renewal charge ---------------------------------------------


def test_cancel_is_refused_while_the_renewal_charge_is_in_flight(db, settings, owner):
    pay_period(db, settings, owner, START)
    save_card(db, owner)
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))
    [charge] = pending_charges(db)
    with pytest.raises(changes.ChangeError, match="renewal charge is being processed"):
        changes.cancel_at_period_end(db, clock.parse("2027-01-11T09:00:30Z"), settings, owner)
    assert not sub_of(db, owner)["cancel_at_period_end"]
    # once PayTR has answered, the owner can cancel (at the end of the period just paid)
    apply(db, settings, callback(settings, charge), at=clock.parse("2027-01-11T09:01:00Z"))
    sub = changes.cancel_at_period_end(db, clock.parse("2027-01-11T09:02:00Z"), settings, owner)
    assert sub["cancel_at_period_end"] == 1 and sub["current_period_end"] == "2027-02-11T09:00:00Z"


def test_a_renewal_paid_after_the_owner_canceled_is_kept_for_review_not_applied(db, settings, owner):
    pay_period(db, settings, owner, START)
    renewal = checkout(db, settings, owner, at=clock.parse("2027-01-05T09:00:00Z")).payment  # a pay link, open
    changes.cancel_at_period_end(db, clock.parse("2027-01-06T09:00:00Z"), settings, owner)
    assert apply(db, settings, callback(settings, renewal), at=clock.parse("2027-01-07T09:00:00Z")) == "anomaly"
    sub = sub_of(db, owner)
    assert sub["cancel_at_period_end"] == 1 and sub["current_period_end"] == "2027-01-11T09:00:00Z"
    assert payments.by_oid(db, renewal["merchant_oid"])["status"] == "needs_review"
    assert one(db, "SELECT kind FROM anomalies")["kind"] == "paid_after_cancel"
    # and after the period ended, a late success still does not bring it back
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))
    assert sub_of(db, owner)["status"] == "canceled"


def test_renewing_by_pay_link_is_refused_while_a_cancel_is_set(db, settings, owner):
    pay_period(db, settings, owner, START)
    changes.cancel_at_period_end(db, clock.parse("2027-01-06T09:00:00Z"), settings, owner)
    with pytest.raises(payments.CheckoutError, match="set to end"):
        checkout(db, settings, owner, at=clock.parse("2027-01-07T09:00:00Z"))


# --- 5. downtime: one charge, for the period containing now ----------------------------------------


def test_after_downtime_the_card_is_charged_once_for_the_period_containing_now(db, settings, owner):
    pay_period(db, settings, owner, START)  # Dec 11 -> Jan 11
    save_card(db, owner)
    back = clock.parse("2027-04-20T09:00:00Z")  # down from before Jan 11 until Apr 20
    advance_due(db, settings, back)
    [charge] = pending_charges(db)
    apply(db, settings, callback(settings, charge), at=back + timedelta(minutes=1))
    for minutes in (2, 3, 4, 60):
        advance_due(db, settings, back + timedelta(minutes=minutes))
    assert scalar(db, "SELECT count(*) FROM payments WHERE method = 'recurring'") == 1
    sub = sub_of(db, owner)
    assert (sub["current_period_start"], sub["current_period_end"]) == ("2027-04-11T09:00:00Z",
                                                                       "2027-05-11T09:00:00Z")
    [skipped] = rows(db, "SELECT * FROM events WHERE kind = 'subscription.periods_skipped'")
    assert "2027-01-11" in skipped["message"] and "2027-04-11" in skipped["message"]
    line = one(db, "SELECT description FROM invoice_lines ORDER BY id DESC LIMIT 1")["description"]
    assert line == "Starter plan, 11.04.2027 – 11.05.2027"


def test_paying_a_few_days_late_still_extends_from_the_period_end(db, settings, owner):
    pay_period(db, settings, owner, START)
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))  # pay link: past due
    assert sub_of(db, owner)["status"] == "past_due"
    pay_period(db, settings, owner, clock.parse("2027-01-14T09:00:00Z"))
    assert sub_of(db, owner)["current_period_end"] == "2027-02-11T09:00:00Z"  # no paid day lost or gained


# --- 6. an older upgrade tab paid last ------------------------------------------------------------


def start_upgrade(db, settings, owner, plan, at):
    q = changes.upgrade_quote(db, at, settings, owner["company_id"], plan)
    return payments.start_checkout(db, at, settings, user=owner, plan_code=plan, ip="85.34.78.112",
                                   upgrade=q).payment


def test_an_older_upgrade_tab_paid_last_does_not_move_the_customer_down(db, settings, owner):
    pay_period(db, settings, owner, START)
    at = clock.parse("2026-12-20T09:00:00Z")
    team = start_upgrade(db, settings, owner, "team", at)
    enterprise = start_upgrade(db, settings, owner, "enterprise", at + timedelta(minutes=1))
    assert apply(db, settings, callback(settings, enterprise), at=at + timedelta(minutes=3)) == "applied"
    assert apply(db, settings, callback(settings, team), at=at + timedelta(minutes=4)) == "anomaly"
    assert sub_of(db, owner)["plan"] == "enterprise"
    assert payments.by_oid(db, team["merchant_oid"])["status"] == "needs_review"
    assert one(db, "SELECT kind FROM anomalies")["kind"] == "stale_upgrade"
    assert scalar(db, "SELECT count(*) FROM invoices") == 2  # the period and the Enterprise upgrade


# --- 7. concurrent refund checks -----------------------------------------------------------------


class StatusOnly:
    """PayTR's status query, answering slowly, listing one $10 return without a reference_no."""

    async def status(self, merchant_oid):
        await asyncio.sleep(0.05)
        return {"status": "success", "payment_amount": "29.00", "payment_total": "29.00",
                "returns": [{"return_amount": "10.00", "return_date": "2026-12-20 10:00:00"}]}


def test_concurrent_refund_checks_never_record_more_than_paytr_lists(db, settings, owner):
    paid = pay_period(db, settings, owner, START)
    at = START + DAY
    for key in ("one", "two"):
        refund, created = refunds.start(db, at, payment_id=paid["id"], amount="10.00", reason="goodwill",
                                        request_key=key, actor="staff:1")
        refunds.unknown(db, at, refund["id"], "PayTR did not answer")
    ctx = jobs.Context(store=db.store, settings=settings, clock=None, paytr=StatusOnly())
    # A thread of its own: the browser tests may leave an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(asyncio.run, jobs.check_refunds(ctx, at + timedelta(minutes=10))).result()
    assert checked == 2
    assert [r["status"] for r in refunds.for_payment(db, paid["id"])] in (["succeeded", "failed"],
                                                                         ["failed", "succeeded"])
    assert scalar(db, "SELECT sum(amount) FROM refunds WHERE status = 'succeeded'") == 1000
    assert scalar(db, "SELECT count(*) FROM outbox WHERE template = 'refund_issued'") == 1


# --- 8. the invoice line names the period granted --------------------------------------------------


def test_a_checkout_opened_before_midnight_and_paid_after_names_the_period_paid(db, settings, owner):
    istanbul = ZoneInfo("Europe/Istanbul")
    opened = clock.parse("2027-01-31T23:50:00+03:00")  # the trial ended long ago
    payment = checkout(db, settings, owner, at=opened).payment
    paid_at = clock.parse("2027-02-01T00:10:00+03:00")
    assert apply(db, settings, callback(settings, payment), at=paid_at) == "applied"
    sub = sub_of(db, owner)
    assert clock.parse(sub["current_period_start"]).astimezone(istanbul).date().isoformat() == "2027-02-01"
    line = one(db, "SELECT description FROM invoice_lines")["description"]
    assert line == "Starter plan, 01.02.2027 – 01.03.2027"


# --- 10. DST: the anchor is the local wall-clock time -----------------------------------------------


def test_a_period_anchored_in_the_hour_dst_skips_returns_to_its_wall_clock_time(tmp_path, password_hash):
    settings = make_settings(tmp_path, TIMEZONE="Europe/Berlin")
    store = Store(settings.database_path)
    db = store.db()
    with write(db):
        migrations.apply(db)
    berlin = ZoneInfo("Europe/Berlin")
    try:
        owner = make_company(db, settings, START, password_hash)
        first = clock.parse("2027-02-28T02:30:00+01:00")  # the trial is over; subscribe at 02:30 local
        pay_period(db, settings, owner, first - timedelta(minutes=2))
        ends = [sub_of(db, owner)["current_period_end"]]
        for _ in range(2):
            pay_period(db, settings, owner, clock.parse(ends[-1]) - DAY)
            ends.append(sub_of(db, owner)["current_period_end"])
        local = [clock.parse(end).astimezone(berlin).strftime("%m-%d %H:%M") for end in ends]
        # 28 March 2027 has no 02:30 in Berlin (clocks go 02:00 -> 03:00): that one occurrence shifts
        assert local == ["03-28 03:30", "04-28 02:30", "05-28 02:30"]
    finally:
        store.close()


def test_add_month_keeps_the_anchor_time_across_a_dst_gap():
    berlin = ZoneInfo("Europe/Berlin")
    start = clock.parse("2027-02-28T02:30:00+01:00")
    march = subscriptions.add_month(start, 28, berlin, "02:30:00")
    april = subscriptions.add_month(march, 28, berlin, "02:30:00")
    assert march.astimezone(berlin).strftime("%m-%d %H:%M") == "03-28 03:30"
    assert april.astimezone(berlin).strftime("%m-%d %H:%M") == "04-28 02:30"


# --- 11. VAT is the rate of the net, on every invoice ------------------------------------------------


def test_every_prorated_upgrade_splits_into_net_and_exactly_its_vat(db):
    rate = Decimal(20)
    sub = {"plan": "starter", "current_period_start": "2027-01-11T09:00:00Z",
           "current_period_end": "2027-02-11T09:00:00Z"}
    start = clock.parse(sub["current_period_start"])
    for target in ("team", "enterprise"):
        for hours in range(0, 31 * 24, 7):
            q = changes.quote(db, sub, target, start + timedelta(hours=hours, minutes=13), rate)
            net, vat = money.split_gross(q.exact, rate)
            assert vat == money.percent_of(net, rate) and net + vat == q.exact


def test_the_upgrade_invoice_shows_vat_as_exactly_the_rate_of_the_net(db, settings, owner):
    pay_period(db, settings, owner, START)
    team = start_upgrade(db, settings, owner, "team", clock.parse("2026-12-20T09:00:00Z"))
    apply(db, settings, callback(settings, team), at=clock.parse("2026-12-20T09:03:00Z"))
    for invoice in rows(db, "SELECT * FROM invoices"):
        assert invoice["vat"] == money.percent_of(invoice["net"], Decimal(20))
        assert invoice["net"] + invoice["vat"] == invoice["total"]


def test_start_up_refuses_prices_that_cannot_split_at_the_vat_rate(db, settings):
    from billing.app import check_catalog

    odd = next(price for price in range(2900, 3000) if not money.splits_exactly(price, Decimal(20)))
    db.execute("UPDATE plans SET price = ? WHERE code = 'starter'", [odd])
    with pytest.raises(settings_module.ConfigError, match="Starter"):
        check_catalog(db, settings)


# --- found by the model-based test ---------------------------------------------------------------


def test_paid_two_periods_ahead_during_the_trial_the_trial_days_cost_nothing(db, settings, owner):
    pay_period(db, settings, owner, START)  # Dec 11 -> Jan 11, paid during the trial
    pay_period(db, settings, owner, START + timedelta(hours=1))  # and Jan 11 -> Feb 11 at once
    q = changes.upgrade_quote(db, START + timedelta(hours=2), settings, owner["company_id"], "team")
    # two whole periods, not 2.45 of them: net 2 × 5833 plus VAT on that net (2 × $70.00 less a cent)
    assert q.amount == money.gross_from_net(2 * 5833, Decimal(20)) == 13999 and q.days_left == 62


def test_a_renewal_paid_after_the_owner_upgraded_is_kept_for_review_not_a_downgrade(db, settings, owner):
    pay_period(db, settings, owner, START)
    renewal = checkout(db, settings, owner, at=START + DAY).payment  # Starter, Jan 11 -> Feb 11, left open
    team = start_upgrade(db, settings, owner, "team", START + 2 * DAY)
    assert apply(db, settings, callback(settings, team), at=START + 2 * DAY) == "applied"
    assert apply(db, settings, callback(settings, renewal), at=START + 3 * DAY) == "anomaly"
    sub = sub_of(db, owner)
    assert (sub["plan"], sub["current_period_end"]) == ("team", "2027-01-11T09:00:00Z")
    assert one(db, "SELECT kind FROM anomalies")["kind"] == "stale_renewal"


def test_plan_changes_wait_while_a_renewal_charge_is_in_flight(db, settings, owner):
    pay_period(db, settings, owner, START)
    save_card(db, owner)
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))
    assert pending_charges(db)
    at = clock.parse("2027-01-11T09:00:30Z")
    for attempt in (lambda: changes.upgrade_quote(db, at, settings, owner["company_id"], "team"),
                    lambda: changes.schedule_downgrade(db, at, settings, owner, "starter")):
        with pytest.raises(changes.ChangeError, match="renewal charge is being processed"):
            attempt()


def test_a_small_unknown_refund_is_not_credited_with_a_larger_return(db, settings, owner):
    paid = pay_period(db, settings, owner, START)
    at = START + DAY
    small, _ = refunds.start(db, at, payment_id=paid["id"], amount="0.01", reason="test", request_key="a",
                             actor="staff:1")
    rest, _ = refunds.start(db, at, payment_id=paid["id"], amount="28.99", reason="test", request_key="b",
                            actor="staff:1")
    answer = {"status": "success", "returns": [{"return_amount": "28.99"}]}  # no reference numbers
    for refund in (small, rest):
        refunds.unknown(db, at, refund["id"], "PayTR did not answer")
        refunds.settle_from_status(db, at + timedelta(minutes=6), settings, refund["id"], answer)
    statuses = {r["amount"]: r["status"] for r in refunds.for_payment(db, paid["id"])}
    assert statuses == {1: "failed", 2899: "succeeded"}


def test_a_scheduled_downgrade_is_paid_from_the_day_it_begins_never_early(db, settings, owner):
    pay_period(db, settings, owner, START, plan="team")  # Team, Dec 11 -> Jan 11
    changes.schedule_downgrade(db, START + DAY, settings, owner, "starter")
    with pytest.raises(payments.CheckoutError, match="begins on 11 January 2027"):
        checkout(db, settings, owner, plan="starter", at=START + 2 * DAY)
    assert sub_of(db, owner)["plan"] == "team"  # the paid Team month runs to its end
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))  # pay link: due now
    pay_period(db, settings, owner, clock.parse("2027-01-11T10:00:00Z"), plan="starter")
    sub = sub_of(db, owner)
    assert (sub["plan"], sub["scheduled_plan"], sub["current_period_end"]) == ("starter", None,
                                                                               "2027-02-11T09:00:00Z")


def test_three_periods_paid_ahead_are_all_in_the_quote(db, settings, owner):
    for hours in (0, 1, 2):  # during the trial: Dec 11 -> Jan 11 -> Feb 11 -> Mar 11
        pay_period(db, settings, owner, START + timedelta(hours=hours))
    q = changes.upgrade_quote(db, START + timedelta(hours=3), settings, owner["company_id"], "team")
    assert q.amount == money.gross_from_net(3 * 5833, Decimal(20)) and q.days_left == 31 + 31 + 28


def test_an_upgrade_paid_after_its_period_ended_is_kept_for_review(db, settings, owner):
    pay_period(db, settings, owner, START)  # Dec 11 -> Jan 11
    save_card(db, owner)
    team = start_upgrade(db, settings, owner, "team", clock.parse("2027-01-10T09:00:00Z"))
    advance_due(db, settings, clock.parse("2027-01-11T09:00:00Z"))  # the renewal charge is out
    late = clock.parse("2027-01-11T09:05:00Z")  # the upgrade's callback comes after the period ended
    assert apply(db, settings, callback(settings, team), at=late) == "anomaly"
    assert sub_of(db, owner)["plan"] == "starter"
    assert one(db, "SELECT kind FROM anomalies")["kind"] == "stale_upgrade"


def test_a_saving_payment_found_by_the_status_query_still_makes_its_card_the_renewal_card(db, settings, owner):
    pay_period(db, settings, owner, START)
    save_card(db, owner)  # renewals charge card CT1 of PayTR user UT1
    direct = payments.start_checkout(db, START + DAY, settings, user=owner, plan_code="starter", ip="85.34.78.112",
                                     method="direct").payment
    # what jobs.reconcile makes of PayTR's status query: no utoken in it
    found = protocol.Callback(direct["merchant_oid"], "success", 2900, {
        "merchant_oid": direct["merchant_oid"], "status": "success", "total_amount": "2900", "test_mode": "1",
        "source": "status-query"})
    assert payments.apply_callback(db, START + DAY + timedelta(minutes=40), settings, found) == "applied"
    company = one(db, "SELECT * FROM companies WHERE id = ?", [owner["company_id"]])
    assert (company["paytr_utoken"], company["card_saved_by"]) == ("UT1", direct["merchant_oid"])


def test_a_scheduled_downgrade_paid_early_through_an_older_checkout_is_kept_for_review(db, settings, owner):
    pay_period(db, settings, owner, START)  # Starter, Dec 11 -> Jan 11
    renewal = checkout(db, settings, owner, at=START + DAY).payment  # Starter for Jan 11 -> Feb 11, open
    team = start_upgrade(db, settings, owner, "team", START + 2 * DAY)
    apply(db, settings, callback(settings, team), at=START + 2 * DAY)
    changes.schedule_downgrade(db, START + 3 * DAY, settings, owner, "starter")
    assert apply(db, settings, callback(settings, renewal), at=START + 4 * DAY) == "anomaly"
    sub = sub_of(db, owner)
    assert (sub["plan"], sub["scheduled_plan"]) == ("team", "starter")  # the paid Team month runs on
