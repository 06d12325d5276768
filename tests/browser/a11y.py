"""The accessibility and phone-width check every browser test runs on the pages it visits
(the design is in tests/browser/conftest.py's docstring).

axe-core (node_modules/axe-core, pinned in package-lock.json) is evaluated into the page by
Playwright; the app never serves it. Each state is checked at 1280×800 and 390×844 for
- axe's WCAG 2.0/2.1/2.2 A and AA rules: serious or critical violations fail the test, the
  moderate and minor ones are printed;
- no sideways scroll: `document.documentElement.scrollWidth <= innerWidth`, the widest
  offending elements named when it fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
AXE_PATH = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = ((1280, 800), (390, 844))
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
FAILING_IMPACTS = {"serious", "critical"}
# A11Y_CHECK=0 turns the check off (e.g. to time the suite without it).
ENABLED = os.environ.get("A11Y_CHECK", "1") != "0"

CURRENT: "Checker | None" = None
_AXE_SOURCE: str | None = None


def axe_source() -> str:
    global _AXE_SOURCE
    if _AXE_SOURCE is None:
        if not AXE_PATH.exists():
            raise RuntimeError(f"{AXE_PATH} is missing: run `npm ci` (make setup does)")
        _AXE_SOURCE = AXE_PATH.read_text()
    return _AXE_SOURCE


# A hash of the page's element structure (tags, ids, classes, what is hidden), so the same
# state reached again (htmx polling, a revisit) is not checked twice. Text is left out on
# purpose: a different number in the same structure has the same contrast and layout.
STRUCTURE_JS = """() => {
  if (document.readyState !== 'complete' || document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping')) return null;
  let h = 2166136261;
  const add = s => { for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); } };
  for (const el of document.querySelectorAll('*')) {
    add(el.tagName); add(el.id); add(el.getAttribute('class') || '');
    if (el.hidden || el.getAttribute('aria-hidden')) add('h');
    if (el.tagName === 'DETAILS' && el.open) add('o');
  }
  return (h >>> 0).toString(16) + ':' + document.querySelectorAll('*').length;
}"""

AXE_RUN_JS = """async (tags) => {
  const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.slice(0, 4).map(n => n.target.join(' ')), count: v.nodes.length}));
}"""

# What is wider than its room: the page itself (sideways scroll: the deepest elements sticking
# out past the right edge, widest first) and boxes inside it that scroll sideways or cut their
# content off (a table in an `overflow: auto` wrapper, a card with `overflow: hidden`). Boxes
# meant to scroll sideways are left alone: code samples (pre), text areas and anything marked
# `data-scrolls-sideways` (the console's section links).
OVERFLOW_JS = """() => {
  const doc = document.documentElement;
  const width = window.innerWidth;
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  const path = el => { const parts = []; for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) parts.unshift(name(e)); return parts.join(' > '); };
  const allowed = el => el.closest('pre, textarea, [data-scrolls-sideways], .sr-only');
  const result = {scrollWidth: doc.scrollWidth, innerWidth: width, offenders: [], inner: []};
  for (const el of document.body.querySelectorAll('*')) {
    if (el.clientWidth <= 1 || allowed(el)) continue;
    const ox = getComputedStyle(el).overflowX;
    if (ox !== 'visible' && ox !== 'clip' && el.scrollWidth > el.clientWidth + 1 && el.getClientRects().length)
      result.inner.push(`${path(el)} (${ox}: ${el.scrollWidth}px of content in ${el.clientWidth}px)`);
  }
  if (doc.scrollWidth > width) {
    const wide = [];
    for (const el of document.body.querySelectorAll('*')) {
      if (allowed(el)) continue;
      const r = el.getBoundingClientRect();
      if (r.right > width + 1 && r.width > 0) wide.push({el, right: Math.round(r.right), w: Math.round(r.width)});
    }
    // The deepest offenders say most: drop an element when one of its children also sticks out.
    const set = new Set(wide.map(x => x.el));
    const leaves = wide.filter(x => ![...x.el.children].some(c => set.has(c)));
    leaves.sort((a, b) => b.right - a.right);
    result.offenders = leaves.slice(0, 5).map(x => `${path(x.el)} (right edge ${x.right}px, ${x.w}px wide)`);
  }
  return (result.scrollWidth > width || result.inner.length) ? result : null;
}"""


class Checker:
    """One test's checks: what was seen, what failed, what is only worth printing."""

    def __init__(self):
        self.seen: set[tuple] = set()
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.contexts: list = []
        self.skipped: set[int] = set()
        self.checks = 0
        self.looks = 0
        self.seconds = 0.0
        self.busy = False

    def watch(self, context):
        if ENABLED:
            self.contexts.append(context)
            # axe in every document and frame from the start: Chromium runs it from memory
            # (~10 ms a page), where evaluating the 650 kB into each page costs 60–400 ms.
            context.add_init_script(path=str(AXE_PATH))

    def before_action(self):
        """Called before each Playwright call the test makes: check every watched page's current
        state (a page still loading or waiting for htmx is left for the next call)."""
        if self.busy or not self.contexts:
            return
        self.busy = True
        started = time.perf_counter()
        try:
            for context in self.contexts:
                for page in list(context.pages):
                    try:
                        self.check(page, settled_only=True)
                    except Exception as exc:
                        if not _gone(exc):
                            self.failures.append(f"- the accessibility check crashed on {page.url}: {exc!r}")
        finally:
            self.busy = False
            self.seconds += time.perf_counter() - started

    def finish(self):
        """After the test body: check the states the pages ended in, then fail on what was found."""
        self.busy = True
        for context in self.contexts:
            for page in list(context.pages):
                if page.is_closed():
                    continue
                try:
                    page.wait_for_load_state("load")
                    self.check(page)
                except Exception as exc:
                    if not _gone(exc):
                        raise
        self.busy = False
        self.contexts = []
        print(f"accessibility check: {self.checks} page states × widths checked, {self.looks} looks, "
              f"{self.seconds:.1f} s during the test")
        for note in dict.fromkeys(self.notes):
            print(note)
        if self.failures:
            raise AssertionError("Accessibility / phone-width check failed:\n" + "\n".join(dict.fromkeys(self.failures)))

    # -- the check --------------------------------------------------------------------------
    def check(self, page, settled_only=False):
        if page.is_closed() or id(page) in self.skipped:
            return
        url = page.url
        if not url.startswith("http"):
            return
        path = urlsplit(url).path
        self.looks += 1
        structure = page.evaluate(STRUCTURE_JS)
        if structure is None and settled_only:  # still loading or an htmx request in flight
            return
        todo = [size for size in WIDTHS if (path, structure, size[0]) not in self.seen]
        if not todo:
            return
        original = page.viewport_size
        try:
            for width, height in todo:
                self.seen.add((path, structure, width))
                if page.viewport_size != {"width": width, "height": height}:
                    page.set_viewport_size({"width": width, "height": height})
                    # Let the new width lay out (two frames) before measuring.
                    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                self._check_at(page, url, width)
        finally:
            if original and page.viewport_size != original:
                page.set_viewport_size(original)

    def _check_at(self, page, url, width):
        self.checks += 1
        overflow = page.evaluate(OVERFLOW_JS)
        if overflow and overflow["scrollWidth"] > overflow["innerWidth"]:
            self.failures.append(
                f"- sideways scroll at {width} px on {url}: the page is {overflow['scrollWidth']} px wide "
                f"in a {overflow['innerWidth']} px window; widest: " + "; ".join(overflow["offenders"]))
        if overflow and overflow["inner"]:
            self.failures.append(f"- content scrolls sideways or is cut off at {width} px on {url}: "
                                 + "; ".join(overflow["inner"][:5]))
        for frame in page.frames:  # a page opened before the context was watched
            if frame.url.startswith("http") and not frame.evaluate("() => !!window.axe"):
                frame.evaluate(axe_source())
        for v in page.evaluate(AXE_RUN_JS, TAGS):
            line = (f"- axe {v['impact']} {v['id']} ({v['help']}) on {url} at {width} px, "
                    f"{v['count']} element(s): " + ", ".join(v["targets"]))
            (self.failures if v["impact"] in FAILING_IMPACTS else self.notes).append(line)


