"""Finding customers and payments in the console: filters, Turkish-aware search, exact identifiers,
sorts with keyset pages, the payments report and its CSV, and the query plans that keep all of it
on indexes at 100,000 customers (benchmarks/console.py measures that; these tests use a handful)."""

import csv
import io
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from billing import accounts, clock as clock_module, customer_search, payments_report
from billing.db import one, rows, scalar, write
from conftest import START, login, make_company, second_browser, visible
from test_checkout_http import checkout_oid, pay, subscribe
from test_refunds import paid, refund, staff  # noqa: F401 (fixtures)


def company_names(page) -> list[str]:
    """The customer list's company links, top to bottom, as staff see them."""
    return [re.sub(r"<[^>]+>", "", name) for name in
            re.findall(r'<td data-label="Company"><a href="/admin/companies/\d+">([^<]+)</a>', page.text)]


def listed_ids(page) -> list[int]:
    return [int(i) for i in re.findall(r'<td data-label="Company"><a href="/admin/companies/(\d+)">', page.text)]


def set_subscription(db, company_id, **values):
    with write(db):
        assignments = ", ".join(f"{column} = ?" for column in values)
        db.conn.execute(f"UPDATE subscriptions SET {assignments} WHERE company_id = ?", [*values.values(), company_id])


@pytest.fixture
def customers(db, settings, password_hash):
    """Five companies in different states (names chosen for the Turkish folding cases)."""
    made = {}
    for n, (name, email) in enumerate([("Yılmaz Yazılım ŞİRKETİ", "ayse@yilmaz.com.tr"),
                                       ("Işık Lojistik şirketi", "IBRAHIM@isik.example"),
                                       ("Çağlayan Danışmanlık Şirketi", "can@caglayan.example"),
                                       ("Anadolu Tekstil", "zeynep@anadolu.example"),
                                       ("Ege Gıda", "mert@ege.example")], start=1):
        user = make_company(db, settings, START + timedelta(minutes=n), password_hash, company_name=name,
                            email=email.lower(), n=n)
        made[name.split()[0]] = user["company_id"]
    with write(db):
        db.conn.execute("""INSERT INTO plans (code, name_en, name_tr, price, currency, interval, storage_gb, sort_order,
                                              created_at, updated_at)
                           VALUES ('yillik', 'Yearly', 'Yıllık', 120000, 'TRY', 'year', 10, 40, ?, ?)""",
                        [clock_module.iso(START), clock_module.iso(START)])
    end = clock_module.iso(START + timedelta(days=30))
    set_subscription(db, made["Yılmaz"], status="active", plan="team", price=9900, currency="USD",
                     current_period_end=end)
    set_subscription(db, made["Işık"], status="past_due", plan="yillik", price=120000, currency="TRY",
                     current_period_end=clock_module.iso(START + timedelta(days=2)))
    set_subscription(db, made["Çağlayan"], status="canceled", current_period_end=clock_module.iso(START))
    # Anadolu's trial ends in 3 days, Ege's in 14 (the default)
    set_subscription(db, made["Anadolu"], trial_ends_at=clock_module.iso(START + timedelta(days=3)))
    return made


# --- MRR and the period end are kept by the database ---------------------------------------------


def test_mrr_follows_status_price_and_interval_and_yearly_plans_count_one_twelfth(db, customers):
    def mrr(name):
        return one(db, "SELECT mrr, currency, ends_at FROM subscriptions WHERE company_id = ?", [customers[name]])

    assert mrr("Yılmaz")["mrr"] == 9900  # active monthly: its price
    assert (mrr("Işık")["mrr"], mrr("Işık")["currency"]) == (10000, "TRY")  # past due, yearly 1,200 TRY: 100 a month
    assert mrr("Çağlayan")["mrr"] == 0 and mrr("Anadolu")["mrr"] == 0  # canceled, trialing
    assert mrr("Anadolu")["ends_at"] == clock_module.iso(START + timedelta(days=3))  # a trial: its end
    assert mrr("Yılmaz")["ends_at"] == clock_module.iso(START + timedelta(days=30))  # paid: the period's end
    set_subscription(db, customers["Yılmaz"], price=12900)  # a price applied to the subscriber
    assert mrr("Yılmaz")["mrr"] == 12900
    set_subscription(db, customers["Işık"], price=120001)  # rounded half up to minor units
    assert mrr("Işık")["mrr"] == 10000
    with write(db):  # a plan's interval changed: its subscribers' MRR follows
        db.conn.execute("UPDATE plans SET interval = 'month' WHERE code = 'yillik'")
    assert mrr("Işık")["mrr"] == 120001
    set_subscription(db, customers["Işık"], status="canceled")
    assert mrr("Işık")["mrr"] == 0


