"""Public pages, the dashboard, guards, error pages and the health check."""

import re

import pytest

from conftest import register


def test_pricing_lists_every_plan_from_the_catalog(client):
    page = client.get("/pricing")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.text)
    for name, price, workspaces, storage in [("Starter", "$29.00", "5 workspaces", "10 GB storage"),
                                             ("Team", "$99.00", "20 workspaces", "50 GB storage"),
                                             ("Enterprise", "$299.00", "Unlimited workspaces", "250 GB storage")]:
        assert name in text and price in text and workspaces in text and storage in text
    assert text.count("14-day free trial") >= 3
    assert 'href="/auth/register?plan=team"' in text


def test_home_page_shows_the_plans(client):
    assert "Simple monthly plans" in client.get("/").text


def test_dashboard_shows_company_plan_status_and_trial(client, clock):
    register(client, company="Öz Gıda Ticaret", plan="team")
    page = client.get("/billing/")
    text = re.sub(r"\s+", " ", page.text)
    assert "Öz Gıda Ticaret" in text
    assert "Team" in text and "Trial" in text
    assert "14 days left" in text and "ends on 11 December 2026" in text
    from datetime import timedelta
    clock.advance(timedelta(days=13, hours=1))
    assert "1 day left" in client.get("/billing/").text


def test_dates_are_shown_in_the_configured_time_zone(client, clock):
    from billing.clock import parse
    clock.at = parse("2026-11-27T22:30:00Z")  # already 28 Nov in Istanbul (UTC+3)
    register(client)
    assert "ends on 12 December 2026" in client.get("/billing/").text


def test_staff_cannot_open_customer_pages_and_customers_cannot_open_admin(client, db, password_hash):
    from billing import accounts
    from conftest import START, login
    register(client)
    assert client.get("/admin/").status_code == 403
    client.cookies.clear()
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    response = login(client, email="ops@example.com")
    assert response.headers["location"] == "/admin/"
    admin = client.get("/admin/")
    assert admin.status_code == 200 and "Yılmaz Yazılım A.Ş." in admin.text
    assert client.get("/billing/", follow_redirects=False).headers["location"] == "/admin/"


