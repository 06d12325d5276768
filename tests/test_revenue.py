"""Revenue metrics (billing/revenue.py, /admin/metrics): a known history built through the real
domain functions — sign-ups, checkouts and PayTR's callbacks, an upgrade, a scheduled downgrade,
cancels, a past-due renewal recovered and one that churned, a failed payment, a refund, a yearly
plan and a TRY plan — over four months, and every figure asserted exactly; the snapshot the page
reads equals a recomputation from the events; the CSVs; who may see it."""

import csv
import io
import json
import re
from datetime import timedelta
from fractions import Fraction

import pytest

from billing import accounts, changes, jobs, payments, refunds, revenue, subscriptions
from billing.clock import iso, parse
from billing.db import one, write
from billing.paytr import protocol
from conftest import PASSWORD, START, login, make_company, visible

DAY = timedelta(days=1)
TRIAL_END = START + 14 * DAY  # 2026-12-11T09:00:00Z
PERIOD_END = parse("2027-01-11T09:00:00Z")  # of everyone who paid during the trial
NOW = parse("2027-02-10T09:00:00Z")
MONTHS = ["2026-03", "2026-04", "2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11",
          "2026-12", "2027-01", "2027-02"]


def add_plans(db):
    with write(db):
        for code, name, price, currency, interval in (("team-yearly", "Team yearly", 99000, "USD", "year"),
                                                     ("baslangic-try", "Başlangıç", 99900, "TRY", "month"),
                                                     ("ekip-try", "Ekip", 199200, "TRY", "month")):
            db.conn.execute("""INSERT INTO plans (code, name_en, name_tr, price, currency, interval, storage_gb,
                                   sort_order, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 10, 50, ?, ?)""",
                            [code, name, name, price, currency, interval, iso(START), iso(START)])


def checkout(db, settings, owner, plan, at, upgrade=None):
    return payments.start_checkout(db, at, settings, user=owner, plan_code=plan, ip="85.34.78.112",
                                   upgrade=upgrade).payment