# --- search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["şirketi", "ŞİRKETİ", "Şirketi", "şİrKeTi"])
def test_turkish_case_folding_finds_the_same_companies(client, staff, customers, typed):
    page = staff.get(f"/admin/?q={typed}")
    assert set(company_names(page)) == {"Çağlayan Danışmanlık Şirketi", "Işık Lojistik şirketi",
                                        "Yılmaz Yazılım ŞİRKETİ"}


def test_dotted_and_dotless_i_match_either_way(client, staff, customers):
    assert company_names(staff.get("/admin/?q=ISIK")) == ["Işık Lojistik şirketi"]
    assert company_names(staff.get("/admin/?q=yilmaz yazilim")) == ["Yılmaz Yazılım ŞİRKETİ"]
    assert company_names(staff.get("/admin/?q=DANIŞ")) == ["Çağlayan Danışmanlık Şirketi"]


def test_search_by_any_part_of_an_owner_or_member_email(client, db, staff, customers):
    assert company_names(staff.get("/admin/?q=isik.exam")) == ["Işık Lojistik şirketi"]
    assert company_names(staff.get("/admin/?q=mert@")) == ["Ege Gıda"]
    # a member joins Anadolu: their address finds the company too, and leaving forgets it
    with write(db):
        db.conn.execute("""INSERT INTO users (company_id, email, name, password_hash, role, created_at, password_changed_at)
                           VALUES (?, 'muhasebe@ortak.example', 'Muhasebe', 'x', 'member', ?, ?)""",
                        [customers["Anadolu"], clock_module.iso(START), clock_module.iso(START)])
    assert company_names(staff.get("/admin/?q=muhasebe@ortak")) == ["Anadolu Tekstil"]
    with write(db):
        db.conn.execute("DELETE FROM users WHERE email = 'muhasebe@ortak.example'")
    assert company_names(staff.get("/admin/?q=muhasebe@ortak")) == []


def test_a_renamed_company_is_found_by_its_new_name_only(client, db, staff, customers):
    with write(db):
        db.conn.execute("UPDATE companies SET name = 'Karadeniz Balıkçılık' WHERE id = ?", [customers["Ege"]])
    assert company_names(staff.get("/admin/?q=balıkçı")) == ["Karadeniz Balıkçılık"]
    assert company_names(staff.get("/admin/?q=Ege G")) == []


def test_queries_shorter_than_three_letters_match_the_start_and_say_so(client, staff, customers):
    page = staff.get("/admin/?q=ı")  # folds to "i": the start of Işık's name and of its owner's email
    assert company_names(page) == ["Işık Lojistik şirketi"]
    assert "Fewer than 3 characters: showing companies whose name or owner email starts with “ı”." in visible(page)
    assert company_names(staff.get("/admin/?q=ze")) == ["Anadolu Tekstil"]  # zeynep@…
    assert company_names(staff.get("/admin/?q=ka")) == []  # inside names ("Lojistik"), not at a start


def test_exact_identifiers_find_their_customer(client, app, db, paid, staff):
    register_more = make_company(db, app.state.settings, START, accounts.hash_password("x" * 12),
                                 company_name="Başka Firma", n=77)
    with write(db):
        db.conn.execute("UPDATE companies SET billing_tax_id = '1234567890' WHERE id = ?",
                        [register_more["company_id"]])
    assert refund(staff, paid, amount="5.00").status_code == 303
    invoice = scalar(db, "SELECT number FROM invoices")
    note = scalar(db, "SELECT number FROM credit_notes")
    for typed, label in [(paid["merchant_oid"], f"Payment {paid['merchant_oid']}"),
                         (invoice.lower(), f"Invoice {invoice}"), (note, f"Credit note {note}")]:
        page = staff.get("/admin/", params={"q": typed})
        assert company_names(page) == ["Yılmaz Yazılım A.Ş."], typed
        assert label in visible(page)
    page = staff.get("/admin/?q=1234567890")
    assert company_names(page) == ["Başka Firma"] and "Tax number 1234567890" in visible(page)
    assert company_names(staff.get("/admin/?q=1234567891")) == []


