"""The PayTR emulator's data and rules: configuration, fault knobs, transactions, cards.

Pure code, no I/O: the HTTP side lives in `emulator.py`, `emulator_api.py` and
`emulator_pages.py`. Every token and hash comes from `protocol.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from billing import money
from billing.i18n import gettext as _
from billing.paytr import protocol

PAYTR_CURRENCIES = ("TL", "TRY", "USD", "EUR", "GBP", "RUB")
DEFAULT_CURRENCY = "TL"  # PayTR reads an empty currency as TL
DEFAULT_TIMEOUT_LIMIT = 30  # minutes the iframe page stays payable

# The published test cards succeed with any future expiry and any 3-digit CVV.
TEST_CARDS = (
    ("4355084355084358", "Visa"),
    ("5406675406675403", "MasterCard"),
    ("9792030394440796", "Troy"),
)


@dataclass(frozen=True)
class Decline:
    code: str
    message: str


# Programmable outcomes of a stored card's charge; None means it goes through.
OUTCOMES: dict[str, Decline | None] = {
    "success": None,
    "insufficient_funds": Decline("0", "Kartın bakiyesi yetersiz (insufficient funds)"),
    "expired_card": Decline("0", "Kartın son kullanma tarihi geçmiş (expired card)"),
}
DECLINE_CARDS = (
    ("4000000000000002", "insufficient_funds"),
    ("4000000000000069", "expired_card"),
)
NOT_A_TEST_CARD = Decline("0", "Test modunda yalnızca test kartları kullanılabilir")

_DECIMAL_AMOUNT = re.compile(r"^\d+(\.\d{1,2})?$")


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- configuration and faults ----------------------------------------------------------


@dataclass(frozen=True)
class EmulatorConfig:
    merchant_id: str
    merchant_key: str
    merchant_salt: str
    notification_url: str  # where callbacks are POSTed
    retry_base: float = 1.0  # seconds before the 1st retry; doubles each time
    retry_max: float = 60.0  # cap (PayTR itself retries about every minute)
    callback_timeout: float = 10.0
    # The shop whose test double this is: its pages link back there ("← Back to PayTR Billing").
    app_url: str = ""
    app_name: str = "PayTR Billing"


GET_TOKEN_FAULTS = ("ok", "refuse", "timeout")
REFUND_FAULTS = ("ok", "refuse", "timeout")


@dataclass(frozen=True)
class Faults:
    """Knobs for the app's reliability tests. Invalid values raise ValueError."""

    duplicate_callbacks: int = 1  # each callback sent this many times, each copy retried on its own
    callback_delay: float = 0.0  # seconds before the first attempt
    drop_first: int = 0  # the first N attempts of each delivery are lost (recorded, never sent)
    get_token: str = "ok"  # "ok", "refuse" or "timeout"
    refuse_reason: str = "Mağaza API yetkisi kapalı (emulated refusal)"
    timeout_seconds: float = 30.0  # how long get-token (or refund) sleeps under "timeout"
    refund: str = "ok"  # "ok", "refuse", or "timeout": the refund is made, then the answer comes too late
    api_latency: float = 0.0  # seconds every server-to-server API answer takes (a slow PayTR, for storms)

    def __post_init__(self):
        _check_range("duplicate_callbacks", self.duplicate_callbacks, 1, 10)
        _check_range("callback_delay", self.callback_delay, 0, 3600)
        _check_range("drop_first", self.drop_first, 0, 1000)
        _check_range("timeout_seconds", self.timeout_seconds, 0, 3600)
        _check_range("api_latency", self.api_latency, 0, 60)
        if self.get_token not in GET_TOKEN_FAULTS:
            raise ValueError(_("%(name)s must be one of %(choices)s", name="get_token", choices=", ".join(GET_TOKEN_FAULTS)))
        if self.refund not in REFUND_FAULTS:
            raise ValueError(_("%(name)s must be one of %(choices)s", name="refund", choices=", ".join(REFUND_FAULTS)))
        if not self.refuse_reason.strip() or len(self.refuse_reason) > 200:
            raise ValueError(_("%(name)s must be 1 to %(max)d characters", name="refuse_reason", max=200))

    def changed(self, changes: Mapping[str, object]) -> Faults:
        """A copy with `changes` applied; form strings and JSON values are both accepted."""
        unknown = sorted(set(changes) - set(_COERCE))
        if unknown:
            raise ValueError(_("unknown fault %(name)s; known: %(known)s", name=repr(unknown[0]), known=", ".join(_COERCE)))
        return replace(self, **{name: _COERCE[name](name, value) for name, value in changes.items()})


