"""The operator sells a plan of their own without touching code: staff create a yearly plan priced
in lira, with Turkish and English names, in the console; a new customer reading Turkish finds it on
the pricing page and subscribes to it through PayTR."""

import re

from playwright.sync_api import expect

from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff
from tests.conftest import PASSWORD


def test_staff_create_a_yearly_lira_plan_and_a_turkish_customer_subscribes_to_it(page, live_server):
    create_staff(live_server)
    page.goto("/auth/login")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("navigation", name="Admin console").get_by_role("link", name="Plans").click()
    page.get_by_role("link", name="New plan").click()

    page.get_by_label("Code").fill("kurumsal-yillik")
    page.get_by_label("Name in English").fill("Business yearly")
    page.get_by_label("Name in Turkish").fill("Kurumsal Yıllık")
    page.get_by_label("Description in English").fill("For teams that plan the whole year.")
    page.get_by_label("Description in Turkish").fill("Bütün yılı planlayan ekipler için.")
    page.get_by_label("Price, VAT included").fill("11.999,01")  # VAT cannot split this exactly
    page.get_by_label("Currency").select_option("TRY")
    page.get_by_label("Yearly: 12 months on the anchor day").check()
    page.get_by_label("Workspaces").fill("")
    page.get_by_label("Storage (GB)").fill("500")
    page.get_by_label("Free trial (days)").fill("30")
    page.get_by_role("button", name="Create plan").click()
    expect(page.get_by_text("No net amount gives exactly this price")).to_be_visible()
    page.get_by_label("Price, VAT included").fill("11.999,00")
    page.get_by_role("button", name="Create plan").click()
    expect(page.get_by_text("Plan kurumsal-yillik created. New customers can choose it now.")).to_be_visible()
    row = page.get_by_role("row", name=re.compile("Business yearly"))
    expect(row).to_contain_text("/ year")
    expect(row).to_contain_text("Unlimited workspaces")
    page.get_by_role("button", name="Log out").click()

    page.goto("/pricing")
    page.get_by_role("button", name="Türkçe").click()
    plan = page.get_by_role("article", name="Kurumsal Yıllık")
    expect(plan).to_contain_text("Bütün yılı planlayan ekipler için.")
    expect(plan).to_contain_text("₺11.999,00")
    expect(plan).to_contain_text("/ yıl")
    expect(plan).to_contain_text("30 günlük ücretsiz deneme")
    plan.get_by_role("link", name="Ücretsiz denemeyi başlat").click()

    page.get_by_label("Şirket adı").fill("Yıldız Çözüm A.Ş.")
    page.get_by_label("Adınız").fill("Gülşen Öztürk")
    page.get_by_label("E-posta").fill("gulsen@example.com")
    page.get_by_label("Şifre").fill(PASSWORD)
    page.get_by_role("button", name="Hesap oluştur ve denemeyi başlat").click()
    expect(page.get_by_text(re.compile(r"30 gün"))).to_be_visible()

    page.get_by_role("button", name="Kurumsal Yıllık planına abone ol").click()
    frame = page.frame_locator("#paytriframe")
    frame.get_by_label("Kart üzerindeki ad").fill("GULSEN OZTURK")
    frame.get_by_label("Kart numarası").fill("4355 0843 5508 4358")
    frame.get_by_label(re.compile(r"Son kullanma")).fill("12/30")
    frame.get_by_label("CVV").fill("000")
    frame.get_by_role("button", name=re.compile(r"11999")).click()
    expect(page.get_by_role("heading", name="Kurumsal Yıllık planınız etkin")).to_be_visible(timeout=20_000)
    page.goto("/billing/")
    expect(page.get_by_role("region", name="Planınız")).to_contain_text("₺11.999,00 / yıl")