def test_nothing_found_says_what_can_be_searched(client, staff, customers):
    page = visible(staff.get("/admin/?q=yok böyle bir şey"))
    assert "No customers match “yok böyle bir şey”" in page
    assert "a tax number, an invoice or credit-note number" in page


# --- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, expected", [
    ("status=active", ["Yılmaz"]),
    ("status=trialing", ["Ege", "Anadolu"]),
    ("status=canceled", ["Çağlayan"]),
    ("plan=team", ["Yılmaz"]),
    ("plan=yillik", ["Işık"]),
    ("currency=TRY", ["Işık"]),
    ("currency=USD&status=trialing", ["Ege", "Anadolu"]),
    ("preset=past_due", ["Işık"]),
    ("preset=trial_ending", ["Anadolu"]),
    ("status=active&q=şirketi", ["Yılmaz"]),
])
def test_each_filter_shows_exactly_its_customers(client, staff, customers, params, expected):
    page = staff.get(f"/admin/?{params}")
    assert listed_ids(page) == [customers[name] for name in expected]


def test_card_expiring_means_this_month_next_month_or_already_expired(client, db, staff, customers):
    with write(db):  # START is 27 November 2026
        for name, month in [("Yılmaz", "2026-11"), ("Işık", "2026-12"), ("Çağlayan", "2027-01"),
                            ("Anadolu", "2026-08")]:
            db.conn.execute("UPDATE companies SET card_expires = ? WHERE id = ?", [month, customers[name]])
    page = staff.get("/admin/?preset=card_expiring")
    assert listed_ids(page) == [customers["Anadolu"], customers["Işık"], customers["Yılmaz"]]


def test_an_unknown_filter_value_is_named_and_ignored(client, staff, customers):
    page = staff.get("/admin/?status=deleted&plan=nope")
    assert page.status_code == 200 and len(listed_ids(page)) == 5
    assert "Ignored a filter value this list does not know: “deleted”." in visible(page)
    broken = staff.get("/admin/?after=x~y&order=mrr-desc")
    assert "That page link is not valid any more; here is the first page." in visible(broken)