def _gone(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("closed", "Execution context was destroyed", "detached",
                                   "navigation", "Target crashed"))


def skip(page):
    """Leave this page out of the check (say why where it is called)."""
    if CURRENT is not None:
        CURRENT.skipped.add(id(page))


class WatchedBrowser:
    """The session's Chromium, handing out contexts this test's checker watches."""

    def __init__(self, browser, checker: Checker):
        self._browser = browser
        self._checker = checker

    def new_context(self, **kwargs):
        # The wide size the check uses, so a check needs one resize (to 390 px) and back.
        kwargs.setdefault("viewport", {"width": WIDTHS[0][0], "height": WIDTHS[0][1]})
        context = self._browser.new_context(**kwargs)
        if kwargs.get("java_script_enabled", True):  # axe needs JavaScript in the page
            self._checker.watch(context)
        return context

    def new_page(self, **kwargs):
        page = self.new_context(**kwargs).new_page()
        return page

    def __getattr__(self, name):
        return getattr(self._browser, name)


def install():
    """Run the checker before each Playwright call a test makes (see conftest's docstring)."""
    import greenlet
    from playwright._impl import _sync_base

    main = greenlet.getcurrent()
    # A private hook of Playwright's sync API: fail loudly if a new Playwright moves it, rather
    # than let the check silently stop running.
    original = getattr(getattr(_sync_base, "SyncBase", None), "_sync", None)
    if original is None:
        raise RuntimeError("playwright._impl._sync_base.SyncBase._sync is gone: update tests/browser/a11y.py")
    if getattr(original, "a11y", False):
        return

    def _sync(self, awaitable):
        __tracebackhide__ = True
        # Only from the test's own flow, never inside an event handler (those run on other greenlets).
        if CURRENT is not None and not CURRENT.busy and greenlet.getcurrent() is main:
            CURRENT.before_action()
        return original(self, awaitable)

    _sync.a11y = True
    _sync_base.SyncBase._sync = _sync
