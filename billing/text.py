"""Free text that people type (names, billing details, refund reasons, notes), made safe to keep and show.

Names end up on invoices, in emails and in the admin console, so what is stored
must look the same everywhere as it did in the form. Control characters (NUL
above all) are refused: they have no business in a name and some tools choke
on them. Bidirectional overrides and isolates are refused too: they reorder
what a reader sees (`Acme\u202eGNP.exe` shows as something else), which is a
spoofing trick, not a typo. Zero-width and other invisible format characters
are dropped: they change nothing a reader sees, so dropping them loses nothing,
while keeping them lets two different-looking-identical names exist.
"""

from __future__ import annotations

import unicodedata

from billing.i18n import gettext as _

# Tab, newline and carriage return are ordinary whitespace in a pasted value.
_WHITESPACE_CONTROLS = frozenset("\t\n\r")
# Embeddings, overrides (U+202A..U+202E) and isolates (U+2066..U+2069).
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


class UnsafeText(ValueError):
    """The text holds characters we refuse; the message is for the person typing."""


def clean(value: str | None, *, multiline: bool = False) -> str:
    """Whitespace tidied (runs collapsed, ends stripped; blank lines dropped when `multiline`),
    invisible format characters removed. UnsafeText for control or bidi-override characters."""
    text = str(value or "")
    for ch in text:
        if ch in _WHITESPACE_CONTROLS:
            continue
        if unicodedata.category(ch) == "Cc":
            raise UnsafeText(_("Remove the control characters (such as NUL) from this text."))
        if ch in BIDI_CONTROLS:
            raise UnsafeText(_("Remove the hidden characters that change the direction of the text."))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if multiline:
        lines = (" ".join(line.split()) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        return "\n".join(line for line in lines if line)
    return " ".join(text.split())
