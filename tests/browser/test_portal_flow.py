"""The host product sends its user into billing with a portal link, in a real browser: the link
opens the dashboard logged in, with the way back on every page; opened again, it has expired."""

import re
from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from billing import portal
from billing import settings as settings_module
from billing.db import Store, one, write
from tests.browser.conftest import LiveServer

PASSWORD = "portal bağlantısı testi"


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path / "data", HOST_APP_NAME="Acme Docs").start()
    yield server
    server.stop()


def portal_link(live_server, company_name, return_url):
    """What the host's POST /api/v1/portal-sessions does, straight on the server's database."""
    settings = settings_module.load(live_server.env, env_file=None)
    store = Store(settings.database_path)
    try:
        db = store.db()
        with write(db):
            company = one(db, "SELECT id FROM companies WHERE name = ?", [company_name])
            return portal.create(db, datetime.now(UTC), settings, company["id"], return_url)["url"]
    finally:
        store.close()


def test_a_portal_link_opens_billing_with_the_way_back_and_works_once(page, live_server):
    page.goto("/auth/register")
    page.get_by_label("Company name").fill("Ege Bulut Ltd.")
    page.get_by_label("Your name").fill("Deniz Ege")
    page.get_by_label("Email").fill("deniz@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and start trial").click()
    expect(page).to_have_url(re.compile(r"/billing/$"))
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/auth/login$"))

    back_to = f"{live_server.url}/pricing?from=acme"  # the host's page; http is allowed outside production
    url = portal_link(live_server, "Ege Bulut Ltd.", back_to)
    page.goto(url)
    expect(page).to_have_url(re.compile(r"/billing/$"))
    expect(page.get_by_role("heading", name="Ege Bulut Ltd.")).to_be_visible()
    back = page.get_by_role("link", name="← Back to Acme Docs")
    expect(back).to_have_attribute("href", back_to)

    page.get_by_role("link", name="Team", exact=True).click()
    expect(page).to_have_url(re.compile(r"/billing/team$"))
    expect(page.get_by_role("link", name="← Back to Acme Docs")).to_have_attribute("href", back_to)

    page.goto(url)  # the same link again
    expect(page.get_by_role("heading", name="This link has expired.")).to_be_visible()
    expect(page.get_by_text("Go back to Acme Docs and open billing again.")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_count(0)
    page.get_by_role("link", name="← Back to Acme Docs").first.click()
    expect(page).to_have_url(back_to)
