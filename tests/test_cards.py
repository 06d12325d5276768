"""Saved cards: which card renewals charge, choosing and removing one, saving a new one
wherever a payment happens, and the card form. Through the real app, its jobs and the
PayTR emulator, with the test clock."""

import html
import re
from datetime import timedelta

import pytest

from billing.clock import parse
from billing.db import one, rows, scalar
from conftest import login, post, register, visible
from test_lifecycle import CARD, DAY, emails, pay_iframe, pay_saving_card, starter_with_20_days_left, sub, tick

VISA = "4355084355084358"  # card A, PayTR's test Visa
MASTERCARD = "5406675406675403"  # card B


@pytest.fixture
def env():
    return {"PAYTR_RECURRING": "1"}


def save_card_paying(client, app, number, *, start="/billing/subscribe/starter", data=None, token_from="/billing/"):
    """Pay in PayTR's Direct API form with `number`, saving the card; returns the payment's merchant_oid.
    Only PayTR's callback reaches the app: nobody opens the result page."""
    response = post(client, start, {"save_card": "1", **(data or {})}, token_from=token_from)
    assert response.headers["location"].startswith("/billing/checkout/"), response.headers["location"]
    page = client.get(response.headers["location"]).text
    action = re.search(r'<form class="stacked" method="post" action="([^"]+)"', page).group(1)
    hidden = {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page)}
    hidden.pop("csrf_token", None)
    answer = client.post(action, data={**hidden, **CARD, "card_number": number})
    assert answer.status_code == 200, answer.text[:300]
    client.portal.call(app.state.emulator.wait_idle, 15)
    return hidden["merchant_oid"]


def learn(client, app, clock):
    """The tick's refresh of stored card lists (pages never ask PayTR): what the scheduler does
    within a minute of a card being saved."""
    from billing import cards
    return client.portal.call(cards.refresh_due, app.state.jobs, clock.now())


def company(db):
    return one(db, "SELECT * FROM companies")


def renewal_charges(app, db):
    """Each saved-card renewal and the card PayTR charged for it."""
    found = []
    for payment in rows(db, "SELECT * FROM payments WHERE method = 'recurring' ORDER BY id"):
        transaction = app.state.emulator.transaction(payment["merchant_oid"])
        found.append((payment["status"], transaction.card.last4 if transaction else None))
    return found


def ctoken_of(app, db, last4):
    [stored] = [c for c in app.state.emulator.cards_of(company(db)["paytr_utoken"]) if c.card.last4 == last4]
    return stored.ctoken


def two_cards(client, app, clock, db):
    """Visa saved when subscribing; a month later its renewal is declined, and the overdue month
    is paid with a Mastercard that is saved too."""
    register(client)
    pay_saving_card(client, app)
    end = parse(sub(db)["current_period_end"])
    app.state.emulator.set_card_outcome(VISA[-4:], "insufficient_funds")
    tick(client, app, clock, end)
    assert sub(db)["status"] == "past_due"
    login(client)  # a month later
    save_card_paying(client, app, MASTERCARD, token_from="/billing/renew")
    assert sub(db)["status"] == "active"
    return parse(sub(db)["current_period_end"])


# --- defect 2: a new card is used -------------------------------------------------------------------


def test_a_card_saved_paying_a_declined_month_pays_the_next_renewal(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)
    assert renewal_charges(app, db) == [("failed", "4358")]
    tick(client, app, clock, next_end)
    # The renewal after it charges the new Mastercard, not the Visa that was declined.
    assert renewal_charges(app, db) == [("failed", "4358"), ("succeeded", "5403")]
    s = sub(db)
    assert s["status"] == "active" and parse(s["current_period_end"]) > next_end
    assert (company(db)["paytr_ctoken"], company(db)["paytr_card_label"]) == (
        ctoken_of(app, db, "5403"), "Mastercard ending 5403")


