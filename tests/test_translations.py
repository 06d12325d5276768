"""The catalogs: every message the code and templates can show has a Turkish translation
with the same placeholders, and the catalog is up to date with the source. This fails the
build when someone wraps a new string in _() and forgets to translate it."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from billing import i18n

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdif]|%[sdif]")
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2), "lazy_gettext": None}
METHODS = [("billing/**.py", "python"), ("templates/**.html", "jinja2"), ("templates/**.txt", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
           "templates/**.txt": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}


def catalog(locale: str):
    with open(ROOT / "billing" / "translations" / locale / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return read_po(handle, locale=locale)


def extracted() -> dict:
    found = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
            str(ROOT), METHODS, OPTIONS, KEYWORDS, strip_comment_tags=True):
        key = (message, context) if isinstance(message, str) else (message[0], context)
        found[key] = f"{filename}:{lineno}"
    return found


def placeholders(text: str) -> set[str]:
    return {m.group(0) for m in PLACEHOLDER.finditer(text or "")}


def test_every_message_has_a_turkish_translation_with_the_same_placeholders():
    problems = []
    for message in catalog("tr"):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        label = ids[0][:60]
        if message.fuzzy:
            problems.append(f"fuzzy: {label!r}")
        if not all(s and s.strip() for s in strings):
            problems.append(f"untranslated: {label!r}")
            continue
        wanted = set().union(*(placeholders(i) for i in ids))
        for s in strings:
            # a plural form may leave the count out ("Bir gün kaldı" for 1), nothing else may change
            got = placeholders(s)
            if got - wanted or (wanted - got) - {"%(num)d", "%(num)s"}:
                problems.append(f"placeholders differ: {label!r}: {sorted(wanted)} vs {sorted(got)} in {s!r}")
    assert not problems, "\n".join(problems)


def test_the_catalog_has_every_message_in_the_source():
    known = {(m.id if isinstance(m.id, str) else m.id[0], m.context) for m in catalog("tr") if m.id}
    missing = {key: where for key, where in extracted().items() if key not in known}
    assert not missing, "run `make i18n-update` and translate:\n" + "\n".join(
        f"{where}: {key[0][:80]!r}" for key, where in sorted(missing.items(), key=lambda kv: kv[1]))


def test_turkish_plurals_and_formats():
    with i18n.using("tr"):
        assert i18n.date_text(__import__("datetime").date(2026, 12, 14)) == "14 Aralık 2026"
        assert i18n.upper("iyi ılık") == "İYİ ILIK" and i18n.lower("İSTANBUL IRMAK") == "istanbul ırmak"
    with i18n.using("en"):
        assert i18n.date_text(__import__("datetime").date(2026, 12, 14)) == "14 December 2026"
        assert i18n.upper("iyi") == "IYI"


def test_accept_language_and_normalising():
    assert i18n.from_accept_language("tr-TR,tr;q=0.9,en-US;q=0.8") == "tr"
    assert i18n.from_accept_language("en-US,en;q=0.9,tr;q=0.8") == "en"
    assert i18n.from_accept_language("de-DE,de;q=0.9") == "en"  # anything else is English
    assert i18n.from_accept_language("de, tr;q=0.9") == "en"
    assert i18n.from_accept_language("en;q=0.5, tr") == "tr"
    assert i18n.from_accept_language(None, "tr") == "tr" and i18n.from_accept_language("", "en") == "en"
    assert i18n.from_accept_language("tr;q=0") == "en"
    assert i18n.normalize("TR_tr") == "tr" and i18n.normalize("fr") is None and i18n.normalize(None) is None
