"""Money as integer minor units (cents, kuruş). Decimal only at the edges.

A float anywhere near an amount is a bug: parsing goes through Decimal and
formatting divides with integers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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
    """'34.56' -> 3456. Refuses more than two decimals, signs and garbage."""
    raw = str(text).strip().replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"{text!r} is not an amount") from None
    if not value.is_finite() or value < 0:
        raise MoneyError(f"{text!r} is not a positive amount")
    if value.as_tuple().exponent < -2:
        raise MoneyError(f"{text!r} has more than two decimals")
    return int(value * 100)


def decimal_string(minor: int) -> str:
    """3456 -> '34.56' (PayTR's refund and recurring amount format)."""
    _check_int(minor)
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


def format(minor: int, currency: str) -> str:
    """3456, 'USD' -> '$34.56'; thousands grouped: 1234567 -> '$12,345.67'."""
    _check_int(minor)
    symbol, before = CURRENCIES.get(currency.upper(), (currency.upper() + " ", True))
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    number = f"{whole:,}.{cents:02d}"
    return f"{sign}{symbol}{number}" if before else f"{sign}{number} {symbol}"


def percent_of(minor: int, rate: Decimal) -> int:
    """VAT and the like: minor * rate / 100, rounded half up to a whole minor unit."""
    _check_int(minor)
    return int((Decimal(minor) * Decimal(rate) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def split_gross(gross: int, rate: Decimal) -> tuple[int, int]:
    """Split a VAT-inclusive total into (net, vat) so that net + vat == gross exactly."""
    _check_int(gross)
    net = int((Decimal(gross) * 100 / (100 + Decimal(rate))).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return net, gross - net


def _check_int(minor) -> None:
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"money must be integer minor units, got {type(minor).__name__}")
