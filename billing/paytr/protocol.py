"""PayTR's protocol as pure functions: field order, tokens, hashes, amount formats.

Every request token is base64(HMAC-SHA256(key=merchant_key, msg=concat(fields) + merchant_salt));
only the fields and their order differ. The callback hash is
base64(HMAC-SHA256(key=merchant_key, msg=merchant_oid + merchant_salt + status + total_amount)).
Both this app and the built-in emulator use these functions, and the tests check
them against the published formulas with fixed vectors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from billing import money

API_PATHS = {
    "get_token": "/odeme/api/get-token",
    "iframe": "/odeme/guvenli/",
    "status": "/odeme/durum-sorgu",
    "refund": "/odeme/iade",
    "direct": "/odeme",
    "card_list": "/odeme/capi/list",
    "card_delete": "/odeme/capi/delete",
}
# iFrame API, step 2: the merchant's checkout loads this script from PayTR and calls
# iFrameResize({}, '#paytriframe'), so the iframe takes the payment page's height.
RESIZER_SCRIPT_PATH = "/js/iframeResizer.min.js"

# Field order of each token, exactly as PayTR documents it (salt appended after).
GET_TOKEN_FIELDS = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "user_basket",
                    "no_installment", "max_installment", "currency", "test_mode")
STATUS_FIELDS = ("merchant_id", "merchant_oid")
REFUND_FIELDS = ("merchant_id", "merchant_oid", "return_amount")
DIRECT_FIELDS = ("merchant_id", "user_ip", "merchant_oid", "email", "payment_amount", "payment_type",
                 "installment_count", "currency", "test_mode", "non_3d")
CARD_LIST_FIELDS = ("utoken",)
CARD_DELETE_FIELDS = ("ctoken", "utoken")

CURRENCY_TO_PAYTR = {"TRY": "TL", "USD": "USD", "EUR": "EUR", "GBP": "GBP", "RUB": "RUB"}
PAYTR_TO_CURRENCY = {"TL": "TRY", "TRY": "TRY", "USD": "USD", "EUR": "EUR", "GBP": "GBP", "RUB": "RUB"}

MERCHANT_OID_MAX = 64
_ALNUM = re.compile(r"[A-Za-z0-9]+")  # used with fullmatch: "$" would let a trailing newline in
# At most 12 digits: an amount no store charges, and far from SQLite's 64-bit limit, where a
# longer one (hash-valid, so written to the database) used to crash the callback with a 500.
_DIGITS = re.compile(r"[0-9]{1,12}")


class CallbackError(ValueError):
    """A callback we must refuse (400): fields missing or the hash does not verify."""


def sign(key: str, salt: str, *values) -> str:
    """base64(HMAC-SHA256(key, concat(values) + salt)): PayTR's token formula."""
    message = "".join(str(v) for v in values) + salt
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def token_for(fields: dict, order: tuple[str, ...], key: str, salt: str) -> str:
    return sign(key, salt, *(fields[name] for name in order))


