"""Screenshots for docs/screenshots/: the dashboard, checkout and staff customer page at 390 and
1280 px wide, from a fresh app on its embedded defaults (the PayTR emulator, captured mail).

    .venv/bin/python docs/screenshots/shoot.py after     # writes docs/screenshots/after-*.png
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer  # noqa: E402
from tests.browser.test_admin_flow import STAFF_PASSWORD, create_staff  # noqa: E402
from tests.browser.test_checkout_flow import pay_in_iframe, register  # noqa: E402

WIDTHS = {"phone": (390, 844), "desktop": (1280, 800)}


def shoot(page, name, label):
    for width_name, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(300)
        page.screenshot(path=str(ROOT / "docs/screenshots" / f"{label}-{name}-{width_name}.png"), full_page=True)


def main(label: str):
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        server = LiveServer(Path(tmp) / "data").start()
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(base_url=server.url, locale="en-GB").new_page()
            page.set_default_timeout(20_000)
            register(page, email="deniz@example.com", company="Anadolu Yazılım A.Ş.")
            page.get_by_role("button", name=re.compile(r"^Subscribe")).first.click()
            page.frame_locator("#paytriframe").get_by_label("Card number").wait_for()
            page.wait_for_timeout(500)
            shoot(page, "checkout", label)
            page.set_viewport_size({"width": 1280, "height": 800})
            pay_in_iframe(page, "4355 0843 5508 4358")
            expect(page.get_by_role("heading", name=re.compile("plan is active"))).to_be_visible()
            page.goto("/billing/")
            shoot(page, "dashboard", label)
            page.get_by_role("button", name="Log out").click()
            create_staff(server)
            page.goto("/auth/login")
            page.get_by_label("Email").fill("ops@example.com")
            page.get_by_label("Password").fill(STAFF_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_load_state("networkidle")
            page.get_by_label("Search customers").fill("anadolu")
            page.get_by_role("link", name="Anadolu Yazılım A.Ş.").click()
            page.wait_for_load_state("networkidle")
            shoot(page, "staff-customer", label)
            browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "after")