def _check_range(name: str, value, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(_("%(name)s must be between %(low)s and %(high)s", name=name, low=low, high=high))


def _as_int(name: str, value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(_("%(name)s must be a whole number", name=name))


def _as_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(_("%(name)s must be a number of seconds", name=name))
    try:
        number = float(value)
    except ValueError:
        raise ValueError(_("%(name)s must be a number of seconds", name=name)) from None
    if not math.isfinite(number):
        raise ValueError(_("%(name)s must be a number of seconds", name=name))
    return number


def _as_str(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(_("%(name)s must be text", name=name))
    return value.strip()


_COERCE = {
    "duplicate_callbacks": _as_int,
    "callback_delay": _as_float,
    "api_latency": _as_float,
    "drop_first": _as_int,
    "get_token": _as_str,
    "refuse_reason": _as_str,
    "timeout_seconds": _as_float,
    "refund": _as_str,
}


# --- cards -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    number: str  # digits only
    owner: str
    month: int
    year: int  # four digits

    @property
    def brand(self) -> str:
        """PayTR's lower-case `c_brand`."""
        if self.number.startswith("9792"):
            return "troy"
        if self.number[0] == "4":
            return "visa"
        if self.number[0] in "25":
            return "mastercard"
        if self.number[:2] in ("34", "37"):
            return "amex"
        return "other"

    @property
    def brand_name(self) -> str:
        return {"visa": "Visa", "mastercard": "MasterCard", "troy": "Troy", "amex": "American Express"}.get(
            self.brand, "Other")

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def initial(self) -> str:
        return self.number[:6]

    @property
    def masked(self) -> str:
        """PayTR's masked_pan: 435508******4358."""
        return self.initial + "*" * (len(self.number) - 10) + self.last4

    @property
    def expiry(self) -> str:
        return f"{self.month:02d}/{self.year % 100:02d}"


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def read_card(*, owner: str, number: str, month: str, year: str, cvv: str, now: datetime) -> tuple[Card | None, dict]:
    """Check card input like a payment form: (card, {}) or (None, {field: message})."""
    errors = {}
    owner = owner.strip()
    digits = number.replace(" ", "").strip()
    if not owner:
        errors["cc_owner"] = _("Enter the name printed on the card.")
    if not (digits.isdigit() and 12 <= len(digits) <= 19 and luhn_valid(digits)):
        errors["card_number"] = _("This card number is not valid.")
    parsed_month = int(month) if month.strip().isdigit() else 0
    parsed_year = _four_digit_year(year.strip())
    if not 1 <= parsed_month <= 12 or parsed_year is None:
        errors["expiry"] = _("Enter the expiry date as MM/YY.")
    elif (parsed_year, parsed_month) < (now.year, now.month):
        errors["expiry"] = _("This card has expired.")
    if not (len(cvv.strip()) == 3 and cvv.strip().isdigit()):
        errors["cvv"] = _("The CVV is the 3 digits on the back of the card.")
    if errors:
        return None, errors
    return Card(number=digits, owner=owner, month=parsed_month, year=parsed_year), {}


def split_expiry(text: str) -> tuple[str, str]:
    """'12/30' -> ('12', '30'); anything else gives values read_card refuses."""
    month, _, year = text.partition("/")
    return month.strip(), year.strip()


def _four_digit_year(text: str) -> int | None:
    if text.isdigit() and len(text) == 2:
        return 2000 + int(text)
    if text.isdigit() and len(text) == 4:
        return int(text)
    return None


def card_decline(number: str) -> Decline | None:
    """The outcome of paying with a card typed into a form (iframe or Direct API)."""
    if any(number == test for test, _ in TEST_CARDS):
        return None
    for decline_number, outcome in DECLINE_CARDS:
        if number == decline_number:
            return OUTCOMES[outcome]
    return NOT_A_TEST_CARD


@dataclass
class StoredCard:
    utoken: str
    ctoken: str
    card: Card
    stored_at: datetime

    def as_paytr(self) -> dict:
        """One entry of /odeme/capi/list, with PayTR's field names."""
        return {"ctoken": self.ctoken, "last_4": self.card.last4, "month": f"{self.card.month:02d}",
                "year": f"{self.card.year % 100:02d}", "c_bank": "Test Bank", "require_cvv": "0",
                "c_name": self.card.owner, "c_brand": self.card.brand, "c_type": "credit",
                "schema": self.card.brand.upper(), "initial": self.card.initial, "businessCard": "n"}


# --- transactions ----------------------------------------------------------------------


@dataclass
class Attempt:
    at: datetime
    delivery: int  # which delivery of the callback (copies and resends each count)
    answer: str  # "HTTP 200", "dropped (drop_first fault)", "ConnectError: ..." ...
    body: str = ""  # first 200 characters of what the merchant answered
    delivered: bool = False


@dataclass
class Refund:
    amount: int  # minor units
    at: datetime
    reference_no: str
    return_type: str = "API"  # made through the refund API (PayTR also lists panel refunds)


@dataclass
class Transaction:
    merchant_oid: str
    api: str  # "iframe", "direct" or "stored card"
    amount: int  # minor units
    currency: str  # as the merchant sent it (TL stays TL)
    test_mode: str  # "1" or "0", as sent
    email: str
    basket: list
    ok_url: str
    fail_url: str
    created: datetime
    token: str = ""  # the iframe page's token
    timeout_limit: int = DEFAULT_TIMEOUT_LIMIT
    status: str = "pending"  # then "success" or "failed"
    decided_at: datetime | None = None
    decline: Decline | None = None
    card: Card | None = None
    utoken: str = ""  # set when this payment stored the card
    refunds: list[Refund] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    deliveries: int = 0  # callback deliveries started
    customer: dict = field(default_factory=dict)  # user_name, user_address, user_phone as the merchant sent them

    @property
    def decided(self) -> bool:
        return self.status != "pending"

    @property
    def delivered(self) -> bool:
        return any(attempt.delivered for attempt in self.attempts)

    @property
    def refunded(self) -> int:
        return sum(refund.amount for refund in self.refunds)

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded if self.status == "success" else 0

    def expired(self, now: datetime) -> bool:
        return now - self.created > timedelta(minutes=self.timeout_limit)

    def callback_form(self, config: EmulatorConfig) -> dict:
        """What PayTR POSTs to the notification URL once this payment is decided."""
        extras = {"payment_type": "card", "test_mode": self.test_mode}
        if self.decline is None:
            total = self.amount
            extras.update(currency=self.currency, payment_amount=protocol.amount_x100(self.amount),
                          installment_count="0")
        else:
            total = 0  # PayTR sends 0 for a failed payment
            extras.update(failed_reason_code=self.decline.code, failed_reason_msg=self.decline.message)
        if self.utoken:
            extras["utoken"] = self.utoken
        return protocol.callback_form(merchant_oid=self.merchant_oid, status=self.status, total_amount=total,
                                      key=config.merchant_key, salt=config.merchant_salt, **extras)


# --- field checks shared by get-token and the Direct API ------------------------------


def missing(form: Mapping[str, str], names) -> list[str]:
    return [name for name in names if not form.get(name, "")]


def signed_values(form: Mapping[str, str], order: tuple[str, ...]) -> dict:
    """The values a token covers, as sent; an absent optional field counts as ''."""
    return {name: form.get(name, "") for name in order}


def token_ok(form: Mapping[str, str], order: tuple[str, ...], config: EmulatorConfig) -> bool:
    expected = protocol.token_for(signed_values(form, order), order, config.merchant_key, config.merchant_salt)
    return protocol.verify(expected, form.get("paytr_token", ""))


def parse_decimal_amount(text: str) -> int | None:
    """'34.56' -> 3456 (refund, Direct API); None unless digits with at most two decimals after a dot."""
    return money.parse(text) if _DECIMAL_AMOUNT.match(text) else None


def order_problem(form: Mapping[str, str]) -> str | None:
    """The first problem with an order's common fields, in PayTR's words; None if fine."""
    if not protocol.valid_merchant_oid(form["merchant_oid"]):
        return "merchant_oid yalnızca harf ve rakam içermeli, en fazla 64 karakter olmalı"
    if (form.get("currency") or DEFAULT_CURRENCY) not in PAYTR_CURRENCIES:
        return f"currency geçersiz: {form.get('currency')!r} (TL, TRY, USD, EUR, GBP, RUB)"
    if len(form["email"]) > 100 or "@" not in form["email"]:
        return "email geçersiz"
    if len(form["user_ip"]) > 39:
        return "user_ip en fazla 39 karakter olmalı"
    if form.get("test_mode", "") not in ("", "0", "1"):
        return "test_mode 0 veya 1 olmalı"
    try:
        read_basket(form["user_basket"])
    except ValueError as error:
        return f"user_basket geçersiz: {error}"
    return None


def read_basket(value: str) -> list:
    """base64(JSON [[name, "12.34", qty], ...]) -> the list; ValueError says what is wrong."""
    try:
        rows = protocol.decode_basket(value)
    except ValueError:
        raise ValueError("base64 kodlu JSON değil") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError("en az bir ürün içeren bir liste olmalı")
    for number, row in enumerate(rows, start=1):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str) and row[0].strip()
                and isinstance(row[1], str) and _DECIMAL_AMOUNT.match(row[1]) and _quantity(row[2])):
            raise ValueError(f'{number}. ürün ["ad", "12.34", adet] biçiminde olmalı')
    return rows


def _quantity(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.isdigit() and int(value) >= 1
    return isinstance(value, int) and value >= 1


# --- output formats --------------------------------------------------------------------


def php_amount(minor: int) -> str:
    """How PHP prints the float the status query answers with: 2900 -> '29', 1080 -> '10.8'."""
    whole, cents = divmod(minor, 100)
    return str(whole) if cents == 0 else f"{whole}.{cents:02d}".rstrip("0")


def display_amount(minor: int, currency: str) -> str:
    """'29.00 USD', as the payment page shows it."""
    return f"{money.decimal_string(minor)} {currency}"


@dataclass
class ApiLoad:
    """What the merchant's server asks of the emulator's API, for the app's load tests: calls by
    endpoint, how many were being answered at once (and the most ever), and when each began."""

    calls: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    peak: int = 0
    started: list[float] = field(default_factory=list)  # time.monotonic() of every call

    def begin(self, endpoint: str, at: float) -> None:
        self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.started.append(at)

    def end(self) -> None:
        self.in_flight -= 1

    def most_in_one_second(self) -> int:
        """The most calls that began within any one second."""
        times, most, first = sorted(self.started), 0, 0
        for last, at in enumerate(times):
            while at - times[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most