def callback_hash(merchant_oid: str, status: str, total_amount: str, key: str, salt: str) -> str:
    # Note the order: the salt sits between the order id and the status.
    message = f"{merchant_oid}{salt}{status}{total_amount}"
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(expected: str, supplied: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii", "replace"), (supplied or "").encode("ascii", "replace"))


# --- amounts and ids ---------------------------------------------------------------------


def amount_x100(minor: int) -> str:
    """get-token and links: the amount times 100 as an integer (34.56 -> '3456')."""
    if isinstance(minor, bool) or not isinstance(minor, int) or minor < 0:
        raise ValueError("amount must be a non-negative integer of minor units")
    return str(minor)


def amount_decimal(minor: int) -> str:
    """Refund and recurring: a decimal string (34.56 -> '34.56')."""
    return money.decimal_string(minor)


def parse_x100(value: str) -> int:
    """Callback `total_amount` ('3456') -> 3456 minor units; refuses anything else, and absurd sizes."""
    text = str(value).strip()
    if not _DIGITS.fullmatch(text):  # ASCII digits only: str.isdigit() would take '２９'
        raise ValueError(f"not an integer amount: {value!r}")
    return int(text)


def parse_loose_amount(value: str) -> int:
    """The status query's own formats ('10,8', '10.80', '1.234,56') -> minor units."""
    text = str(value).strip()
    if "," in text and "." in text:
        text = text.replace(".", "").replace(",", ".")
    else:
        text = text.replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    return int((amount * 100).to_integral_value())


def paytr_currency(currency: str) -> str:
    try:
        return CURRENCY_TO_PAYTR[currency.upper()]
    except KeyError:
        raise ValueError(f"PayTR does not take {currency!r}") from None


def valid_merchant_oid(value: str) -> bool:
    return bool(value) and len(value) <= MERCHANT_OID_MAX and bool(_ALNUM.fullmatch(value))


def new_merchant_oid(company_id: int, now: datetime) -> str:
    """Alphanumeric, at most 64, unique per attempt: PB<company>T<utc time><random>."""
    oid = f"PB{company_id}T{now:%Y%m%d%H%M%S}{secrets.token_hex(6).upper()}"
    assert valid_merchant_oid(oid)
    return oid


def encode_basket(items: list[tuple[str, int, int]]) -> str:
    """[(name, unit price in minor units, quantity)] -> base64(JSON) as PayTR expects."""
    rows = [[name, money.decimal_string(price), quantity] for name, price, quantity in items]
    return base64.b64encode(json.dumps(rows).encode("utf-8")).decode("ascii")


def decode_basket(value: str) -> list:
    return json.loads(base64.b64decode(value, validate=True).decode("utf-8"))


# --- requests --------------------------------------------------------------------------


def get_token_request(*, merchant_id: str, key: str, salt: str, user_ip: str, merchant_oid: str, email: str,
                      amount: int, currency: str, basket: str, test_mode: bool, user_name: str,
                      user_address: str, user_phone: str, ok_url: str, fail_url: str, timeout_limit: int = 30,
                      lang: str = "tr", no_installment: int = 1, max_installment: int = 0) -> dict:
    """The form fields of POST /odeme/api/get-token, paytr_token included."""
    fields = {
        "merchant_id": merchant_id,
        "user_ip": user_ip,
        "merchant_oid": merchant_oid,
        "email": email,
        "payment_amount": amount_x100(amount),
        "user_basket": basket,
        "no_installment": str(no_installment),
        "max_installment": str(max_installment),
        "currency": paytr_currency(currency),
        "test_mode": "1" if test_mode else "0",
        "user_name": user_name[:60],
        "user_address": user_address[:400],
        "user_phone": user_phone[:20],
        "merchant_ok_url": ok_url,
        "merchant_fail_url": fail_url,
        "timeout_limit": str(timeout_limit),
        "debug_on": "0",
        "lang": lang if lang in ("tr", "en") else "tr",  # PayTR's page in the customer's language
    }
    fields["paytr_token"] = token_for(fields, GET_TOKEN_FIELDS, key, salt)
    return fields


def status_request(*, merchant_id: str, merchant_oid: str, key: str, salt: str) -> dict:
    fields = {"merchant_id": merchant_id, "merchant_oid": merchant_oid}
    fields["paytr_token"] = token_for(fields, STATUS_FIELDS, key, salt)
    return fields


def refund_request(*, merchant_id: str, merchant_oid: str, amount: int, key: str, salt: str,
                   reference_no: str | None = None) -> dict:
    fields = {"merchant_id": merchant_id, "merchant_oid": merchant_oid, "return_amount": amount_decimal(amount)}
    fields["paytr_token"] = token_for(fields, REFUND_FIELDS, key, salt)
    if reference_no:
        fields["reference_no"] = reference_no
    return fields


def _direct_fields(*, merchant_id, user_ip, merchant_oid, email, amount, currency, test_mode, non_3d, user_name,
                   user_address, user_phone, basket, ok_url, fail_url, lang: str = "tr") -> dict:
    """The Direct API fields shared by the browser's card form and server-side charges.
    `lang`: the language of PayTR's own pages and messages for this customer (tr or en)."""
    return {
        "merchant_id": merchant_id,
        "user_ip": user_ip,
        "merchant_oid": merchant_oid,
        "email": email,
        "payment_amount": amount_decimal(amount),
        "payment_type": "card",
        "installment_count": "0",
        "currency": paytr_currency(currency),
        "test_mode": "1" if test_mode else "0",
        "non_3d": non_3d,
        "user_name": user_name[:60],
        "user_address": user_address[:400],
        "user_phone": user_phone[:20],
        "user_basket": basket,
        "merchant_ok_url": ok_url,
        "merchant_fail_url": fail_url,
        "debug_on": "0",
        "client_lang": lang if lang in ("tr", "en") else "tr",
    }


def recurring_request(*, key: str, salt: str, utoken: str, ctoken: str, **order) -> dict:
    """A server-side charge of a stored card (Direct API, Non3D, recurring_payment=1)."""
    fields = _direct_fields(non_3d="1", **order)
    fields.update(utoken=utoken, ctoken=ctoken, recurring_payment="1", sync_mode="0")
    fields["paytr_token"] = token_for(fields, DIRECT_FIELDS, key, salt)
    return fields


def direct_form_fields(*, key: str, salt: str, store_card: bool, utoken: str = "", **order) -> dict:
    """Hidden fields of a card form that the customer's browser posts straight to PayTR
    (Direct API, 3-D Secure). The card fields (cc_owner, card_number, expiry_month,
    expiry_year, cvv) are typed by the customer and never reach our server."""
    fields = _direct_fields(non_3d="0", **order)
    if store_card:
        fields["store_card"] = "1"
    if utoken:  # add the card to the customer's existing PayTR user
        fields["utoken"] = utoken
    fields["paytr_token"] = token_for(fields, DIRECT_FIELDS, key, salt)
    return fields


def card_list_request(*, merchant_id: str, utoken: str, key: str, salt: str) -> dict:
    fields = {"merchant_id": merchant_id, "utoken": utoken}
    fields["paytr_token"] = token_for(fields, CARD_LIST_FIELDS, key, salt)
    return fields


def card_delete_request(*, merchant_id: str, utoken: str, ctoken: str, key: str, salt: str) -> dict:
    fields = {"merchant_id": merchant_id, "utoken": utoken, "ctoken": ctoken}
    fields["paytr_token"] = token_for(fields, CARD_DELETE_FIELDS, key, salt)
    return fields


# --- the callback ------------------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """A verified callback. Only merchant_oid, status and total_amount are signed."""

    merchant_oid: str
    status: str  # 'success' or 'failed'
    total_amount: int  # minor units, signed
    fields: dict  # everything PayTR sent, unsigned extras included

    def get(self, name: str, default: str = "") -> str:
        return str(self.fields.get(name, default))


def parse_callback(form: dict, key: str, salt: str) -> Callback:
    """Verify and parse a callback form; CallbackError with a short reason otherwise."""
    missing = [name for name in ("merchant_oid", "status", "total_amount", "hash") if not form.get(name)]
    if missing:
        raise CallbackError("missing " + ", ".join(missing))
    oid, status, total, supplied = (str(form[name]) for name in ("merchant_oid", "status", "total_amount", "hash"))
    expected = callback_hash(oid, status, total, key, salt)
    if not verify(expected, supplied):
        raise CallbackError("bad hash")
    if status not in ("success", "failed"):
        raise CallbackError("unknown status")
    try:
        amount = parse_x100(total)
    except ValueError:
        raise CallbackError("bad total_amount") from None
    return Callback(merchant_oid=oid, status=status, total_amount=amount, fields=dict(form))


def callback_form(*, merchant_oid: str, status: str, total_amount: int, key: str, salt: str, **extras) -> dict:
    """What PayTR POSTs to the notification URL (used by the emulator and the tests)."""
    total = amount_x100(total_amount)
    form = {"merchant_oid": merchant_oid, "status": status, "total_amount": total,
            "hash": callback_hash(merchant_oid, status, total, key, salt)}
    form.update({k: str(v) for k, v in extras.items() if v is not None})
    return form
