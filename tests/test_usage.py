"""Usage the host product reports, against the plan's limits: the owner is emailed when a limit
is nearly (80 %) or fully (100 %) used, once per billing period, and a downgrade the usage
would not fit is refused with the reason."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from billing import changes, usage
from billing.accounts import FormError
from billing.changes import ChangeError
from billing.db import one, scalar, write
from billing.entitlements import GB
from conftest import make_company, outbox, post, register, visible

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PERIOD_START, PERIOD_END = "2026-12-01T09:00:00Z", "2027-01-01T09:00:00Z"


@pytest.fixture
def company(db, settings, password_hash):
    with write(db):
        make_company(db, settings, NOW, password_hash, company_name="Ege Bulut Ltd.", name="Deniz Ege",
                     email="deniz@example.com")
    return one(db, "SELECT * FROM companies WHERE name = 'Ege Bulut Ltd.'")


def owner(db, company):
    return one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner'", [company["id"]])


def make_active(db, company, plan="starter", start=PERIOD_START, end=PERIOD_END, **extra):
    with write(db):
        db.conn.execute(
            f"UPDATE subscriptions SET status = 'active', plan = ?, current_period_start = ?, current_period_end = ?"
            f"{''.join(f', {k} = ?' for k in extra)} WHERE company_id = ?",
            [plan, start, end, *extra.values(), company["id"]])


def report(db, company, workspaces, storage_bytes=0, at=NOW):
    with write(db):
        return usage.record(db, at, company["id"], workspaces, storage_bytes)


def warnings(db):
    return [m for m in outbox(db) if m["template"].startswith("usage")]


def test_reaching_80_then_100_percent_of_workspaces_emails_the_owner_once_each(db, company):
    make_active(db, company)  # Starter: 5 workspaces, 10 GB
    report(db, company, 3)
    assert warnings(db) == []  # 60 %
    report(db, company, 4)
    [near] = warnings(db)
    assert near["to_addr"] == "deniz@example.com"
    assert near["subject"] == "Ege Bulut Ltd. uses 4 of 5 workspaces on Starter"
    assert "You have reached 80 % of what Starter includes" in near["body_text"]
    assert "Team includes 20 workspaces and 50 GB storage" in near["body_text"]
    assert "http://testserver/billing/plan/team" in near["body_text"]  # straight to the upgrade
    assert 'href="http://testserver/billing/plan/team"' in near["body_html"]
    report(db, company, 4)
    report(db, company, 3)
    report(db, company, 4)  # dipping below and crossing again in the same period: no news
    assert len(warnings(db)) == 1
    report(db, company, 5)
    full = warnings(db)[1]
    assert full["subject"] == "Ege Bulut Ltd. uses 5 of 5 workspaces on Starter"
    assert "all the workspaces Starter includes" in full["body_text"]
    report(db, company, 6)
    report(db, company, 4)  # back to 80 % after being told it was full: nothing
    assert len(warnings(db)) == 2
    assert scalar(db, "SELECT count(*) FROM events WHERE kind = 'usage.limit_warning'") == 2


def test_storage_is_measured_in_bytes_against_the_plans_gb(db, company):
    make_active(db, company)
    report(db, company, 0, 8 * GB - 1)  # just under 80 % of 10 GB
    assert warnings(db) == []
    report(db, company, 0, 8 * GB)
    [near] = warnings(db)
    assert near["subject"] == "Ege Bulut Ltd. uses 8 GB of 10 GB storage on Starter"
    report(db, company, 0, 10 * GB - 1)
    assert len(warnings(db)) == 1  # 99.99 % is still the 80 % level
    report(db, company, 0, 10 * GB + 1)
    over = warnings(db)[1]
    # Never "10 GB of 10 GB" for a byte more: the figure is rounded away from the limit.
    assert over["subject"] == "Ege Bulut Ltd. uses 10.1 GB of 10 GB storage on Starter"
    assert "more storage than Starter includes" in over["body_text"]


def test_a_jump_past_100_percent_sends_only_the_100_percent_email(db, company):
    make_active(db, company)
    report(db, company, 9)
    [only] = warnings(db)
    assert only["subject"] == "Ege Bulut Ltd. uses 9 of 5 workspaces on Starter"


def test_each_limit_warns_on_its_own(db, company):
    make_active(db, company)
    report(db, company, 4, 9 * GB)
    assert sorted(m["subject"] for m in warnings(db)) == [
        "Ege Bulut Ltd. uses 4 of 5 workspaces on Starter", "Ege Bulut Ltd. uses 9 GB of 10 GB storage on Starter"]


def test_a_new_billing_period_warns_again(db, company):
    make_active(db, company)
    report(db, company, 5)
    assert len(warnings(db)) == 1
    make_active(db, company, start=PERIOD_END, end="2027-02-01T09:00:00Z")  # renewed
    report(db, company, 5, at=NOW + timedelta(days=31))
    assert [m["subject"] for m in warnings(db)] == ["Ege Bulut Ltd. uses 5 of 5 workspaces on Starter"] * 2
    assert len({m["dedupe_key"] for m in warnings(db)}) == 2


def test_the_trial_counts_as_one_period_and_links_to_the_plans(db, company):
    report(db, company, 5)  # trialing on Starter
    [trial] = warnings(db)
    assert "http://testserver/billing/#plans" in trial["body_text"]
    assert ":trial:" in trial["dedupe_key"]
    make_active(db, company)  # paid: the first period starts afresh
    report(db, company, 5)
    assert len(warnings(db)) == 2


def test_unlimited_limits_never_warn_and_the_largest_plan_has_no_upgrade(db, company):
    make_active(db, company, plan="enterprise")  # unlimited workspaces, 250 GB
    report(db, company, 100_000, 0)
    assert warnings(db) == []
    report(db, company, 100_000, 250 * GB)
    [full] = warnings(db)
    assert "Enterprise is our largest plan" in full["body_text"] and "/billing/plan/" not in full["body_text"]


def test_ended_subscriptions_are_not_warned(db, company):
    with write(db):
        db.conn.execute("UPDATE subscriptions SET status = 'expired' WHERE company_id = ?", [company["id"]])
    report(db, company, 50)
    assert warnings(db) == []
    assert one(db, "SELECT usage_workspaces FROM companies WHERE id = ?", [company["id"]])["usage_workspaces"] == 50


def test_bad_figures_change_nothing(db, company):
    with pytest.raises(FormError) as exc:
        report(db, company, -1, "9")
    assert set(exc.value.errors) == {"workspaces", "storage_bytes"}
    assert one(db, "SELECT usage_reported_at FROM companies WHERE id = ?", [company["id"]])["usage_reported_at"] is None


# --- downgrades ------------------------------------------------------------------------------


def test_a_downgrade_usage_would_not_fit_is_refused_with_the_reason(db, settings, company):
    make_active(db, company, plan="team")
    report(db, company, 12, 23 * GB + GB // 2)
    with pytest.raises(ChangeError) as exc:
        changes.schedule_downgrade(db, NOW, settings, owner(db, company), "starter")
    assert str(exc.value) == "You use 12 workspaces; Starter allows 5. You store 23.5 GB; Starter allows 10 GB."
    assert one(db, "SELECT scheduled_plan FROM subscriptions WHERE company_id = ?",
               [company["id"]])["scheduled_plan"] is None
    assert scalar(db, "SELECT count(*) FROM outbox WHERE template = 'plan_change_scheduled'") == 0


def test_a_downgrade_that_fits_exactly_is_allowed(db, settings, company):
    make_active(db, company, plan="team")
    report(db, company, 5, 10 * GB)  # all of Starter, not more
    changes.schedule_downgrade(db, NOW, settings, owner(db, company), "starter")
    assert one(db, "SELECT scheduled_plan FROM subscriptions WHERE company_id = ?",
               [company["id"]])["scheduled_plan"] == "starter"


def test_usage_outgrowing_a_scheduled_downgrade_warns_the_owner_once_and_keeps_it(db, settings, company):
    make_active(db, company, plan="team")
    report(db, company, 3)
    changes.schedule_downgrade(db, NOW, settings, owner(db, company), "starter")
    report(db, company, 12)
    report(db, company, 13)
    [warning] = [m for m in warnings(db) if m["template"] == "usage_over_scheduled_plan"]
    assert warning["subject"] == "Your usage no longer fits Starter, which starts on 1 January 2027"
    assert "You use 12 workspaces; Starter allows 5." in warning["body_text"]
    assert "keep Team" in warning["body_text"]
    # The owner agreed to Starter's price: the move still happens; billing never charges more than agreed.
    assert one(db, "SELECT scheduled_plan FROM subscriptions WHERE company_id = ?",
               [company["id"]])["scheduled_plan"] == "starter"


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_shows_usage_against_the_limits(client, db):
    register(client, company="Ege Bulut Ltd.", email="deniz@example.com")
    page = visible(client.get("/billing/"))
    assert "Usage" not in page  # the host product has reported nothing yet
    company = one(db, "SELECT * FROM companies")
    make_active(db, company)
    report(db, company, 4, 3 * GB + GB // 4)
    response = client.get("/billing/")
    page = visible(response)
    assert "4 of 5 workspaces · 80 % used" in page
    assert "3.3 GB of 10 GB storage Reported" in page  # 3.25 GB, half up
    assert "Reported by your app on 1 December 2026, 12:00" in page  # Istanbul time
    meter = re.search(r'<meter aria-labelledby="usage-workspaces"[^>]*>', response.text).group(0)
    assert 'max="5"' in meter and 'value="4"' in meter
    assert "Over the limits" not in page

    report(db, company, 7, 12 * GB)
    page = visible(client.get("/billing/"))
    assert "Over the limits of Starter. You use 7 workspaces; Starter allows 5. " \
           "You store 12 GB; Starter allows 10 GB. Choose a bigger plan" in page
    assert "7 of 5 workspaces · over the limit" in page


def test_unlimited_workspaces_show_no_meter(client, db):
    register(client, plan="enterprise")
    company = one(db, "SELECT * FROM companies")
    report(db, company, 40, 0)
    response = client.get("/billing/")
    assert "Workspaces 40 workspaces · unlimited on Enterprise" in visible(response)
    assert 'aria-labelledby="usage-workspaces"' not in response.text
    assert 'aria-labelledby="usage-storage_gb"' in response.text


def test_the_change_plan_page_refuses_a_downgrade_the_usage_would_not_fit(client, db):
    register(client, plan="team")
    company = one(db, "SELECT * FROM companies")
    make_active(db, company, plan="team")
    report(db, company, 12, GB)
    page = client.get("/billing/plan/starter")
    assert page.status_code == 409
    assert "You use 12 workspaces; Starter allows 5." in visible(page)
    assert 'action="/billing/plan/downgrade"' not in page.text
    refused = post(client, "/billing/plan/downgrade", {"plan": "starter"}, token_from="/billing/", follow_redirects=True)
    assert "You use 12 workspaces; Starter allows 5." in visible(refused)
    assert one(db, "SELECT scheduled_plan FROM subscriptions")["scheduled_plan"] is None


def test_the_dashboard_tells_when_usage_outgrows_a_scheduled_downgrade(client, db):
    register(client, plan="team")
    company = one(db, "SELECT * FROM companies")
    make_active(db, company, plan="team", scheduled_plan="starter")
    report(db, company, 8)
    page = visible(client.get("/billing/"))
    assert "Your usage no longer fits Starter. You use 8 workspaces; Starter allows 5. " \
           "Reduce it before 1 January 2027, or keep Team." in page


def test_storage_figures_round_to_a_tenth_but_never_across_the_limit():
    assert usage.gb(int(2.3 * GB)) == "2.3 GB" and usage.gb(0) == "0 GB" and usage.gb(12 * GB) == "12 GB"
    assert usage.gb(10 * GB - 1, 10 * GB) == "9.9 GB"
    assert usage.gb(10 * GB, 10 * GB) == "10 GB"
    assert usage.gb(10 * GB + 1, 10 * GB) == "10.1 GB"
