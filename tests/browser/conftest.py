"""Browser fixtures: a real uvicorn (`python main.py`) on a free port, and Debian's Chromium
driven by Playwright. Tests find elements by role and label, as a person would.

Every page and state a browser test visits is also checked for accessibility and for phones
(tests/browser/a11y.py): axe-core's WCAG 2.0/2.1/2.2 A and AA rules and "no sideways scroll",
at 1280×800 and at 390×844. How, so that it is deterministic, costs little and never disturbs
the test:

- The `browser` fixture hands out contexts that this test's checker watches, so the `page`
  fixture and the extra contexts tests open (staff beside customer, Turkish) are all covered.
- The check runs in the test's own flow, just before each Playwright call the test makes (a
  click, a fill, an expect...): the pages are then between actions, with nothing of the test in
  flight, so resizing them is safe. It checks every open page of the watched contexts whose
  state it has not seen yet, and leaves a page still loading or waiting on htmx for the next
  call. After the test body the states the pages ended in are checked too.
  (Checking a page as it is about to leave a state, from a route handler holding the next
  request, does not work: Chromium answers no evaluate or screenshot on a page whose navigation
  request is held.)
- Watched contexts open at 1280×800 (unless a test asks for another size). A check runs axe and
  measures there, resizes to 390×844 and does it again, and puts the page back to its own size
  before the test's call goes ahead.
- States already checked in this test are skipped: the key is (path, a hash of the DOM's
  element structure, width), so htmx polling, typing and revisits cost one small evaluate.
- axe-core comes from node_modules (npm, pinned in package-lock.json) and is added to every
  document and frame of a watched context as a Playwright init script; the app never serves it.
- A serious or critical axe violation, or a page wider than the window, fails the test after
  its body ran, naming the rule, URL, width and first targets; moderate and minor violations
  are printed. `A11Y_CHECK=0` turns the check off (to time the suite without it);
  `a11y.skip(page)` leaves one page out (say why where it is used).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from tests.browser import a11y

a11y.install()

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


def pytest_collection_modifyitems(items):
    for item in items:
        if "/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


class LiveServer:
    def __init__(self, data_dir: Path, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data_dir),
                    "BASE_URL": self.url, **{k: str(v) for k, v in env.items()}}
        self.process: subprocess.Popen | None = None
        self.log = data_dir / "server.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([sys.executable, "main.py", "--port", str(self.port)], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def stop(self, kill=False):
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=15)


@pytest.fixture
def live_server(tmp_path):
    server = LiveServer(tmp_path / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def a11y_checker():
    """This test's accessibility checker (see the module docstring)."""
    checker = a11y.Checker()
    a11y.CURRENT = checker
    yield checker
    a11y.CURRENT = None


@pytest.fixture
def browser(_chromium, a11y_checker):
    """Chromium whose new contexts are watched by this test's accessibility checker."""
    return a11y.WatchedBrowser(_chromium, a11y_checker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    # After a passing test body: check the states the pages ended in, then report what was found.
    # A failing test keeps its own failure.
    result = yield
    checker = item.funcargs.get("a11y_checker") if hasattr(item, "funcargs") else None
    if checker is not None:
        checker.finish()
    return result


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def open_mail(page, subject):
    """Open a captured email in the dev mail viewer. The viewer is a plain page and the
    sender works in the background, so reload until the email is there."""
    link = page.get_by_role("link", name=subject).first
    for _ in range(50):
        page.goto("/dev/mail")
        if link.count():
            break
        page.wait_for_timeout(200)
    link.click()


def expect_cursor_in(page, label):
    """After a failed htmx submit the form comes back with the cursor in the field to fix.
    Both Chromium (native autofocus) and htmx (at settle, 20 ms later) put it there; a test
    that types before htmx has settled can have its next field's text moved into this one.
    So wait for the settle, then check the focus."""
    from playwright.sync_api import expect

    expect(page.locator(".htmx-settling, .htmx-swapping, .htmx-request")).to_have_count(0)
    expect(page.get_by_label(label)).to_be_focused()