def test_the_htmx_list_is_the_fragment_alone(client, staff, customers):
    fragment = staff.get("/admin/?q=ege", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="companies">')
    assert "Emails that could not be sent" not in fragment.text and company_names(fragment) == ["Ege Gıda"]


# --- sorts and keyset pages ------------------------------------------------------------------------


def walk(staff, url) -> list[int]:
    """Follow "Next page" from `url` to the end; every company id seen, in order."""
    seen = []
    for _ in range(50):
        page = staff.get(url)
        seen += listed_ids(page)
        found = re.search(r'href="([^"]+)"[^>]*rel="next"', page.text)
        if not found:
            return seen
        url = found.group(1).replace("&amp;", "&")
    raise AssertionError("more than 50 pages")


@pytest.mark.parametrize("order", list(customer_search.ORDERS))
def test_every_sort_both_ways_pages_through_every_customer_once(client, db, staff, customers, settings,
                                                                password_hash, monkeypatch, order):
    monkeypatch.setattr(customer_search, "PAGE_SIZE", 2)
    for n in range(6, 12):  # more customers, with ties in MRR and period end
        user = make_company(db, settings, START + timedelta(minutes=n), password_hash, n=n)
        if n % 2:
            set_subscription(db, user["company_id"], status="active", price=9900, currency="USD",
                             current_period_end=clock_module.iso(START + timedelta(days=30)))
    sort, direction = order.split("-")
    column = {"created": "company_id", "mrr": "mrr", "ends": "ends_at"}[sort]
    expected = [r["company_id"] for r in rows(
        db, f"SELECT company_id FROM subscriptions ORDER BY {column} {direction}, company_id {direction}")]
    assert walk(staff, f"/admin/?order={order}") == expected
    assert len(set(expected)) == 11


def test_pages_neither_repeat_nor_skip_while_customers_sign_up(client, db, staff, customers, settings,
                                                               password_hash, monkeypatch):
    monkeypatch.setattr(customer_search, "PAGE_SIZE", 2)
    first = staff.get("/admin/")
    shown = listed_ids(first)
    make_company(db, settings, START + timedelta(hours=1), password_hash, n=99)  # arrives at the top meanwhile
    next_url = re.search(r'href="([^"]+)"[^>]*rel="next"', first.text).group(1).replace("&amp;", "&")
    rest = walk(staff, next_url)
    assert shown + rest == sorted(customers.values(), reverse=True)
    assert "First page" in visible(staff.get(next_url))


def test_the_list_shows_mrr_plan_status_and_end(client, staff, customers):
    page = staff.get("/admin/?q=ışık")
    row = visible(page)
    assert "Işık Lojistik şirketi ibrahim@isik.example Yearly Past due ₺100.00" in row
    assert "29 Nov 2026" in row


# --- the query plans: an index for every filter, search and sort -----------------------------------

TABLES = r"(s|c|ce|u|p|i|r|companies|subscriptions|users|payments|invoices|refunds)"


def scans(plan: list[str], filtered: bool = True) -> list[str]:
    """The steps that may read a whole table: a SCAN without an index; an index walked end to end
    and then sorted; and, when the query filters, any walk at all (checking the filter row by row
    along a sort index reads the whole table when few rows match). Only an unfiltered list may
    walk its sort index, which stops at the LIMIT."""
    bad = [step for step in plan if re.fullmatch(rf"SCAN {TABLES}", step)]
    if filtered or any(step.startswith("USE TEMP B-TREE FOR ORDER BY") for step in plan):
        bad += [step for step in plan if re.match(rf"SCAN {TABLES} USING", step)]
    return bad


def plans_of(db, sql, params) -> list[str]:
    """The plan's steps. The customer list first picks a page's ids (the subquery `page`, where every
    filter, sort and limit is), then reads those 51 rows' columns and puts them back in order: the
    outer steps are lookups by id and a sort of the page, so only the subquery's steps are judged
    (the outer ones must be lookups, checked here)."""
    steps = db.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    pages = [row[0] for row in steps if row[3] == "CO-ROUTINE page"]
    if not pages:
        return [row[3] for row in steps]
    inner, outer = {pages[0]}, []
    for row_id, parent, _unused, detail in steps:
        if parent in inner:
            inner.add(row_id)
        elif row_id not in inner:
            outer.append(detail)
    assert all(step in ("SCAN page", "USE TEMP B-TREE FOR ORDER BY", "CORRELATED SCALAR SUBQUERY 1")
               or step.startswith("SEARCH") for step in outer), outer
    return [detail for row_id, _parent, _unused, detail in steps if row_id in inner and row_id != pages[0]]


def customer_list_queries():
    yield {}
    for status in customer_search.STATUSES:
        yield {"status": status}
    for field, value in (("plan", "team"), ("currency", "TRY")):
        yield {field: value}
    for preset in customer_search.PRESETS:
        yield {"preset": preset}
    for q in ("şirketi", "ay", "INV-2026-000001", "1234567890", "PB1T20261127090000ABCDEF123456"):
        yield {"q": q}
    for order in customer_search.ORDERS:
        sort, direction = order.split("-")
        cursor = {"created": "~5", "mrr": "900~5", "ends": "2026-12-01T00:00:00Z~5"}[sort]
        yield {"sort": sort, "direction": direction}
        yield {"sort": sort, "direction": direction, "after": cursor}
        yield {"sort": sort, "direction": direction, "status": "active", "after": cursor}
        yield {"sort": sort, "direction": direction, "q": "yazılım"}


def test_every_customer_list_query_reads_indexes_not_tables(db, customers):
    from zoneinfo import ZoneInfo

    for values in customer_list_queries():
        query = customer_search.Query(**values)
        sql, params = customer_search.build(query, START, ZoneInfo("Europe/Istanbul"),
                                            customer_search.identifier_matches(db, query.q) if query.q else {})
        plan = plans_of(db, sql, params)
        assert not scans(plan, filtered=query.filtered), (values, plan)


def test_identifier_lookups_and_the_home_counts_read_indexes(db, customers):
    probes = [("SELECT company_id, number FROM invoices WHERE number = ?", ["INV-2026-000001"]),
              ("SELECT company_id, number FROM credit_notes WHERE number = ?", ["CN-2026-000001"]),
              ("SELECT id FROM companies WHERE billing_tax_id = ?", ["1234567890"]),
              ("SELECT company_id, merchant_oid FROM payments WHERE merchant_oid IN (?, ?)", ["PB1T2", "PB1T2"]),
              ("SELECT count(*) FROM outbox WHERE status = 'pending'", []),
              ("SELECT count(*) FROM outbox WHERE status = 'failed'", [])]
    for sql, params in probes:
        plan = plans_of(db, sql, params)
        # the outbox counts walk a partial index: only the pending (or failed) emails, never the sent ones
        assert all(step.startswith("SEARCH") or re.fullmatch(r"SCAN outbox USING (COVERING )?INDEX outbox_(due|failed)", step)
                   for step in plan), (sql, plan)


def test_the_payments_report_reads_indexes_not_tables(db, customers):
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Istanbul")
    base = payments_report.Query(start=START.date().replace(day=1), end=START.date())
    for query in (base, payments_report.Query(start=base.start, end=base.end, status="failed", plan="team",
                                              currency="USD", kind="renewal"),
                  payments_report.Query(start=base.start, end=base.end, after="2026-11-20T10:00:00Z~4")):
        for sql, params in (payments_report.select(query, tz, limit=50), payments_report.totals_sql(query, tz),
                            payments_report.select(query, tz, limit=50, ascending=True)):
            plan = plans_of(db, sql, params)
            assert not scans(plan), plan
            assert any("payments_created" in s or "payments_report" in s for s in plan), plan


def test_the_plan_check_would_catch_a_missing_index(db, customers):
    """The check above can fail: without the status index, the status filter walks the table."""
    from zoneinfo import ZoneInfo

    with write(db):
        for name in ("subscriptions_status_created", "subscriptions_status_mrr", "subscriptions_status_ends",
                         "subscriptions_renewing"):
            db.conn.execute(f"DROP INDEX {name}")
    sql, params = customer_search.build(customer_search.Query(status="active", sort="mrr"), START,
                                        ZoneInfo("Europe/Istanbul"))
    plan = plans_of(db, sql, params)
    assert scans(plan) == ["SCAN s USING INDEX subscriptions_by_mrr"], plan
    sql, params = customer_search.build(customer_search.Query(q="şirketi"), START, ZoneInfo("Europe/Istanbul"))
    with write(db):
        db.conn.execute("DROP TABLE customer_fts")
        db.conn.execute("DROP TABLE customer_index")
    with pytest.raises(Exception):
        db.conn.execute(sql, params)


# --- the saved card's expiry is recorded from PayTR's list -----------------------------------------


@pytest.mark.parametrize("env", [{"PAYTR_RECURRING": "1"}])
def test_the_renewal_cards_expiry_is_recorded_when_paytr_lists_it(client, app, db, env):
    from conftest import register
    from test_lifecycle import pay_saving_card

    register(client)
    pay_saving_card(client, app)  # the test card expires 12/30
    from billing import cards
    # The scheduler's refresh lists the cards (pages never ask PayTR): the saved one becomes the renewal card.
    client.portal.call(cards.refresh_due, app.state.jobs, app.state.jobs.clock.now())
    company = one(db, "SELECT paytr_ctoken, card_expires FROM companies")
    assert company["paytr_ctoken"] and company["card_expires"] == "2030-12"


# --- the payments report ------------------------------------------------------------------------


@pytest.fixture
def report_data(client, app, db, paid, staff):
    """Yılmaz paid Starter (then $5 refunded); Ege's card was declined once."""
    assert refund(staff, paid, amount="5.00").status_code == 303
    client.cookies.clear()
    from conftest import register

    register(client, email="mert@ege.example", company="Ege Gıda", name="Mert Ege")
    pay(client, app, checkout_oid(subscribe(client)), card="4000 0000 0000 0002")
    return {"paid": paid, "failed": one(db, "SELECT * FROM payments WHERE status = 'failed'")}


def report_rows(page) -> list[str]:
    return [visible_row for visible_row in re.findall(r"<tr>\s*<td data-label=\"Date\".*?</tr>", page.text, re.S)]


def test_the_report_lists_every_payment_of_the_month_with_totals(client, staff, report_data):
    page = staff.get("/admin/payments")
    text = visible(page)
    assert page.status_code == 200 and len(report_rows(page)) == 2
    assert "USD Failed 1 payment · $29.00 Paid 1 payment · $29.00" in text
    assert "Your bank declined the payment. Please try another card, or ask your bank why." in text
    assert "$5.00 refunded" in text and "INV-2026-000001" in text and report_data["failed"]["merchant_oid"] in text
    assert f'href="/admin/companies/{report_data["paid"]["company_id"]}"' in page.text
    assert "Download CSV" in text


@pytest.mark.parametrize("params, count", [("status=failed", 1), ("status=succeeded", 1), ("kind=renewal", 0),
                                           ("plan=starter", 2), ("currency=TRY", 0), ("from=2026-12-01&to=2026-12-31", 0),
                                           ("from=2026-11-27&to=2026-11-27", 2)])
def test_report_filters(client, staff, report_data, params, count):
    assert len(report_rows(staff.get(f"/admin/payments?{params}"))) == count


def test_report_range_is_whole_days_in_the_operators_time_zone(client, staff, report_data, db):
    # 27 Nov 09:00 UTC is 12:00 in Istanbul; move the failed one to 26 Nov 22:30 UTC = 27 Nov 01:30 local
    with write(db):
        db.conn.execute("UPDATE payments SET created_at = '2026-11-26T22:30:00Z' WHERE status = 'failed'")
    assert len(report_rows(staff.get("/admin/payments?from=2026-11-27&to=2026-11-27"))) == 2
    assert len(report_rows(staff.get("/admin/payments?from=2026-11-26&to=2026-11-26"))) == 0


@pytest.mark.parametrize("params, message", [("from=27.11.2026", "Enter dates as YYYY-MM-DD"),
                                             ("from=2026-11-30&to=2026-11-01", "The end date is before the start date."),
                                             ("status=lost", "There is no such choice for this filter: “lost”."),
                                             ("after=nope", "That page link is not valid")])
def test_bad_report_input_is_a_clear_error(client, staff, report_data, params, message):
    page = staff.get(f"/admin/payments?{params}")
    assert page.status_code == 422 and message in visible(page) and report_rows(page) == []


def test_report_pages_by_keyset(client, staff, report_data, monkeypatch):
    monkeypatch.setattr(payments_report, "PAGE_SIZE", 1)
    first = staff.get("/admin/payments")
    link = re.search(r'href="([^"]+)"[^>]*rel="next"', first.text).group(1).replace("&amp;", "&")
    assert "after=" in link and "offset" not in link
    second = staff.get(link)
    assert report_rows(first) != report_rows(second) and len(report_rows(second)) == 1
    assert 'rel="next"' not in second.text


def test_the_csv_is_exactly_the_filtered_rows_for_excel(client, staff, report_data):
    response = staff.get("/admin/payments.csv?status=succeeded")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "payments-2026-11-01-2026-11-30.csv" in response.headers["content-disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads UTF-8
    table = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=","))
    assert table[0][:3] == ["Date (UTC)", "Customer", "Customer number"]
    [row] = table[1:]
    paid = report_data["paid"]
    assert row == [paid["created_at"], "Yılmaz Yazılım A.Ş.", str(paid["company_id"]), "New subscription",
                   "PayTR payment page", "starter", "29.00", "USD", "Paid", "", "5.00", paid["merchant_oid"],
                   "INV-2026-000001"]
    everything = staff.get("/admin/payments.csv").content.decode("utf-8-sig").splitlines()
    assert len(everything) == 3


