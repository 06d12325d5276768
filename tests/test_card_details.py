"""Saved cards' details are stored (m024): no page view asks PayTR, the tick refreshes the lists
that matter at most daily and a bounded number per tick. Through the real app, its jobs and the
PayTR emulator, with the test clock."""

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import anyio
import pytest

from billing import accounts, cards
from billing.clock import iso, parse
from billing.db import Store, one, rows
from billing.paytr.client import PaytrUnavailable
from conftest import login, make_company, post, register, visible
from test_cards import MASTERCARD, ctoken_of, learn, save_card_paying, two_cards
from test_lifecycle import DAY, pay_saving_card, sub, tick


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def company(db):
    return one(db, "SELECT * FROM companies ORDER BY id LIMIT 1")


@pytest.fixture
def paytr_calls(app, monkeypatch):
    """Every request the app sends to PayTR's API, by endpoint (list, delete, charge, status)."""
    calls = []
    client = app.state.paytr
    real = client._post

    async def counted(endpoint, fields, *args, **kwargs):
        calls.append(endpoint)
        return await real(endpoint, fields, *args, **kwargs)

    monkeypatch.setattr(client, "_post", counted)
    return calls


def test_no_page_that_shows_the_card_asks_paytr(client, app, clock, db, paytr_calls, password_hash):
    two_cards(client, app, clock, db)
    learn(client, app, clock)
    paytr_calls.clear()
    dashboard = visible(client.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403 , expires 12/30 · Test Bank Remove" in dashboard
    assert "Other saved cards Visa ending 4358 , expires 12/30 · Test Bank Use for renewals Remove" in dashboard
    assert "Upgrade and charge" in visible(client.get("/billing/plan/team"))
    assert "Mastercard ending 5403" in visible(client.get("/billing/plan/team"))
    for path in ("/billing/renew", "/billing/timeline", "/billing/account"):
        assert client.get(path).status_code == 200, path
    accounts.create_staff(db, clock.at, email="ops@example.com", name="Ops", password_hash=password_hash)
    client.cookies.clear()
    login(client, email="ops@example.com")
    assert "Renewals charge Mastercard ending 5403" in visible(client.get(f"/admin/companies/{company(db)['id']}"))
    assert paytr_calls == []


def test_a_saved_cards_details_appear_once_listed_and_the_dashboard_never_lists(client, app, clock, db, paytr_calls):
    register(client)
    pay_saving_card(client, app)  # only PayTR's callback: which card it was is not known yet
    assert company(db)["card_saved_by"] and company(db)["cards_listed_at"] is None
    paytr_calls.clear()
    page = visible(client.get("/billing/"))
    assert "We are fetching your saved card's details from PayTR" in page
    assert "PayTR no longer lists a saved card" not in page and paytr_calls == []

    report = tick(client, app, clock, clock.now())  # the scheduler's next tick lists it, once
    assert report["cards_refreshed"] == 1 and paytr_calls == ["card_list"]
    page = visible(client.get("/billing/"))
    assert "Renewals are charged to Visa ending 4358 , expires 12/30 · Test Bank" in page
    assert "fetching" not in page
    [stored] = rows(db, "SELECT brand, last4, expires, bank, position FROM paytr_cards")
    assert stored == {"brand": "Visa", "last4": "4358", "expires": "2030-12", "bank": "Test Bank", "position": 0}
    c = company(db)
    assert (c["paytr_card_label"], c["card_expires"], c["card_saved_by"]) == ("Visa ending 4358", "2030-12", None)
    assert tick(client, app, clock, clock.now())["cards_refreshed"] == 0 and paytr_calls == ["card_list"]


def test_the_result_page_records_the_details_so_the_dashboard_shows_them(client, app, clock, db, paytr_calls):
    register(client)
    pay_saving_card(client, app)
    oid = save_card_paying(client, app, MASTERCARD, token_from="/billing/renew")
    client.get(f"/billing/payment/success?oid={oid}")  # lists once: the card just saved
    paytr_calls.clear()
    page = visible(client.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403" in page and "Visa ending 4358" in page
    assert paytr_calls == []


def test_the_tick_refreshes_a_renewing_companys_list_once_a_day(client, app, clock, db, paytr_calls):
    register(client)
    pay_saving_card(client, app)
    learn(client, app, clock)
    end = parse(sub(db)["current_period_end"])
    paytr_calls.clear()
    # Weeks before the renewal nothing is listed: the stored list is good enough for the pages.
    assert learn_at(client, app, clock, end - 10 * DAY) == 0
    # Within three days of the renewal the day-old list is refreshed, once that day.
    assert learn_at(client, app, clock, end - 2 * DAY) == 1
    assert learn_at(client, app, clock, end - 2 * DAY) == 0
    assert learn_at(client, app, clock, end - 2 * DAY + DAY / 2) == 0
    assert learn_at(client, app, clock, end - DAY + DAY / 100) == 1
    assert paytr_calls == ["card_list", "card_list"]
    assert one(db, "SELECT cards_listed_at FROM companies")["cards_listed_at"] == iso(clock.now())


def learn_at(client, app, clock, at):
    clock.at = at
    return learn(client, app, clock)


class FakePaytr:
    """PayTR's card list for many companies: each utoken has one Visa; `down` utokens time out."""

    def __init__(self, down=()):
        self.asked, self.down = [], set(down)

    async def list_cards(self, utoken):
        self.asked.append(utoken)
        if utoken in self.down:
            raise PaytrUnavailable("timed out")
        return [{"ctoken": f"ct-{utoken}", "c_brand": "visa", "last_4": "4242", "month": "3", "year": "29",
                 "c_bank": "Bank"}]


def companies_with_cards(db, settings, clock, password_hash, count):
    made = [make_company(db, settings, clock.now(), password_hash, n=1000 + i)["company_id"] for i in range(count)]
    with db.conn:
        for c in made:
            db.conn.execute("UPDATE companies SET paytr_utoken = ? WHERE id = ?", [f"ut-{c}", c])
    return made


def test_the_tick_lists_a_bounded_number_and_retries_a_failure_an_hour_later(db, settings, clock, password_hash):
    ids = companies_with_cards(db, settings, clock, password_hash, 7)
    # The newest saves first: a card just saved whose details the owner is waiting for.
    with db.conn:
        db.conn.execute("UPDATE companies SET card_saved_by = 'first-listed' WHERE id = ?", [ids[-1]])
    fake = FakePaytr(down={f"ut-{ids[0]}"})
    store = Store(settings.database_path, settings=settings)
    ctx = SimpleNamespace(store=store, settings=settings, paytr=fake)  # as the jobs' Context

    def refresh(at, limit):
        # In a thread of its own: a Playwright test earlier on this worker leaves an event loop
        # running in the main thread, and anyio.run refuses to start a second one there.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(anyio.run, cards.refresh_due, ctx, at, limit).result()

    now = clock.now()
    assert refresh(now, 3) == 2  # three asked (one timed out), never more than the bound
    assert fake.asked == [f"ut-{ids[-1]}", f"ut-{ids[0]}", f"ut-{ids[1]}"]
    assert refresh(now, 3) == 3 and refresh(now, 3) == 1
    assert len(fake.asked) == 7 and refresh(now, 3) == 0  # the failed one waits an hour
    assert refresh(now + cards.REFRESH_RETRY, 3) == 0 and len(fake.asked) == 8  # asked again: still down
    fake.down.clear()
    assert refresh(now + 2 * cards.REFRESH_RETRY, 3) == 1
    assert refresh(now + 3 * cards.REFRESH_RETRY, 3) == 0 and len(fake.asked) == 9
    listed = rows(db, "SELECT c.card_expires, c.paytr_card_label, p.brand, p.last4 FROM companies c "
                      "JOIN paytr_cards p ON p.company_id = c.id ORDER BY c.id")
    # A card saved before chosen cards existed (the mark) becomes the renewal card; the others are only listed.
    assert len(listed) == 7 and all((r["brand"], r["last4"]) == ("Visa", "4242") for r in listed)
    assert listed[-1]["paytr_card_label"] == "Visa ending 4242" and listed[-1]["card_expires"] == "2029-03"


def test_a_removed_card_disappears_from_the_stored_list(client, app, clock, db, paytr_calls):
    two_cards(client, app, clock, db)
    learn(client, app, clock)
    response = post(client, "/billing/card/remove", {"ctoken": ctoken_of(app, db, "4358")}, token_from="/billing/",
                    follow_redirects=True)
    page = visible(response)
    assert "Visa ending 4358 was removed." in page
    assert [(c["brand"], c["last4"]) for c in cards.stored(db, company(db)["id"])] == [("Mastercard", "5403")]
    paytr_calls.clear()
    page = visible(client.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403" in page and "4358" not in page.split("Saved cards")[1]
    assert paytr_calls == []


def test_removing_a_card_just_saved_before_any_list(client, app, clock, db):
    """The owner removes the card a payment just saved before anything listed it: PayTR's list
    before the deletion names it, so it is not left as the card renewals charge."""
    two_cards(client, app, clock, db)  # the Mastercard is saved (callback only), not listed
    response = post(client, "/billing/card/remove", {"ctoken": ctoken_of(app, db, "5403")}, token_from="/billing/",
                    follow_redirects=True)
    assert "Mastercard ending 5403 was removed. No card is charged for renewals now" in visible(response)
    c = company(db)
    assert c["paytr_ctoken"] is None and c["card_saved_by"] is None and c["cards_listed_at"]
    assert [s["last4"] for s in cards.stored(db, c["id"])] == ["4358"]


def test_the_stored_card_is_shown_in_turkish_and_english(client, app, clock, db, paytr_calls):
    two_cards(client, app, clock, db)
    learn(client, app, clock)
    paytr_calls.clear()
    english = visible(client.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403" in english
    post(client, "/language", {"lang": "tr", "next": "/billing/"}, token_from="/billing/")
    turkish = visible(client.get("/billing/"))
    assert "Yenilemeler Mastercard •••• 5403 kartından alınır" in turkish
    assert "Visa •••• 4358" in turkish
    assert paytr_calls == []
