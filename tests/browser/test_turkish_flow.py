"""A Turkish customer in a real browser: switches the site to Türkçe, signs up, pays in
PayTR's iframe (the emulator, also in Turkish), and reads a Turkish dashboard, invoice and
receipt email, with Turkish dates and money."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import open_mail

PASSWORD = "kasım ayında abone oldum"


def pay_in_iframe_in_turkish(page, card: str):
    """PayTR's iframe (the emulator) in Turkish, by its Turkish labels."""
    frame = page.frame_locator("#paytriframe")
    frame.get_by_label("Kart üzerindeki ad").fill("DENIZ AYDIN")
    frame.get_by_label("Kart numarası").fill(card)
    frame.get_by_label(re.compile(r"Son kullanma")).fill("12/30")
    frame.get_by_label("CVV").fill("000")
    frame.get_by_role("button", name=re.compile(r"29")).click()


def test_switch_to_turkish_register_pay_and_read_everything_in_turkish(page):
    page.goto("/pricing")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("button", name="Türkçe").click()
    expect(page.locator("html")).to_have_attribute("lang", "tr")
    expect(page.get_by_text("Türkçe", exact=True)).to_have_attribute("aria-current", "true")

    page.goto("/auth/register?plan=starter")
    page.get_by_label("Şirket adı").fill("Ege Bulut Hizmetleri Ltd.")
    page.get_by_label("Adınız").fill("Deniz Aydın")
    page.get_by_label("E-posta").fill("deniz@example.com")
    page.get_by_label("Şifre").fill(PASSWORD)
    page.get_by_role("button", name="Hesap oluştur ve denemeyi başlat").click()
    expect(page.get_by_text(re.compile(r"14 gün"))).to_be_visible()

    page.get_by_role("button", name="Starter planına abone ol").click()
    expect(page.get_by_role("heading", name="Starter planı için ödeyin")).to_be_visible()
    pay_in_iframe_in_turkish(page, "4355 0843 5508 4358")

    expect(page.get_by_role("heading", name="Starter planınız etkin")).to_be_visible(timeout=20_000)
    page.goto("/billing/")
    expect(page.locator(".badge.active")).to_have_text("Etkin")
    expect(page.get_by_text("$29,00").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d{1,2} (Ocak|Şubat|Mart|Nisan|Mayıs|Haziran|Temmuz|Ağustos|Eylül|Ekim|Kasım|Aralık) \d{4}")).first).to_be_visible()

    page.get_by_role("link", name=re.compile(r"^INV-\d{4}-000001$")).click()
    totals = page.get_by_role("table", name=re.compile("Toplam", re.I))
    expect(totals).to_contain_text("KDV")
    expect(totals).to_contain_text("$29,00")

    open_mail(page, re.compile("Ödemeniz alındı"))
    expect(page.get_by_text(re.compile(r"Starter planı için \$29,00 tutarındaki ödemenizi aldık"))).to_be_visible()