def test_the_dashboard_shows_the_card_renewals_charge_and_lists_the_others(client, app, clock, db):
    two_cards(client, app, clock, db)
    learn(client, app, clock)  # the Mastercard was saved with a callback only: the tick lists it
    page = visible(client.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403 , expires 12/30 · Test Bank Remove" in page
    assert "Other saved cards Visa ending 4358 , expires 12/30 · Test Bank Use for renewals Remove" in page
    assert "To use another card, pay your next invoice with it" in page
    # Two cards at PayTR, both known to us; renewals go to the one saved last.
    assert scalar(db, "SELECT count(*) FROM paytr_cards") == 2


def test_the_result_page_names_the_card_just_saved(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    oid = save_card_paying(client, app, MASTERCARD, token_from="/billing/renew")  # pays the next month early
    assert company(db)["card_saved_by"] == oid  # PayTR's callback does not say which card it was
    page = visible(client.get(f"/billing/payment/success?oid={oid}"))
    assert "Renewals Charged to Mastercard ending 5403, the card you just saved" in page
    assert company(db)["card_saved_by"] is None and company(db)["paytr_card_label"] == "Mastercard ending 5403"
    [chosen] = rows(db, "SELECT * FROM events WHERE kind = 'card.chosen'")
    assert f"saved with payment {oid}" in chosen["message"]


def test_the_owner_chooses_which_card_renewals_charge(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)
    app.state.emulator.set_card_outcome(VISA[-4:], "success")
    response = post(client, "/billing/card/choose", {"ctoken": ctoken_of(app, db, "4358")}, token_from="/billing/",
                    follow_redirects=True)
    assert "Renewals are now charged to Visa ending 4358." in visible(response)
    assert "Renewals are charged to Visa ending 4358" in visible(response)
    [chosen] = rows(db, "SELECT * FROM events WHERE kind = 'card.chosen' AND actor LIKE 'user:%'")
    assert chosen["message"] == "Ayşe Yılmaz chose Visa ending 4358 for renewals"
    tick(client, app, clock, next_end)
    assert renewal_charges(app, db)[-1] == ("succeeded", "4358")


def test_choosing_a_card_paytr_does_not_have_changes_nothing(client, app, clock, db):
    two_cards(client, app, clock, db)
    learn(client, app, clock)  # the tick learns which card was saved last
    before = company(db)
    response = post(client, "/billing/card/choose", {"ctoken": "not-a-card"}, token_from="/billing/",
                    follow_redirects=True)
    assert response.status_code == 200 and "That card is no longer saved at PayTR" in visible(response)
    assert company(db) == before


def test_a_member_cannot_choose_or_remove_cards(client, app, clock, db):
    from test_team import invite_and_join
    two_cards(client, app, clock, db)
    member = invite_and_join(client, app, db)
    learn(client, app, clock)
    page = visible(member.get("/billing/"))
    assert "Renewals are charged to Mastercard ending 5403" in page and "Use for renewals" not in page
    for action in ("choose", "remove"):
        response = post(member, f"/billing/card/{action}", {"ctoken": ctoken_of(app, db, "4358")},
                        token_from="/billing/")
        assert response.status_code == 403
    assert len(app.state.emulator.cards_of(company(db)["paytr_utoken"])) == 2
    assert company(db)["paytr_card_label"] == "Mastercard ending 5403"


def test_removing_one_card_keeps_the_others_and_the_card_renewals_charge(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)
    response = post(client, "/billing/card/remove", {"ctoken": ctoken_of(app, db, "4358")}, token_from="/billing/",
                    follow_redirects=True)
    assert "Visa ending 4358 was removed. Renewals are still charged to Mastercard ending 5403." in visible(response)
    assert [c.card.last4 for c in app.state.emulator.cards_of(company(db)["paytr_utoken"])] == ["5403"]
    [removed] = emails(db, "card_removed")
    assert "Visa ending 4358" in removed["body_text"]
    assert "Renewals are still charged automatically to Mastercard ending 5403" in removed["body_text"]
    tick(client, app, clock, next_end)
    assert renewal_charges(app, db)[-1] == ("succeeded", "5403")


def test_removing_the_chosen_card_means_pay_links_until_the_owner_chooses_another(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)
    response = post(client, "/billing/card/remove", {"ctoken": ctoken_of(app, db, "5403")}, token_from="/billing/",
                    follow_redirects=True)
    page = visible(response)
    assert "Mastercard ending 5403 was removed. No card is charged for renewals now" in page
    assert "No card is chosen for renewals, so we email you a link to pay" in page
    assert "Visa ending 4358" in page and "we'll email you a link to pay a week before" in page
    c = company(db)
    assert c["paytr_ctoken"] is None and c["paytr_utoken"]  # the Visa is still saved, just not charged
    [removed] = emails(db, "card_removed")
    assert "unless you choose one of your other saved cards" in removed["body_text"]
    tick(client, app, clock, next_end - 7 * DAY)
    assert "http://testserver/billing/renew" in emails(db, "renewal_notice")[-1]["body_text"]  # a pay link
    tick(client, app, clock, next_end)
    assert sub(db)["status"] == "past_due"
    assert renewal_charges(app, db) == [("failed", "4358"), ]  # the Visa was not charged behind the owner's back

    # The owner chooses the Visa: the next dunning day charges it.
    app.state.emulator.set_card_outcome(VISA[-4:], "success")
    login(client)
    post(client, "/billing/card/choose", {"ctoken": ctoken_of(app, db, "4358")}, token_from="/billing/")
    tick(client, app, clock, next_end + DAY)
    assert renewal_charges(app, db)[-1] == ("succeeded", "4358") and sub(db)["status"] == "active"


def test_removing_the_last_card_forgets_the_paytr_user(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    learn(client, app, clock)  # the tick lists the card: it is the one renewals charge
    response = post(client, "/billing/card/remove", {"ctoken": company(db)["paytr_ctoken"]}, token_from="/billing/",
                    follow_redirects=True)
    assert "Your saved card was removed." in visible(response) and "No saved card." in visible(response)
    c = company(db)
    assert (c["paytr_utoken"], c["paytr_ctoken"], c["card_saved_by"]) == (None, None, None)
    assert scalar(db, "SELECT count(*) FROM paytr_cards") == 0


def test_a_chosen_card_paytr_no_longer_has_fails_the_renewal_without_charging_another(client, app, clock, db):
    next_end = two_cards(client, app, clock, db)
    app.state.emulator.set_card_outcome(VISA[-4:], "success")
    learn(client, app, clock)  # the tick learns which card was saved last
    app.state.emulator.delete_card(company(db)["paytr_utoken"], ctoken_of(app, db, "5403"))  # gone at PayTR
    # The dashboard shows the stored list; two days before the renewal the tick's daily refresh
    # lists the cards again, and the dashboard says the card is gone.
    clock.at = next_end - 2 * DAY
    assert learn(client, app, clock) == 1
    login(client)
    assert "Mastercard ending 5403 is no longer saved at PayTR." in visible(client.get("/billing/"))
    tick(client, app, clock, next_end)
    failed = one(db, "SELECT * FROM payments WHERE method = 'recurring' ORDER BY id DESC LIMIT 1")
    assert failed["status"] == "failed"
    assert failed["failed_reason_msg"] == ("The card chosen for renewals (Mastercard ending 5403) "
                                           "is no longer saved at PayTR.")
    assert app.state.emulator.transaction(failed["merchant_oid"]) is None  # nothing was charged
    assert sub(db)["status"] == "past_due"
    assert "no longer saved at PayTR" in emails(db, "renewal_failed")[-1]["body_text"]


def test_a_card_saved_before_chosen_cards_existed_is_still_charged(client, app, clock, db):
    register(client)
    pay_saving_card(client, app)
    save_card_paying(client, app, MASTERCARD)  # a second card, saved by a later payment
    # As migration m010 leaves a company whose cards were saved before: nothing chosen, nothing seen.
    db.conn.execute("UPDATE companies SET paytr_ctoken = NULL, paytr_card_label = NULL, card_saved_by = 'first-listed'")
    db.conn.execute("DELETE FROM paytr_cards")
    db.conn.commit()
    tick(client, app, clock, parse(sub(db)["current_period_end"]))
    assert renewal_charges(app, db) == [("succeeded", "4358")]  # PayTR's first card, as renewals charged before


# --- saving a new card wherever a payment happens ---------------------------------------------------


def test_every_payment_offers_to_save_a_new_card(client, app, clock, db):
    register(client)
    pay_iframe(client, app)
    renew = visible(client.get("/billing/renew"))
    assert "Pay $29.00 Pay with a new card and save it for renewals" in renew
    checkout = post(client, "/billing/subscribe/starter", token_from="/billing/renew")
    assert "How do you want to pay? Pay once, without saving my card" in visible(client.get(checkout.headers["location"]))
    # In dunning, the renew page says which card was declined.
    save_card_paying(client, app, VISA, token_from="/billing/renew")
    app.state.emulator.set_card_outcome(VISA[-4:], "insufficient_funds")
    tick(client, app, clock, parse(sub(db)["current_period_end"]))
    login(client)
    assert "We could not charge Visa ending 4358. To have renewals charged to another card" in visible(
        client.get("/billing/renew"))


def test_an_upgrade_can_be_paid_with_a_new_card_that_then_pays_renewals(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_saving_card)
    learn(client, app, clock)  # ten days of ticks have listed the card saved when subscribing
    page = visible(client.get("/billing/plan/team"))
    assert "Upgrade and charge $45.16 to Visa ending 4358" in page
    assert "Pay with a new card and save it for renewals" in page
    oid = save_card_paying(client, app, MASTERCARD, start="/billing/plan/upgrade",
                           data={"plan": "team", "pay_with": "new_card"}, token_from="/billing/plan/team")
    upgrade = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [oid])
    assert (upgrade["kind"], upgrade["method"], upgrade["status"]) == ("upgrade", "direct", "succeeded")
    assert sub(db)["plan"] == "team"
    tick(client, app, clock, parse(sub(db)["current_period_end"]))
    assert renewal_charges(app, db) == [("succeeded", "5403")]


def pay_choice(page: str) -> tuple[str, dict, list]:
    """The checkout's "How do you want to pay?" form: its action, hidden fields and radios
    as (name, value, checked)."""
    form = re.search(r'<form method="post" action="([^"]+)" class="pay-choice"[^>]*>(.*?)</form>', page, re.S)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form.group(2)))
    radios = [(name, value, bool(checked)) for name, value, checked in
              re.findall(r'<input type="radio" id="[\w-]+" name="(\w+)" value="(\w+)"( checked)?', form.group(2))]
    return form.group(1), hidden, radios