def test_admin_search_filters_customers_with_an_htmx_fragment(client, db, password_hash):
    from billing import accounts
    from conftest import START, login
    register(client, company="Anadolu Tekstil", email="a@example.com")
    client.cookies.clear()
    register(client, company="Boğaziçi Yazılım", email="b@example.com")
    client.cookies.clear()
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    login(client, email="ops@example.com")
    fragment = client.get("/admin/?q=boğaziçi", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="companies"')
    assert "Boğaziçi Yazılım" in fragment.text and "Anadolu Tekstil" not in fragment.text
    empty = client.get("/admin/?q=zzz")
    assert "No customers match" in empty.text


def test_not_found_is_a_friendly_page(client):
    page = client.get("/no/such/page")
    assert page.status_code == 404
    assert "Page not found" in page.text and "Go to the home page" in page.text


def test_server_errors_are_friendly_and_leak_nothing(settings, clock):
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from billing.app import create_app

    app = create_app(settings, clock=clock)

    async def explode(request):
        raise RuntimeError("secret internal detail")

    app.router.routes.append(Route("/explode", explode))
    with TestClient(app, raise_server_exceptions=False) as c:
        page = c.get("/explode")
    assert page.status_code == 500
    assert "Something went wrong on our side" in page.text
    assert "secret internal detail" not in page.text and "Traceback" not in page.text


def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_secret_key_never_appears_in_pages(client, settings):
    register(client)
    secret = str(settings.secret_key)
    for path in ("/", "/pricing", "/billing/", "/billing/team", "/auth/login", "/dev/mail", "/no-such"):
        assert secret not in client.get(path).text


def test_security_headers(client):
    headers = client.get("/pricing").headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "same-origin"


def test_pages_load_htmx_from_static_not_a_cdn(client):
    page = client.get("/pricing").text
    assert 'src="/static/vendor/htmx.min.js"' in page
    assert "unpkg" not in page and "cdn" not in page.lower()
    assert client.get("/static/vendor/htmx.min.js").status_code == 200


def test_every_input_has_a_label(client):
    for path in ("/auth/register", "/auth/login", "/auth/forgot-password"):
        page = client.get(path).text
        for input_id in re.findall(r'<input id="([^"]+)"', page):
            assert f'<label for="{input_id}">' in page, f"{path}: #{input_id} has no label"


def test_dev_mail_viewer_shows_captured_email(client):
    from conftest import wait_for
    register(client)
    page = wait_for(lambda: (p := client.get("/dev/mail")) and "Welcome to PayTR Billing" in p.text and p,
                    message="the welcome email to be captured")
    message_id = re.search(r'href="/dev/mail/(\d+)"', page.text).group(1)
    message = client.get(f"/dev/mail/{message_id}")
    assert "Ayşe Yılmaz" in message.text
    assert '<a href="http://testserver/billing/">' in message.text
    html = client.get(f"/dev/mail/{message_id}/html")
    assert "sandbox" in html.headers["content-security-policy"]


@pytest.mark.parametrize("env", [{"BILLING_ENV": "production",
                                  "BILLING_SECRET_KEY": "3PMhT0yQm2aCkVx9-wZ8rLfNd4uJbE7sHg1Ko6YtRi_5",
                                  "BASE_URL": "https://billing.example.com", "SMTP_HOST": "127.0.0.1",
                                  "MAIL_FROM": "b@example.com", "PAYTR_MERCHANT_ID": "1",
                                  "PAYTR_MERCHANT_KEY": "k", "PAYTR_MERCHANT_SALT": "s", "PAYTR_TEST_MODE": "0",
                                  "SELLER_LEGAL_NAME": "Örnek Ltd.", "SELLER_ADDRESS": "İstanbul",
                                  "SELLER_TAX_OFFICE": "Şişli", "SELLER_TAX_NUMBER": "4540536920"}])
def test_dev_pages_do_not_exist_in_production(client):
    assert client.get("/dev/mail").status_code == 404
    assert "Dev mail" not in client.get("/pricing").text


def test_moving_the_test_clock_keeps_everyone_logged_in(settings, password_hash):
    """Billing runs on the test clock; logins age in real time, so a month's jump logs no one out."""
    from starlette.testclient import TestClient

    from billing import accounts
    from billing.app import create_app
    from conftest import START, login, post, visible

    app = create_app(settings)  # the real clock, shifted by the test clock's offset
    with TestClient(app, base_url="http://testserver") as customer:
        register(customer)
        accounts.create_staff(app.state.store.db(), START, email="ops@example.com", name="Ops",
                              password_hash=password_hash)
        staff = TestClient(app, base_url="http://testserver")
        login(staff, email="ops@example.com")
        moved = post(staff, "/admin/clock", {"advance": "40d"}, token_from="/admin/clock")
        assert moved.status_code == 200 and "Jobs ran as of" in moved.text
        page = customer.get("/billing/", follow_redirects=False)
        assert page.status_code == 200
        assert "Your free trial has ended" in visible(page)  # billing did move 40 days on
        assert staff.get("/admin/", follow_redirects=False).status_code == 200


def test_staff_search_ignores_case_in_turkish_letters_too(client, db, password_hash):
    from billing import accounts
    from conftest import START, login
    register(client, company="Işık Yazılım", email="a@example.com")
    client.cookies.clear()
    register(client, company="İstanbul Şekerleme", email="b@example.com")
    client.cookies.clear()
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    login(client, email="ops@example.com")
    for query, found, not_found in [("ŞEKERLEME", "İstanbul Şekerleme", "Işık Yazılım"),
                                    ("istanbul", "İstanbul Şekerleme", "Işık Yazılım"),
                                    ("ışık", "Işık Yazılım", "İstanbul Şekerleme"),
                                    ("IŞIK", "Işık Yazılım", "İstanbul Şekerleme")]:
        page = client.get("/admin/", params={"q": query})
        assert found in page.text and not_found not in page.text, query
