"""What is due when: the pure planning of a subscription's life, with a fixed clock."""

from datetime import timedelta
from decimal import Decimal

import pytest

from billing import changes, clock, plans
from billing.lifecycle import plan
from conftest import make_settings

T = clock.parse("2026-12-11T09:00:00Z")  # a trial's end, or a period's end
DAY = timedelta(days=1)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


def trial(**extra):
    return {"id": 1, "company_id": 7, "status": "trialing", "plan": "starter", "trial_ends_at": clock.iso(T),
            "current_period_start": None, "current_period_end": None, "cancel_at_period_end": 0,
            "scheduled_plan": None, **extra}


def active(**extra):
    return trial(**{"status": "active", "current_period_start": clock.iso(T - 30 * DAY),
                    "current_period_end": clock.iso(T), **extra})


def keys(due):
    return [key for _, key, _ in due.emails]


@pytest.mark.parametrize("at, key, next_at", [
    (T - 10 * DAY, None, T - 7 * DAY),
    (T - 7 * DAY, "trial-reminder:7:7", T - 3 * DAY),
    (T - 5 * DAY, "trial-reminder:7:7", T - 3 * DAY),
    (T - 3 * DAY, "trial-reminder:7:3", T - 1 * DAY),
    (T - 1 * DAY + timedelta(hours=2), "trial-reminder:7:1", T),
])
def test_trial_reminders_at_seven_three_and_one_days(settings, at, key, next_at):
    due = plan(trial(), at, settings, has_card=False, attempts=set())
    expected = [f"trial-reminder:7:{key.split(':')[-1]}:{clock.iso(T)}"] if key else []
    assert keys(due) == expected
    assert due.next_at == next_at and due.transition is None


def test_late_reminders_are_not_stacked(settings):
    """Down from day -8 to day -2: only the 3-day reminder goes out, not the 7-day one too."""
    due = plan(trial(), T - 2 * DAY, settings, has_card=False, attempts=set())
    assert keys(due) == [f"trial-reminder:7:3:{clock.iso(T)}"]
    assert due.emails[0][2] == {"days_left": 2}


def test_trial_end_expires_with_an_email(settings):
    due = plan(trial(), T, settings, has_card=False, attempts=set())
    assert due.transition == ("expired", "trial ended without a payment")
    assert keys(due) == [f"trial-ended:7:{clock.iso(T)}"] and due.next_at is None


def test_an_extended_trial_gets_new_reminder_keys(settings):
    later = T + 10 * DAY
    due = plan(trial(trial_ends_at=clock.iso(later)), later - 7 * DAY, settings, has_card=False, attempts=set())
    assert keys(due) == [f"trial-reminder:7:7:{clock.iso(later)}"]


@pytest.mark.parametrize("at, days", [(T - 7 * DAY, 7), (T - 3 * DAY, 3), (T - DAY, 1)])
def test_pay_link_renewal_notices(settings, at, days):
    due = plan(active(), at, settings, has_card=False, attempts=set())
    assert keys(due) == [f"renewal-notice:7:{days}:{clock.iso(T)}"]
    assert due.emails[0][2]["card"] is False


def test_unpaid_period_end_goes_past_due(settings):
    due = plan(active(), T, settings, has_card=False, attempts=set())
    assert due.transition == ("past_due", "renewal not paid by the end of the period")
    assert keys(due) == [f"renewal-failed:7:{clock.iso(T)}:0"]


def test_saved_card_gets_one_notice_then_a_charge_at_period_end(settings):
    assert keys(plan(active(), T - 3 * DAY, settings, has_card=True, attempts=set())) == [
        f"renewal-notice:7:7:{clock.iso(T)}"]  # the 7-day "we will charge your card" is the latest due
    due = plan(active(), T, settings, has_card=True, attempts=set())
    assert due.charge_attempt == 0 and due.transition is None
    again = plan(active(), T + timedelta(minutes=5), settings, has_card=True, attempts={0})
    assert again.charge_attempt is None  # never charged twice for one step


@pytest.mark.parametrize("at, step", [(T + DAY, 1), (T + 2 * DAY, 1), (T + 3 * DAY, 2), (T + 5 * DAY, 3)])
def test_dunning_retries_the_card_on_days_one_three_five(settings, at, step):
    sub = active(status="past_due", past_due_since=clock.iso(T))
    due = plan(sub, at, settings, has_card=True, attempts={0})
    assert due.charge_attempt == step
    assert plan(sub, at, settings, has_card=True, attempts={0, step}).charge_attempt is None


