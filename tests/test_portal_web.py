"""Portal links in the browser: the host product's user arrives logged in, lands on billing (or
straight on a plan's payment page), sees the way back on every page, and a link works once."""

import re
from datetime import timedelta

import pytest

from billing import portal
from billing.db import one, scalar, write
from conftest import START, make_company, post, register, second_browser, visible

RETURN = "https://app.acme.test/settings/billing?tab=plan"


@pytest.fixture
def env():
    return {"HOST_APP_NAME": "Acme Docs"}


@pytest.fixture
def company(db, settings, password_hash):
    with write(db):
        make_company(db, settings, START, password_hash, company_name="Ege Bulut Ltd.", name="Deniz Ege",
                     email="deniz@example.com")
    return one(db, "SELECT * FROM companies WHERE name = 'Ege Bulut Ltd.'")


def link(db, settings, clock, company, **kw):
    with write(db):
        url = portal.create(db, clock.now(), settings, company["id"], RETURN, **kw)["url"]
    return url.removeprefix("http://testserver")


def back_link(response) -> str | None:
    found = re.search(r'<a class="back-to-host" href="([^"]+)">← Back to ([^<]+)</a>', response.text)
    return found and f"{found.group(2)} -> {found.group(1).replace('&amp;', '&')}"


def test_a_portal_link_logs_the_owner_in_and_lands_on_billing(client, db, settings, clock, company):
    response = client.get(link(db, settings, clock, company), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/billing/"
    assert response.headers["cache-control"] == "no-store"
    page = client.get("/billing/")
    assert "Ege Bulut Ltd." in visible(page) and "Deniz Ege" in visible(page)
    assert back_link(page) == f"Acme Docs -> {RETURN}"
    assert scalar(db, "SELECT count(*) FROM sessions") == 1
    assert scalar(db, "SELECT count(*) FROM events WHERE kind = 'portal.link_used'") == 1


def test_every_page_of_a_portal_session_shows_the_way_back_until_logout(client, db, settings, clock, company):
    client.get(link(db, settings, clock, company))
    for path in ("/billing/", "/billing/team", "/billing/details", "/billing/timeline", "/billing/plan/team",
                 "/pricing", "/", "/no-such-page"):
        assert back_link(client.get(path)) == f"Acme Docs -> {RETURN}", path
    post(client, "/auth/logout", token_from="/billing/")
    assert back_link(client.get("/pricing")) is None
    assert client.get("/billing/", follow_redirects=False).status_code == 303  # logged out


def test_an_ordinary_login_has_no_back_link(client):
    register(client)
    assert back_link(client.get("/billing/")) is None


def test_a_link_works_once_then_shows_the_expired_page(client, db, settings, clock, company):
    url = link(db, settings, clock, company)
    client.get(url)
    stranger = second_browser(client.app)
    again = stranger.get(url, follow_redirects=False)
    assert again.status_code == 410
    page = visible(again)
    assert "This link has expired. Go back to Acme Docs and open billing again." in page
    assert f'href="{RETURN.replace("&", "&amp;")}"' in again.text and "← Back to Acme Docs" in page
    assert "Password" not in page and "Log in" in page  # the nav's link, not a login form
    assert stranger.get("/billing/", follow_redirects=False).status_code == 303  # not logged in


def test_a_link_expires_after_five_minutes(client, db, settings, clock, company):
    url = link(db, settings, clock, company)
    clock.at = START + timedelta(minutes=5)
    expired = client.get(url, follow_redirects=False)
    assert expired.status_code == 410 and "This link has expired" in visible(expired)
    assert scalar(db, "SELECT count(*) FROM sessions") == 0


def test_a_link_just_inside_five_minutes_works(client, db, settings, clock, company):
    url = link(db, settings, clock, company)
    clock.at = START + timedelta(minutes=4, seconds=59)
    assert client.get(url, follow_redirects=False).headers["location"] == "/billing/"


def test_an_unknown_link_shows_the_expired_page_without_a_return_link(client):
    response = client.get("/portal/not-a-real-token")
    assert response.status_code == 410
    assert "Go back to Acme Docs and open billing again." in visible(response)
    assert "back-to-host" not in response.text and "← Back to" not in visible(response)


def test_a_portal_link_replaces_another_companys_session(client, db, settings, clock, company, password_hash):
    register(client, company="Başka Şirket", email="baska@example.com")
    old_cookie = client.cookies.get("billing_session")
    assert "Başka Şirket" in visible(client.get("/billing/"))
    client.get(link(db, settings, clock, company))
    page = visible(client.get("/billing/"))
    assert "Ege Bulut Ltd." in page and "Başka Şirket" not in page
    # The other company's session is ended, not just forgotten by this browser.
    assert scalar(db, "SELECT count(*) FROM sessions") == 1
    replay = second_browser(client.app)
    replay.cookies.set("billing_session", old_cookie)
    assert replay.get("/billing/", follow_redirects=False).status_code == 303


def test_the_session_gets_a_new_csrf_token(client, db, settings, clock, company):
    client.get("/auth/login")
    token_before = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/auth/login").text).group(1)
    client.get(link(db, settings, clock, company))
    token_after = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/billing/").text).group(1)
    assert token_before != token_after


def test_subscribe_flow_lands_on_the_plans_payment_page(client, db, settings, clock, company):
    response = client.get(link(db, settings, clock, company, flow="subscribe", plan="team"), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/billing/checkout/")
    page = client.get(response.headers["location"])
    assert '<iframe id="paytriframe"' in page.text and "Team" in visible(page)
    assert back_link(page) == f"Acme Docs -> {RETURN}"
    payment = one(db, "SELECT * FROM payments")
    assert (payment["plan"], payment["amount"], payment["status"]) == ("team", 9900, "pending")


def test_subscribe_flow_for_a_paying_customer_opens_the_plan_change(client, db, settings, clock, company):
    with write(db):
        db.conn.execute("UPDATE subscriptions SET status = 'active', current_period_start = ?, "
                        "current_period_end = ?", ["2026-11-27T09:00:00Z", "2026-12-27T09:00:00Z"])
    response = client.get(link(db, settings, clock, company, flow="subscribe", plan="team"), follow_redirects=False)
    assert response.headers["location"] == "/billing/plan/team"
    assert "You pay now for the" in visible(client.get("/billing/plan/team"))
    again = client.get(link(db, settings, clock, company, flow="subscribe", plan="starter"))
    assert "You're already subscribed to Starter." in visible(again)
    assert scalar(db, "SELECT count(*) FROM payments") == 0


def test_link_previews_do_not_spend_the_link(client, db, settings, clock, company):
    url = link(db, settings, clock, company)
    assert client.head(url).status_code == 200
    preview = client.get(url, headers={"User-Agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"})
    assert preview.status_code == 200 and "Continue to billing" in visible(preview)
    assert preview.headers["x-robots-tag"] == "noindex, nofollow"
    prefetch = client.get(url, headers={"Sec-Purpose": "prefetch"})
    assert prefetch.status_code == 503 and prefetch.headers["cache-control"] == "no-store"
    assert scalar(db, "SELECT count(*) FROM sessions") == 0
    assert one(db, "SELECT used_at FROM portal_sessions")["used_at"] is None
    # A person whose browser looked like a bot continues with the button.
    token = re.search(r'name="csrf_token" value="([^"]+)"', preview.text).group(1)
    landed = client.post(url, data={"csrf_token": token}, follow_redirects=False)
    assert landed.status_code == 303 and landed.headers["location"] == "/billing/"
    assert "Ege Bulut Ltd." in visible(client.get("/billing/"))
    assert one(db, "SELECT used_at FROM portal_sessions")["used_at"] is not None