def test_the_turkish_csv_uses_semicolons_and_decimal_commas(client, staff, report_data):
    staff.cookies.set("lang", "tr")
    response = staff.get("/admin/payments.csv?status=failed", headers={"Accept-Language": "tr"})
    table = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig")), delimiter=";"))
    assert len(table) == 2 and table[1][6] == "29,00" and table[1][8] == "Başarısız"


def test_a_formula_typed_as_a_company_name_stays_text_in_the_csv(client, db, staff, report_data):
    with write(db):
        db.conn.execute("UPDATE companies SET name = '=HYPERLINK(\"http://x\")' WHERE id = ?",
                        [report_data["paid"]["company_id"]])
    text = staff.get("/admin/payments.csv?status=succeeded").content.decode("utf-8-sig")
    assert "'=HYPERLINK" in text


def test_every_role_reads_the_report_but_only_export_roles_download(client, app, db, report_data, password_hash):
    accounts.create_staff(db, START, email="destek@example.com", name="Destek", password_hash=password_hash,
                          staff_role="support")
    support = second_browser(app)
    login(support, email="destek@example.com")
    page = support.get("/admin/payments")
    assert page.status_code == 200 and len(report_rows(page)) == 2 and "Download CSV" not in page.text
    assert support.get("/admin/payments.csv").status_code == 403
    customer = second_browser(app)
    login(customer, email="ayse@example.com")
    assert customer.get("/admin/payments", follow_redirects=False).status_code in (302, 303, 403)
    assert customer.get("/admin/payments.csv", follow_redirects=False).status_code in (302, 303, 403)