def test_dunning_without_a_card_emails_a_pay_link_each_step(settings):
    sub = active(status="past_due")
    assert keys(plan(sub, T + 3 * DAY, settings, has_card=False, attempts=set())) == [
        f"renewal-failed:7:{clock.iso(T)}:2"]


def test_after_the_grace_period_it_is_canceled(settings):
    sub = active(status="past_due")
    due = plan(sub, T + 7 * DAY, settings, has_card=True, attempts={0, 1, 2, 3})
    assert due.transition[0] == "canceled" and "7-day grace period" in due.transition[1]
    assert keys(due) == [f"canceled:7:{clock.iso(T)}"]


def test_cancel_at_period_end_ends_it_then(settings):
    sub = active(cancel_at_period_end=1)
    before = plan(sub, T - DAY, settings, has_card=True, attempts=set())
    assert before.emails == [] and before.next_at == T  # no renewal notices for a canceled plan
    due = plan(sub, T, settings, has_card=True, attempts=set())
    assert due.transition[0] == "canceled" and due.charge_attempt is None


def test_ended_subscriptions_wait_for_the_customer(settings):
    for status in ("expired", "canceled"):
        due = plan(trial(status=status), T + 100 * DAY, settings, has_card=False, attempts=set())
        assert due.emails == [] and due.transition is None and due.next_at is None


# --- proration -----------------------------------------------------------------------------


def period(start, end, plan_code="starter"):
    return {"plan": plan_code, "current_period_start": start, "current_period_end": end}


@pytest.mark.parametrize("now, amount", [
    ("2026-12-01T00:00:00Z", 7000),  # the whole 30-day period left: the full $70 difference
    ("2026-12-16T00:00:00Z", 3500),  # half of it
    ("2026-12-11T00:00:00Z", 4667),  # 20 of 30 days: 4666.67 rounds up to 4667
    ("2026-12-21T00:00:00Z", 2333),  # 10 of 30 days: 2333.33 rounds down to 2333
])
def test_upgrade_proration_is_integer_and_rounded_half_up(db, now, amount):
    sub = period("2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z")  # Starter ($29) -> Team ($99)
    q = changes.quote(db, sub, "team", clock.parse(now), Decimal(20))
    assert (q.amount, q.exact, q.period_days) == (amount, amount, 30)


def test_a_difference_under_one_dollar_is_not_charged(db):
    sub = period("2026-12-01T00:00:00Z", "2026-12-31T00:00:00Z")
    q = changes.quote(db, sub, "team", clock.parse("2026-12-30T14:00:00Z"), Decimal(20))  # ten hours left: 97.2 cents
    assert q.exact == 97 and q.amount == 0 and q.days_left == 1


def test_direction_of_plan_changes(db):
    sub = {"plan": "team"}
    assert changes.direction(db, sub, "enterprise") == "upgrade"
    assert changes.direction(db, sub, "starter") == "downgrade"
    assert changes.direction(db, sub, "team") == "same"
    with pytest.raises(plans.UnknownPlan):
        changes.direction(db, sub, "gold")


# --- predicates ------------------------------------------------------------------------------


def test_access_and_dates_predicates():
    from billing import subscriptions as subs
    running = trial()
    assert subs.has_access(running, T - DAY, 7) and not subs.has_access(running, T, 7)
    paid = active()
    assert subs.renews_on(paid) == T and subs.will_cancel_on(paid) is None
    ending = active(cancel_at_period_end=1)
    assert subs.renews_on(ending) is None and subs.will_cancel_on(ending) == T
    overdue = active(status="past_due")
    assert subs.grace_ends(overdue, 7) == T + 7 * DAY
    assert subs.in_grace_period(overdue, T + 6 * DAY, 7) and subs.has_access(overdue, T + 6 * DAY, 7)
    assert not subs.has_access(overdue, T + 7 * DAY, 7)
    assert not subs.has_access(trial(status="canceled"), T - DAY, 7)
    assert not subs.has_access(trial(status="expired"), T - DAY, 7)


def test_transitions_outside_the_table_are_refused():
    from billing import subscriptions as subs
    with pytest.raises(subs.TransitionError, match="a canceled subscription cannot become past_due"):
        subs.transition(None, T, trial(status="canceled"), "past_due", "nope")
    with pytest.raises(subs.TransitionError):
        subs.transition(None, T, trial(status="expired"), "canceled", "nope")
