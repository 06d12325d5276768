"""Checks that a page or email shown in Turkish has no English sentence left in it.

`english_left(html)` returns the English words found in what a person reads: text, and the
attributes a screen reader or browser shows (aria-label, title, placeholder, alt, the value
of buttons). Brand and product names, plan names, codes and the language switch's own
"English" are not English sentences and are left out.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Words that only an untranslated English sentence would contain; none is Turkish.
ENGLISH = {
    "the", "your", "you", "and", "with", "for", "this", "that", "will", "have", "has", "are", "is", "was", "not",
    "of", "to", "in", "on", "at", "by", "or", "be", "it", "an", "we", "our", "us", "no", "yes", "all", "any",
    "pay", "paid", "subscribe", "invoice", "invoices", "payment", "payments", "cancel", "canceled", "trial",
    "save", "back", "log", "password", "settings", "billing", "account", "company", "renew", "renews",
    "refund", "refunds", "card", "cards", "days", "day", "left", "month", "date", "amount", "status", "total",
    "name", "email", "address", "phone", "details", "change", "choose", "add", "remove", "send", "new",
    "next", "previous", "page", "error", "found", "sorry", "please", "try", "again", "here", "more", "when",
}
# Names that stay as they are in Turkish text.
ALLOWED = ["PayTR Billing", "PayTR", "Starter", "Team", "Enterprise", "English", "Standard Webhooks", "VKN", "TCKN",
           "Europe/Istanbul", "HTTP", "API", "URL", "JSON", "OK", "SMTP", "CVV", "IBAN", "htmx", "PDF", "KDV",
           "TRY", "USD", "EUR", "MRR", "merchant_oid"]  # currency codes (ISO 4217) and the console's terms
READ_ATTRIBUTES = {"aria-label", "title", "placeholder", "alt"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "code", "pre", "kbd", "textarea"):  # a textarea holds typed data
            self._skip += 1
        attrs = dict(attrs)
        if attrs.get("lang") == "en" or attrs.get("translate") == "no":
            return  # marked as English on purpose (the language switch)
        for name, value in attrs.items():
            if value and (name in READ_ATTRIBUTES or (name == "value" and attrs.get("type") in ("submit", "button"))):
                self.parts.append(value)

    def handle_endtag(self, tag):
        if tag in ("script", "style", "code", "pre", "kbd", "textarea") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def readable_text(html: str) -> str:
    # the language switch names English in English on every Turkish page, on purpose
    html = re.sub(r'<(span|button)[^>]*lang="en"[^>]*>.*?</\1>', " ", html, flags=re.S)
    parser = _Text()
    parser.feed(html)
    return " ".join(parts.strip() for parts in parser.parts if parts.strip())


def english_left(html_or_text: str, also_allowed: tuple[str, ...] = ()) -> list[str]:
    text = readable_text(html_or_text) if "<" in html_or_text else html_or_text
    for name in sorted([*ALLOWED, *also_allowed], key=len, reverse=True):
        text = text.replace(name, " ")
    text = re.sub(r"\bNo\s*:\s*\d+", " ", text)  # a Turkish street address: "Büyükdere Cad. No:1"
    text = re.sub(r"\S+@\S+|https?://\S+|/\S*|\b[A-Z]{2,}-\d{4}-\d+\b|\b\w*\d\w*\b", " ", text)  # addresses, codes
    # Whole words in any script: "için" is one Turkish word, not the English "in".
    words = re.findall(r"[^\W\d_]+", text)
    return sorted({w for w in words if w.isascii() and w.lower() in ENGLISH})
