"""Every page a Turkish customer or member of staff can reach, whole (header, footer, <main>),
has no English sentence left in it. The pages are found by following the links of the pages
themselves, as a person clicking around would, so a page added later is checked too."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from billing import accounts
from conftest import START, login, register, second_browser
from i18n_support import english_left
from test_checkout_http import checkout_oid, pay, subscribe

TR = {"Accept-Language": "tr-TR,tr;q=0.9"}
# Fixture names, and technical words shown as they are on staff pages.
NAMES = ("Yılmaz Yazılım A.Ş.", "Ayşe Yılmaz", "AYSE YILMAZ", "Operasyon Ekibi", "payment.succeeded",
         "customer.created", "Bearer", "GET", "POST", "PUT", "PATCH")
SKIP = ("/auth/logout", "/static/", "/api/", "/dev/mail/", "/paytr-emulator/odeme", "/billing/callback", "/language")


def crawl(client, start: list[str], limit: int = 120, at_least: int = 1) -> dict[str, list[str]]:
    """GET each same-site page reachable from `start`; -> {path: English words found}. Fails if
    fewer than `at_least` pages were read (a crawl that reads nothing proves nothing)."""
    seen, queue, found, read = set(), list(start), {}, 0
    while queue and len(seen) < limit:
        path = queue.pop(0)
        if path in seen or path.startswith(SKIP):
            continue
        seen.add(path)
        response = client.get(path, headers=TR)
        if response.status_code != 200 or "text/html" not in response.headers.get("content-type", ""):
            continue
        read += 1
        words = english_left(response.text, NAMES)
        if words:
            found[path] = words
        for href in re.findall(r'href="([^"#]+)', response.text):
            target = urljoin(path, href.replace("&amp;", "&"))
            parts = urlsplit(target)
            if not parts.netloc and parts.path.startswith("/"):
                queue.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    assert read >= at_least, f"only {read} pages read"
    return found


def turkish_customer(client):
    client.headers.update(TR)  # signs up in Turkish, so Turkish is saved as the owner's language
    register(client)


def test_every_page_a_turkish_customer_reaches_is_turkish(app, client, db):
    turkish_customer(client)
    oid = checkout_oid(subscribe(client))
    pay(client, app, oid)
    left = crawl(client, ["/", "/pricing", "/billing/", "/billing/team", "/billing/account", "/billing/details",
                          "/billing/timeline", "/paytr-emulator/"], at_least=12)
    assert not left, left


def test_every_page_turkish_staff_reach_is_turkish(app, client, db, password_hash):
    turkish_customer(client)
    staff = second_browser(app)
    accounts.create_staff(db, START, email="ops@example.com", name="Operasyon Ekibi", password_hash=password_hash)
    staff.headers.update(TR)
    login(staff, "ops@example.com")
    left = crawl(staff, ["/admin/", "/admin/api-keys", "/admin/webhooks", "/admin/clock", "/dev/mail"], at_least=8)
    assert not left, left


def test_signed_out_pages_are_turkish(client):
    left = crawl(client, ["/", "/pricing", "/auth/login", "/auth/register", "/auth/forgot-password",
                          "/auth/reset/nonsense", "/no-such-page"], at_least=4)
    assert not left, left