# --- in Turkish ---------------------------------------------------------------------------------


def test_the_list_and_the_report_speak_turkish(client, app, db, report_data, password_hash):
    from billing import payments, subscriptions
    from test_i18n_staff import TR, labels, turkish

    accounts.create_staff(db, START, email="tr@example.com", name="Operasyon", password_hash=password_hash)
    staff_tr = second_browser(app)
    staff_tr.headers.update(TR)
    login(staff_tr, email="tr@example.com")
    text = turkish(staff_tr.get("/admin/?q=ı&preset=card_expiring&status=deleted"), *labels(subscriptions.STATUS_LABELS))
    assert "3 karakterden kısa" in text and "Bu listenin tanımadığı bir filtre değeri yok sayıldı: “deleted”." in text
    assert "Kartının süresi gelecek aya kadar dolanlar" in text
    text = turkish(staff_tr.get("/admin/?order=mrr-desc"), *labels(subscriptions.STATUS_LABELS))
    assert "Önce en yüksek MRR" in text and "Dönem veya deneme sonu" in text
    failed = report_data["failed"]["merchant_oid"]
    text = turkish(staff_tr.get("/admin/payments"), *labels(payments.STATUS_LABELS), failed,
                   report_data["paid"]["merchant_oid"])
    assert "Bankanız ödemeyi reddetti" in text and "$5,00 iade edildi" in text and "CSV indir" in text
    assert "Başarısız 1 ödeme · $29,00" in text
    error = staff_tr.get("/admin/payments?from=2026-11-30&to=2026-11-01")
    assert "Bitiş tarihi başlangıç tarihinden önce." in turkish(error, *labels(payments.STATUS_LABELS))


