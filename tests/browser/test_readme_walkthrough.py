"""The README's "Try it" section, followed word for word in Chromium.

The section is written for people; this test reads the same text, so a page whose words change
fails here until the README says the same (and a README edit that no page backs fails too).

The format, all of it:

- The ```sh block's `echo '<password>' | .venv/bin/python main.py create-staff <email>` is run
  as written (without BASE_URL, beside the running server): it must create the account and
  print the login address of that server.
- The steps are the numbered list items (`1. `, continuation lines indented). In each step,
  in reading order:
    <http://127.0.0.1:8000/path>  open that path (the host is the README's default; the test's
                                  server stands in for it)
    **Words**                     choose the button, link or radio button so named: an exact name first, else
                                  one whose name starts with Words (**INV-** opens the first
                                  invoice, **Subscribe** the first plan's "Subscribe to Starter");
                                  a button before a link (the form's **Log in**, not the header's)
    "Label" `text`                fill in the field with that label
    *Words*                       the page shows these words
  Everything else is prose for the reader. A step that begins "As staff" moves to the staff's
  window, "As the customer" back to the customer's; later steps stay in that window.
- Emails and PayTR's answers arrive seconds after a page answers, so a choice or a text not on
  the page yet is looked for again, then the page is opened afresh (a GET of the same address,
  never a form sent again) until it shows, for up to WAIT_SECONDS.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from playwright.sync_api import Error as PlaywrightError, Page

from tests.browser.conftest import ROOT

README = ROOT / "README.md"
SECTION = "## Try it"
README_BASE = "http://127.0.0.1:8000"
WAIT_SECONDS = 30

STEP_START = re.compile(r"^(\d+)\. (.*)$")
ACTION = re.compile(
    r"<(?P<open>https?://[^>\s]+)>"
    r'|"(?P<label>[^"]+)"\s+`(?P<text>[^`]+)`'
    r"|\*\*(?P<choose>[^*]+)\*\*"
    r"|(?<![*\w])\*(?P<see>[^*\s][^*]*?)\*(?![*\w])"
)
CREATE_STAFF = re.compile(r"^echo '(?P<password>[^']+)' \| \.venv/bin/python main\.py create-staff (?P<email>\S+)$")


@dataclass
class Step:
    number: int
    text: str
    window: str  # "customer" or "staff"
    actions: list[tuple[str, ...]]


def section(readme: str) -> str:
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end != -1 else None]


def steps(text: str) -> list[Step]:
    """The numbered list: each item's lines joined, then read into actions in order."""
    items: list[list[str]] = []
    open_item = False
    for line in text.splitlines():
        if STEP_START.match(line):
            items.append([line])
            open_item = True
        elif open_item and line.startswith("   ") and line.strip():
            items[-1].append(line.strip())
        else:
            open_item = False  # a blank or unindented line ends the item
    window, parsed = "customer", []
    for lines in items:
        number, first = STEP_START.match(lines[0]).groups()
        joined = " ".join([first, *lines[1:]])
        if joined.startswith("As staff"):
            window = "staff"
        elif joined.startswith("As the customer"):
            window = "customer"
        actions = []
        for match in ACTION.finditer(joined):
            if match["open"]:
                assert match["open"].startswith(README_BASE), f"step {number}: {match['open']} is not on {README_BASE}"
                actions.append(("open", match["open"][len(README_BASE):] or "/"))
            elif match["label"]:
                actions.append(("fill", match["label"], match["text"]))
            elif match["choose"]:
                actions.append(("choose", match["choose"]))
            else:
                actions.append(("see", match["see"]))
        parsed.append(Step(int(number), joined, window, actions))
    return parsed


# --- the actions, as a person does them ------------------------------------------------------


def _choice(page: Page, words: str):
    """The button, link or radio button named `words`, or None while the page has none."""
    starts = re.compile("^" + re.escape(words))
    for role, name in (("button", words), ("link", words), ("radio", words), ("button", starts), ("link", starts)):
        found = page.get_by_role(role, name=name, exact=True if isinstance(name, str) else None)
        found = found.filter(visible=True)
        if found.count():
            return found.first
    return None


def _shown(page: Page, words: str):
    found = page.get_by_text(re.compile(re.escape(words))).filter(visible=True)
    return found.first if found.count() else None


def _until(page: Page, find, what: str, step: Step):
    """find(page) until it returns something: looked for again for a few seconds, then the page is
    opened afresh (the background sender and PayTR's callbacks land a moment later)."""
    deadline = time.monotonic() + WAIT_SECONDS
    reload_after = time.monotonic() + 3
    while True:
        try:
            found = find(page)
        except PlaywrightError:  # the page was navigating away while we looked: look again
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"README step {step.number}: the page at {page.url} has no {what}.\n"
                        f"  step: {step.text}\n  page says: {page.locator('main').inner_text()[:1500]}")
        if time.monotonic() > reload_after:
            page.goto(page.url)  # a GET of the same address: never a form sent again
            reload_after = time.monotonic() + 1
        else:
            page.wait_for_timeout(250)


def act(page: Page, action: tuple[str, ...], step: Step) -> None:
    kind = action[0]
    if kind == "open":
        page.goto(action[1])
    elif kind == "fill":
        _, label, text = action
        field = _until(page, lambda p: (f := p.get_by_label(label, exact=True).filter(visible=True)).count() and f.first
                       or None, f'field labelled "{label}"', step)
        field.fill(text)
    elif kind == "choose":
        _until(page, lambda p: _choice(p, action[1]), f'button or link "{action[1]}"', step).click()
        page.wait_for_load_state()
    else:
        _until(page, lambda p: _shown(p, action[1]), f'text "{action[1]}"', step)


# --- the test ---------------------------------------------------------------------------------


def test_the_readme_steps_parse_into_the_small_vocabulary():
    """Guards the format itself: every step does something, and the words it quotes are read."""
    parsed = steps(section(README.read_text()))
    assert [s.number for s in parsed] == list(range(1, len(parsed) + 1))
    assert all(s.actions for s in parsed), [s.text for s in parsed if not s.actions]
    kinds = {a[0] for s in parsed for a in s.actions}
    assert kinds == {"open", "fill", "choose", "see"}
    # No marker left unread: a stray ** or a label without its `text` would be skipped silently.
    for s in parsed:
        rest = ACTION.sub("", s.text)
        assert "**" not in rest and not re.search(r'"[^"]+"\s+`', rest), f"step {s.number}: {rest}"


def test_the_readme_walkthrough(browser, live_server, page):
    text = section(README.read_text())

    # The staff account, made the README's way beside the running server.
    [command] = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    made = CREATE_STAFF.match(command.strip())
    assert made, f"the README's create-staff command changed: {command}"
    env = {k: v for k, v in live_server.env.items() if k != "BASE_URL"}  # as `make run` has it
    args = shlex.split(command.split("|", 1)[1])
    result = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, env=env, input=made["password"] + "\n",
                            text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"log in at {live_server.url}/auth/login"), result.stdout

    staff = browser.new_context(base_url=live_server.url, locale="en-GB").new_page()
    staff.set_default_timeout(15_000)
    windows = {"customer": page, "staff": staff}
    try:
        for step in steps(text):
            for action in step.actions:
                act(windows[step.window], action, step)
    finally:
        staff.context.close()