def test_the_iframe_checkout_of_an_upgrade_offers_the_card_form_and_back(client, app, clock, db):
    starter_with_20_days_left(client, app, clock, db, pay_iframe)
    response = post(client, "/billing/plan/upgrade", {"plan": "team"}, token_from="/billing/plan/team")
    page = client.get(response.headers["location"]).text
    action, hidden, radios = pay_choice(page)
    assert action == "/billing/plan/upgrade" and hidden["plan"] == "team"
    assert radios == [("pay_with", "iframe", True), ("pay_with", "new_card", False)]
    direct = post(client, action, {**hidden, "pay_with": "new_card"}, token_from="/billing/plan/team")
    form = client.get(direct.headers["location"]).text
    assert "Pay $45.16 and save the card" in form
    action, hidden, radios = pay_choice(form)
    assert radios == [("pay_with", "iframe", False), ("pay_with", "new_card", True)]
    back = post(client, action, {**hidden, "pay_with": "iframe"}, token_from="/billing/plan/team")
    upgrade = one(db, "SELECT * FROM payments WHERE merchant_oid = ?", [back.headers["location"].rsplit("/", 1)[1]])
    assert (upgrade["kind"], upgrade["method"], upgrade["status"]) == ("upgrade", "iframe", "pending")  # not a subscription
    assert scalar(db, "SELECT COUNT(*) FROM payments WHERE status = 'pending'") == 1


