"""How an email's words are joined: who it greets, and sentences that end in a name.

Two rules every email follows, kept here so no template does them by hand:

- The greeting names the reader: the person's first name when the recipient is one of our
  users (looked up by address when the email is queued, billing/mail.py), else the company's
  name, else the address itself — never an empty "Hello,".
- A sentence whose last word is a name ending in a period ("Anadolu Yazılım A.Ş.", "Acme
  Ltd.", "Inc.") gets no second period. `end_sentence` does that; the email environment
  passes every translated sentence through it (billing/mail.py), and templates may use it as
  a filter on text they join themselves.
"""

from __future__ import annotations

import re

import jinja2
from markupsafe import Markup

# A period, perhaps closed tags (a bold name: "<strong>A.Ş.</strong>."), then the sentence's own
# period. Not when either is part of an ellipsis ("A.Ş..." or "wait..." stay as written).
_DOUBLED_PERIOD = re.compile(r"(?<![.])\.((?:</[A-Za-z][A-Za-z0-9]*>)*)\.(?![.])")


def end_sentence(text):
    """`text` with a name's closing period and the sentence's period joined into one."""
    if text is None or "." not in str(text):
        return text
    joined = _DOUBLED_PERIOD.sub(r".\1", str(text))
    return Markup(joined) if isinstance(text, Markup) else joined


def _ending_sentences(gettext):
    """A newstyle gettext/ngettext whose result goes through end_sentence."""

    @jinja2.pass_context
    def translate(__context, *args, **variables):
        return end_sentence(gettext(__context, *args, **variables))

    return translate


def install(env: jinja2.Environment) -> None:
    """Make `_()`, `ngettext()` and `{% trans %}` in `env` join names and periods correctly (they
    all resolve the `gettext`/`ngettext` globals at render time), and add the filter."""
    for name in ("gettext", "ngettext", "pgettext", "npgettext"):
        if name in env.globals:
            env.globals[name] = _ending_sentences(env.globals[name])
    env.filters["end_sentence"] = end_sentence


def first_name(name: str | None) -> str:
    """The name a greeting uses: "Deniz Aydın" -> "Deniz". A name that does not split cleanly
    (one word, a title such as "Dr.", "Aydın, Deniz") is used whole."""
    name = " ".join((name or "").split())
    first, _, rest = name.partition(" ")
    if not rest or first.endswith((".", ",")) or not any(ch.isalpha() for ch in first):
        return name
    return first


def greeting_name(context: dict, to: str | None = None) -> str:
    """Who "Hello …," names: the recipient's own name, else the company's, else the address."""
    person = first_name(context.get("name"))
    if person:
        return person
    company = " ".join(str(context.get("company") or "").split())
    return company or (to or "").strip()