def paytr_says(db, settings, payment, at, ok=True):
    fields = ({"currency": "TL" if payment["currency"] == "TRY" else payment["currency"], "test_mode": "1",
               "payment_amount": payment["amount"]} if ok
              else {"failed_reason_code": "0", "failed_reason_msg": "Kartın bakiyesi yetersiz", "test_mode": "1"})
    form = protocol.callback_form(merchant_oid=payment["merchant_oid"], status="success" if ok else "failed",
                                  total_amount=payment["amount"] if ok else 0, key=str(settings.paytr_merchant_key),
                                  salt=str(settings.paytr_merchant_salt), **fields)
    cb = protocol.parse_callback(form, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
    return payments.apply_callback(db, at, settings, cb, "203.0.113.9")


def pay(db, settings, owner, plan, at, ok=True):
    payment = checkout(db, settings, owner, plan, at)
    assert paytr_says(db, settings, payment, at + timedelta(minutes=1), ok) == ("applied" if ok else "failed")
    return payment


def status(db, owner):
    return subscriptions.for_company(db, owner["company_id"])["status"]


def tick(db, settings, at):
    jobs.run_due_subscriptions(db, at, settings)


def build_history(db, settings, password_hash, refresh_at=()):
    """Seven companies from 27 November 2026 to 10 February 2027 (Istanbul months).
    `refresh_at`: instants at which the snapshot is refreshed on the way (as the daily tick would)."""
    add_plans(db)
    refresh_at = sorted(refresh_at)

    def maybe_refresh(until):
        while refresh_at and refresh_at[0] <= until:
            revenue.refresh(db, refresh_at.pop(0), settings)

    owners = {}
    for key, plan in (("a", "starter"), ("b", "team"), ("c", "starter"), ("d", "enterprise"), ("e", "starter"),
                      ("f", "team-yearly"), ("g", "ekip-try")):
        owners[key] = make_company(db, settings, START, password_hash, email=f"{key}@example.com",
                                   company_name=f"Firma {key.upper()}", plan=plan)
        assert subscriptions.for_company(db, owners[key]["company_id"])["plan"] == plan
    a, b, c, d, e, f, g = (owners[k] for k in "abcdefg")
    # November: five USD trials and the TRY one paid for during the trial; B's card is declined.
    for owner, plan in ((a, "starter"), (c, "starter"), (d, "enterprise"), (e, "starter"), (f, "team-yearly"),
                        (g, "ekip-try")):
        pay(db, settings, owner, plan, START + timedelta(minutes=5))
    pay(db, settings, b, "team", START + DAY, ok=False)
    maybe_refresh(parse("2026-12-05T09:00:00Z"))
    # December: B's trial runs out; A upgrades to Team, paying the prorated difference; D cancels at the
    # period's end; G schedules a move down to the cheaper TRY plan; A gets 10.00 back.
    tick(db, settings, TRIAL_END)
    assert status(db, b) == "expired"
    at = parse("2026-12-15T09:00:00Z")
    quote = changes.upgrade_quote(db, at, settings, a["company_id"], "team")
    upgrade = checkout(db, settings, a, "team", at, upgrade=quote)
    assert paytr_says(db, settings, upgrade, at + timedelta(minutes=1)) == "applied"
    changes.cancel_at_period_end(db, at, settings, d)
    changes.schedule_downgrade(db, at, settings, g, "baslangic-try")
    first = one(db, "SELECT * FROM payments WHERE company_id = ? AND kind = 'subscribe' AND status = 'succeeded'",
                [a["company_id"]])
    refund, _ = refunds.start(db, parse("2026-12-20T09:00:00Z"), payment_id=first["id"], amount="10.00",
                              reason="Goodwill", request_key=refunds.new_request_key(), actor="staff:1")
    refunds.settle(db, parse("2026-12-20T09:01:00Z"), settings, refund["id"], ok=True, message=refunds.ACCEPTED)
    maybe_refresh(parse("2027-01-02T09:00:00Z"))
    # January: B subscribes after its trial ran out; A and G renew on the day (G at the lower price);
    # C and E go past due; D ends; C pays two days late; E's card is declined, then E is canceled.
    pay(db, settings, b, "team", parse("2027-01-05T09:00:00Z"))
    pay(db, settings, a, "team", PERIOD_END)
    pay(db, settings, g, "baslangic-try", PERIOD_END)
    if subscriptions.for_company(db, f["company_id"])["current_period_end"] == iso(PERIOD_END):
        # Yearly periods are helper "plans"' work: until they are 12 months long, F renews here too
        # (the same MRR either way).
        pay(db, settings, f, "team-yearly", PERIOD_END)
    tick(db, settings, PERIOD_END + timedelta(minutes=5))
    assert [status(db, o) for o in (c, d, e)] == ["past_due", "canceled", "past_due"]
    pay(db, settings, c, "starter", PERIOD_END + 2 * DAY)
    pay(db, settings, e, "starter", PERIOD_END + DAY, ok=False)
    tick(db, settings, PERIOD_END + 7 * DAY)
    assert [status(db, o) for o in (c, e)] == ["active", "canceled"]
    maybe_refresh(parse("2027-02-01T09:00:00Z"))
    # February: E comes back.
    pay(db, settings, e, "starter", parse("2027-02-03T09:00:00Z"))
    maybe_refresh(NOW)
    return owners


def zeros(**figures):
    return {**dict.fromkeys(revenue.FIELDS, 0), **figures}


EXPECTED = {
    "USD": {
        "2026-11": zeros(mrr_end=46850, paying_end=5, trialing=1, new=46850, trials_ended=5, trials_converted=5,
                         failed_count=1, failed_amount=9900),
        "2026-12": zeros(mrr_start=46850, mrr_end=53850, paying_start=5, paying_end=5, expansion=7000,
                         trials_ended=1, refund_count=1, refund_amount=1000),
        "2027-01": zeros(mrr_start=53850, mrr_end=30950, paying_start=5, paying_end=4, new=9900, churned=32800,
                         churned_customers=2, dunning_ended=2, dunning_recovered=1, failed_count=1,
                         failed_amount=2900),
        "2027-02": zeros(mrr_start=30950, mrr_end=33850, paying_start=4, paying_end=5, reactivation=2900),
    },
    "TRY": {
        "2026-11": zeros(mrr_end=199200, paying_end=1, new=199200, trials_ended=1, trials_converted=1),
        "2026-12": zeros(mrr_start=199200, mrr_end=199200, paying_start=1, paying_end=1),
        "2027-01": zeros(mrr_start=199200, mrr_end=99900, paying_start=1, paying_end=1, contraction=99300),
        "2027-02": zeros(mrr_start=99900, mrr_end=99900, paying_start=1, paying_end=1),
    },
}


def figures_of(report, currency):
    return {m.key: m.figures for m in report.months[currency]}


def assert_expected(report):
    assert report.currencies == ["USD", "TRY"]  # most paying customers first
    for currency, months in EXPECTED.items():
        got = figures_of(report, currency)
        assert list(got) == MONTHS
        for key in MONTHS:
            assert got[key] == months.get(key, zeros()), (currency, key)


def test_every_figure_of_a_known_history(db, settings, password_hash):
    build_history(db, settings, password_hash)
    report = revenue.compute(db, NOW, settings)
    assert_expected(report)
    usd = {m.key: m for m in report.months["USD"]}
    # Yearly Team counts 99,000 ÷ 12 = 8,250 a month; E (starter, 2,900) is the only reactivation.
    assert report.headline("USD") == {"mrr": 33850, "arr": 406200, "paying": 5, "trialing": 0}
    assert report.headline("TRY") == {"mrr": 99900, "arr": 1198800, "paying": 1, "trialing": 0}
    assert usd["2027-01"].logo_churn == Fraction(2, 5)
    assert usd["2027-01"].revenue_churn == Fraction(32800, 53850)
    assert usd["2027-01"].recovery == Fraction(1, 2)
    assert usd["2026-11"].conversion == Fraction(1) and usd["2026-12"].conversion == Fraction(0)
    assert usd["2026-11"].logo_churn is None  # nobody paid at its start: nothing to divide by
    assert usd["2027-02"].net_new == 2900 and usd["2027-01"].net_new == 30950 - 53850
    try_jan = {m.key: m for m in report.months["TRY"]}["2027-01"]
    assert try_jan.revenue_churn == Fraction(99300, 199200) and try_jan.logo_churn == Fraction(0)
    # Every month's bridge holds: end = start + new + reactivation + expansion − contraction − churned.
    for currency in report.currencies:
        for m in report.months[currency]:
            assert m.mrr_end == m.mrr_start + m.net_new, (currency, m.key)


@pytest.mark.parametrize("refresh_at", [
    # refreshed on the way (mid-month, across month ends), as the daily tick does, then more events
    ["2026-12-05T09:00:00Z", "2027-01-02T09:00:00Z", "2027-02-01T09:00:00Z"],
    # one old snapshot (from the month the companies first paid): the page folds two month ends on
    # top of it, and D's churn in January must be measured from D's state at January's start
    ["2026-11-28T12:00:00Z"],
    ["2026-12-20T12:00:00Z"],
])
def test_the_snapshot_the_page_reads_equals_folding_every_event(db, settings, password_hash, refresh_at):
    build_history(db, settings, password_hash, refresh_at=[parse(at) for at in refresh_at])
    snapshot = revenue.report(db, NOW, settings)
    live = revenue.compute(db, NOW, settings)
    assert_expected(snapshot)
    for currency in live.currencies:
        assert figures_of(snapshot, currency) == figures_of(live, currency)
    if len(refresh_at) == 1:
        return  # the rest follows the daily refreshes
    # The snapshot kept the closed months; the page folded only what came after the last refresh.
    meta = json.loads(one(db, "SELECT value FROM app_state WHERE key = 'revenue_snapshot'")["value"])
    assert meta["month"] == "2027-02"
    assert one(db, "SELECT count(*) AS n FROM revenue_months WHERE closed = 1")["n"] == 6  # Nov–Jan × 2
    after = db.conn.execute("SELECT count(*) FROM events WHERE id > ? AND kind LIKE 'subscription.%'",
                            [meta["cursor"]]).fetchone()[0]
    assert after > 0  # E's return in February came after the last refresh
    # Rebuilt from scratch at NOW: the same figures, and the snapshot is current.
    revenue.rebuild(db, NOW, settings)
    assert_expected(revenue.report(db, NOW, settings))
    # A month later with nothing new, February closes as it was and March starts from its end.
    march = revenue.report(db, parse("2027-03-10T09:00:00Z"), settings)
    months = {m.key: m.figures for m in march.months["USD"]}
    assert months["2027-02"] == EXPECTED["USD"]["2027-02"]
    assert months["2027-03"] == zeros(mrr_start=33850, mrr_end=33850, paying_start=5, paying_end=5)


def test_events_say_the_mrr_relevant_state_after_every_change(db, settings, password_hash):
    build_history(db, settings, password_hash)
    for kind, text in db.conn.execute("SELECT kind, data FROM events WHERE kind LIKE 'subscription.%'"):
        status = kind.split(".", 1)[1]
        if status in revenue.STATES:
            data = json.loads(text)
            assert {"plan", "price", "currency", "previous"} <= set(data), (kind, data)


def test_old_events_without_a_price_use_the_catalog_price(db, settings):
    # An event from before subscriptions stored their price, and a price change applied later.
    add_plans(db)
    with write(db):
        db.conn.execute("INSERT INTO companies (id, name, timezone, created_at) VALUES (90, 'Eski', "
                        "'Europe/Istanbul', ?)", [iso(START)])
        for at, kind, data in (
                (START, "company.registered", {"plan": "team"}),
                (START + DAY, "subscription.active", {"previous": "trialing", "plan": "team"}),
                (START + 2 * DAY, "subscription.past_due", {"previous": "active"}),
                (START + 3 * DAY, "subscription.active", {"previous": "past_due"}),
                (parse("2026-12-20T09:00:00Z"), "subscription.price_changed",
                 {"plan": "team", "previous_price": 9900, "price": 10800, "currency": "USD"})):
            db.conn.execute("INSERT INTO events (created_at, company_id, actor, kind, message, data) "
                            "VALUES (?, 90, 'system', ?, '', ?)", [iso(at), kind, json.dumps(data)])
    months = figures_of(revenue.compute(db, parse("2026-12-25T09:00:00Z"), settings), "USD")
    assert months["2026-11"] == zeros(mrr_end=9900, paying_end=1, new=9900, trials_ended=1, trials_converted=1,
                                      dunning_ended=1, dunning_recovered=1)
    assert months["2026-12"] == zeros(mrr_start=9900, mrr_end=10800, paying_start=1, paying_end=1, expansion=900)


def test_the_tick_refreshes_the_snapshot_once_a_day_or_after_a_busy_spell(db, settings, password_hash, monkeypatch):
    make_company(db, settings, START, password_hash, email="x@example.com")
    assert revenue.refresh_if_due(db, START, settings) is not None
    assert revenue.refresh_if_due(db, START + timedelta(hours=5), settings) is None  # same Istanbul day
    assert revenue.refresh_if_due(db, START + DAY, settings) is not None
    monkeypatch.setattr(revenue, "REFRESH_AFTER_EVENTS", 1)
    make_company(db, settings, START + DAY, password_hash, email="y@example.com")  # one more event
    assert revenue.refresh_if_due(db, START + DAY + timedelta(hours=1), settings) is not None
    assert revenue.refresh_if_due(db, START + DAY + timedelta(hours=2), settings) is None
    assert revenue.report(db, START + DAY, settings).headline("USD")["trialing"] == 2


# --- the page -------------------------------------------------------------------------------------


@pytest.fixture
def history(client, app, clock, db, settings, password_hash):
    build_history(db, settings, password_hash)
    clock.at = NOW
    for role in ("admin", "finance", "support"):
        accounts.create_staff(db, START, email=f"{role}@example.com", name=role.title(), password_hash=password_hash,
                              staff_role=role)
    return client


def test_finance_sees_the_page_and_support_is_refused(history):
    login(history, email="support@example.com", password=PASSWORD)
    refused = history.get("/admin/metrics")
    assert refused.status_code == 403 and "Support" in refused.text
    assert history.get("/admin/metrics/all.csv").status_code == 403
    assert 'href="/admin/metrics"' not in history.get("/admin/").text  # no link in the section bar
    history.cookies.clear()
    login(history, email="finance@example.com", password=PASSWORD)
    page = history.get("/admin/metrics")
    assert page.status_code == 200
    text = visible(page)
    assert "MRR $338.50" in text and "ARR $4,062.00" in text  # now
    assert "February 2027 (so far)" in text and "January 2027" in text
    assert "How we count" in text and "Logo churn" in text
    assert "40.0%" in text  # January's logo churn, 2 of 5
    assert "<svg" in page.text and "<script" not in page.text.split("<main", 1)[-1].split("</main>")[0]
    assert 'href="/admin/metrics"' in history.get("/admin/").text


def test_the_currency_selector_and_turkish_month_names(history):
    login(history, email="finance@example.com", password=PASSWORD)
    page = history.get("/admin/metrics?currency=TRY")
    text = visible(page)
    assert '<option value="TRY" selected>' in page.text and "$338.50" not in text
    assert "₺999.00" in text and "-₺993.00" in text  # MRR now; January's contraction
    assert history.get("/admin/metrics?currency=EUR").status_code == 404
    history.cookies.set("lang", "tr")
    turkish = visible(history.get("/admin/metrics?currency=USD", headers={"Accept-Language": "tr"}))
    assert "Ocak 2027" in turkish and "Şubat 2027" in turkish


def read_csv(response):
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_the_csv_of_each_chart_and_of_everything(history):
    login(history, email="finance@example.com", password=PASSWORD)
    movements = read_csv(history.get("/admin/metrics/movements.csv?currency=USD"))
    assert movements[0] == ["Month", "Currency", "New MRR", "Expansion MRR", "Reactivation MRR", "Contraction MRR",
                            "Churned MRR", "Net new MRR"]
    assert len(movements) == 13
    assert movements[-2] == ["2027-01", "USD", "99.00", "0.00", "0.00", "0.00", "328.00", "-229.00"]
    assert movements[-1] == ["2027-02", "USD", "0.00", "0.00", "29.00", "0.00", "0.00", "29.00"]
    mrr = read_csv(history.get("/admin/metrics/mrr.csv?currency=TRY"))
    assert mrr[-1] == ["2027-02", "TRY", "999.00", "999.00", "11988.00", "1", "1", "0"]
    rates = read_csv(history.get("/admin/metrics/rates.csv?currency=USD"))
    assert rates[0][2:5] == ["Logo churn rate (%)", "Revenue churn rate (%)", "Trial-to-paid conversion (%)"]
    assert rates[-2] == ["2027-01", "USD", "40.00", "60.91", "", "0", "0", "50.00", "1", "2", "1", "29.00", "0",
                         "0.00"]
    assert rates[-3][-2:] == ["1", "10.00"]  # December's refund
    everything = read_csv(history.get("/admin/metrics/all.csv"))
    assert len(everything) == 1 + 12 * 2  # both currencies, twelve months each
    assert {row[1] for row in everything[1:]} == {"USD", "TRY"}
    assert len(everything[0]) == 2 + 6 + 6 + 12
    assert history.get("/admin/metrics/other.csv").status_code == 404


def test_the_rebuild_command(tmp_path, db, settings, password_hash):
    import os
    import subprocess
    import sys
    from pathlib import Path

    make_company(db, settings, START, password_hash, email="x@example.com")
    env = {**os.environ, "BILLING_DATA_DIR": str(settings.data_dir), "BILLING_ENV": "development"}
    result = subprocess.run([sys.executable, "main.py", "revenue", "rebuild"], cwd=Path(__file__).parent.parent,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # closed months: as many as have ended between the sign-up and the real time of the run
    assert re.fullmatch(r"revenue snapshot rebuilt: \d+ closed months, 1 companies, through event \d+\n", result.stdout)
    meta = json.loads(one(db, "SELECT value FROM app_state WHERE key = 'revenue_snapshot'")["value"])
    assert meta["cursor"] == db.conn.execute("SELECT max(id) FROM events").fetchone()[0]