# --- the card form ------------------------------------------------------------------------------------


def test_the_card_form_is_typed_for_autofill_and_posts_paytrs_expiry_fields(client, app, clock, db):
    register(client)
    response = post(client, "/billing/subscribe/starter", {"save_card": "1"}, token_from="/billing/")
    page = client.get(response.headers["location"]).text
    inputs = {m.group(1): m.group(0) for m in re.finditer(r'<input type="text" id="(\w+)"[^>]*>', page)}
    assert set(inputs) == {"cc_owner", "card_number", "expiry_month", "expiry_year", "cvv"}
    for field, autocomplete in [("cc_owner", "cc-name"), ("card_number", "cc-number"),
                                ("expiry_month", "cc-exp-month"), ("expiry_year", "cc-exp-year"),
                                ("cvv", "cc-csc")]:
        assert f'autocomplete="{autocomplete}"' in inputs[field]
    for field in ("card_number", "expiry_month", "expiry_year", "cvv"):
        assert 'inputmode="numeric"' in inputs[field]
    # What reaches PayTR are its own field names; the MM/YY field the script adds has no name.
    assert 'name="expiry_month"' in inputs["expiry_month"] and 'name="expiry_year"' in inputs["expiry_year"]
    assert "<legend>Expiry date <span class=\"muted\">(MM/YY)</span></legend>" in page
    script = client.get("/static/js/app.js").text
    assert 'autocomplete="cc-exp"' in script and "expiry_month" in script


# --- the payments' words --------------------------------------------------------------------------


def test_a_replaced_checkout_is_replaced_everywhere_and_not_a_red_row(client, app, clock, db, password_hash):
    from billing import accounts
    from conftest import login
    register(client)
    post(client, "/billing/subscribe/starter", token_from="/billing/")
    pay_iframe(client, app)  # a second checkout replaces the first, and is paid
    dashboard = client.get("/billing/").text
    assert re.search(r'<span class="badge superseded">Replaced</span>\s*</td>\s*<td class="small"[^>]*>\s*'
                     r'Replaced by a newer checkout', dashboard)
    timeline = client.get("/billing/timeline").text
    assert '<span class="badge superseded">Replaced</span>' in timeline
    accounts.create_staff(db, clock.at, email="ops@example.com", name="Ops", password_hash=password_hash)
    client.cookies.clear()
    login(client, email="ops@example.com")
    console = client.get(f"/admin/companies/{company(db)['id']}").text
    assert console.count('<span class="badge superseded">Replaced</span>') == 2  # payments table and timeline
    stylesheet = re.sub(r"/\*.*?\*/", "", client.get("/static/css/app.css").text, flags=re.S)
    css = {selector.strip(): body for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", stylesheet)}
    colour = {name: body for selectors, body in css.items() for name in selectors.split(", ")}
    assert "var(--bad" in colour[".badge.failed"]  # a failed payment is red
    assert "var(--bad" not in colour[".badge.superseded"] and "var(--bad" not in colour[".badge.abandoned"]