def test_card_expiring_lists_the_same_companies_when_many_cards_have_expired(db, customers, monkeypatch):
    """With many expired cards the list walks its own order instead of the card index: same rows."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Istanbul")
    with write(db):
        db.conn.execute("UPDATE companies SET card_expires = '2020-01' WHERE id % 2 = 0")
    query = customer_search.Query(preset="card_expiring")
    by_index = [row["id"] for row in customer_search.page(db, query, START, tz)["companies"]]
    assert by_index and not customer_search.many_cards_expiring(db, START, tz)
    monkeypatch.setattr(customer_search, "MANY_CARDS_EXPIRING", 1)
    assert customer_search.many_cards_expiring(db, START, tz)
    walked = [row["id"] for row in customer_search.page(db, query, START, tz)["companies"]]
    assert walked == by_index
    sql, params = customer_search.build(query, START, tz, walk_card_expiring=True)
    assert "ce.card_expires" not in sql and re.match(r"SCAN s USING (COVERING )?INDEX", plans_of(db, sql, params)[0])


def test_a_long_query_finds_the_whole_text_not_only_its_first_characters(db, customers):
    # Longer than FTS_WINDOW: the index is asked for the first characters, each match is checked whole.
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Istanbul")

    def found(q, **filters):
        query = customer_search.Query(q=q, **filters)
        return [row["id"] for row in customer_search.page(db, query, START, tz)["companies"]]

    assert len(customer_search.search_fold("ÇAĞLAYAN DANIŞMANLIK")) > customer_search.FTS_WINDOW
    assert found("ÇAĞLAYAN DANIŞMANLIK") == [customers["Çağlayan"]]
    assert found("çağlayan danışmanlık şirketi", direction="asc") == [customers["Çağlayan"]]  # the other SQL path
    assert found("Çağlayan Danışmanlık Ltd") == []  # same first characters, different rest
    assert found("isik.example") == [customers["Işık"]]  # an email, also longer than the window
