"""Money as integer minor units (cents, kuruş). Decimal only at the edges.

A float anywhere near an amount is a bug: parsing goes through Decimal and
formatting divides with integers.
"""

from __future__ import annotations

import functools
import re
from decimal import ROUND_HALF_UP, Decimal

# ISO code -> (symbol, symbol goes before the number)
CURRENCIES = {
    "USD": ("$", True),
    "EUR": ("€", True),
    "GBP": ("£", True),
    "TRY": ("₺", True),
    "RUB": ("₽", False),
}


class MoneyError(ValueError):
    pass


def check_currency(code: str) -> str:
    code = code.upper()
    if code not in CURRENCIES:
        raise MoneyError(f"unsupported currency {code!r}")
    return code


def parse(text: str) -> int:
    """'34.56' -> 3456. ASCII digits with at most two decimals after one '.' or ',', nothing else.

    Decimal() would also take '1_0', Arabic-Indic digits, '1e-2' and '1e999999' (which
    overflows): a person typing an amount means none of those, so they are refused.
    """
    raw = str(text).strip()
    match = _AMOUNT.fullmatch(raw)
    if match is None:
        raise MoneyError(f"{str(text)[:40]!r} is not an amount like 29.00")
    whole, cents = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(cents.ljust(2, "0"))


# At most 12 whole digits: far above any price, far below SQLite's 64-bit integers.
_AMOUNT = re.compile(r"([0-9]{1,12})(?:[.,]([0-9]{1,2}))?")


def decimal_string(minor: int) -> str:
    """3456 -> '34.56' (PayTR's refund and recurring amount format)."""
    _check_int(minor)
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def format(minor: int, currency: str, locale: str | None = None) -> str:
    """3456, 'USD' -> '$34.56'; thousands grouped: 1234567 -> '$12,345.67'. In Turkish, as
    Babel writes it: '$34,56', '₺12.345,67'. English keeps our own symbols, because Babel's
    English writes the lira as 'TRY12,345.67'."""
    _check_int(minor)
    from billing import i18n

    if (i18n.normalize(locale) or i18n.current()) == "tr":
        return _turkish(minor, currency.upper())
    symbol, before = CURRENCIES.get(currency.upper(), (currency.upper() + " ", True))
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    number = f"{whole:,}.{cents:02d}"
    return f"{sign}{symbol}{number}" if before else f"{sign}{number} {symbol}"


@functools.lru_cache(maxsize=8192)
def _turkish(minor: int, currency: str) -> str:
    # Babel's formatting is ~0.1 ms a call; a dashboard shows dozens of amounts, mostly the same few.
    from babel.numbers import format_currency

    return format_currency(Decimal(minor) / 100, currency, locale="tr")


def percent_of(minor: int, rate: Decimal) -> int:
    """VAT and the like: minor * rate / 100, rounded half up to a whole minor unit."""
    _check_int(minor)
    return int((Decimal(minor) * Decimal(rate) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def split_gross(gross: int, rate: Decimal) -> tuple[int, int]:
    """Split a VAT-inclusive total into (net, vat) with vat == round_half_up(net × rate) and
    net + vat == gross, as an invoice must show. Not every total has such a split (at 20 %,
    about one in six: nets 2 and 3 give totals 2 and 4, so 3 has none); MoneyError for those.
    List prices are checked at start-up and prorated charges are built from a net
    (`gross_from_net`), so an amount we charge always splits."""
    _check_int(gross)
    guess = int((Decimal(gross) * 100 / (100 + Decimal(rate))).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    for net in (guess, guess - 1, guess + 1):
        if net >= 0 and net + percent_of(net, rate) == gross:
            return net, gross - net
    raise MoneyError(f"{gross} minor units has no net amount whose {rate} % VAT adds up to it")


def gross_from_net(net: int, rate: Decimal) -> int:
    """The VAT-inclusive total of a net amount: net + round_half_up(net × rate)."""
    _check_int(net)
    return net + percent_of(net, rate)


def splits_exactly(gross: int, rate: Decimal) -> bool:
    try:
        split_gross(gross, rate)
    except MoneyError:
        return False
    return True


def _check_int(minor) -> None:
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"money must be integer minor units, got {type(minor).__name__}")
