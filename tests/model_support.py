"""For the model-based test (tests/test_model.py): PayTR as a fake the test steers, and the
model's own calendar arithmetic, written independently of billing/subscriptions.py.

The fake answers the calls the scheduler's tick makes (status query, card list, a saved
card's charge) the way PayTR does (same fields and formats as the built-in emulator), and
keeps PayTR's side of the truth: what money it collected, from which card, what it refunded.
Callbacks it owes the app wait in `outbox` until the test delivers them, in any order, as
often as it likes, or never (then only the status query finds them).
"""

from __future__ import annotations

import asyncio
import calendar
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.paytr import protocol
from billing.paytr.client import PaytrRefused, PaytrUnavailable

TOKEN_MINUTES = 30  # PayTR's iframe and card form stop taking payments after this (timeout_limit)

# How PayTR treats the next charge of a saved card (the test switches it between steps).
CHARGE_MODES = ("success", "decline", "refused", "timeout_charged", "timeout_not_charged")


@dataclass
class Tx:
    """One merchant_oid at PayTR."""

    oid: str
    method: str  # iframe, direct or recurring
    amount: int
    outcome: str | None = None  # success or failed, once PayTR decided
    at: datetime | None = None  # when PayTR decided: money collected at this moment
    utoken: str | None = None
    ctoken: str | None = None  # the card charged
    refunds: list[tuple[str, int]] = field(default_factory=list)  # (reference_no, amount) PayTR made
    reported: bool = False  # the app has heard the outcome (a callback delivered or a status answer)

    @property
    def refunded(self) -> int:
        return sum(amount for _, amount in self.refunds)


@dataclass
class SavedCard:
    utoken: str
    ctoken: str
    seq: int  # PayTR's order of saving
    oid: str  # the payment that saved it


@dataclass
class Charge:
    """A saved-card charge our server asked PayTR for."""

    oid: str
    utoken: str
    ctoken: str
    at: datetime


class FakePaytr:
    def __init__(self, settings):
        self.key, self.salt = str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt)
        self.test_mode = "1" if settings.paytr_test_mode else "0"
        self.now: datetime | None = None  # the test's clock; set before every call
        self.tx: dict[str, Tx] = {}
        self.cards: list[SavedCard] = []  # as PayTR lists them now
        self.cards_ever: list[SavedCard] = []
        self.charges: list[Charge] = []
        self.outbox: list[protocol.Callback] = []  # callbacks PayTR has not delivered yet
        self.delivered: list[protocol.Callback] = []  # delivered once; PayTR may send them again
        self.charge_mode = "success"
        self.lists_reference_no = True  # the status query names each refund's reference_no

    # --- the customer at PayTR's iframe or card form -----------------------------------

    def payable(self, payment: dict) -> bool:
        """Can the customer still pay this checkout at PayTR (its page open, token valid)?"""
        created = datetime.fromisoformat(payment["created_at"].replace("Z", "+00:00"))
        return (payment["method"] in ("iframe", "direct") and payment["merchant_oid"] not in self.tx
                and (self.now - created).total_seconds() < TOKEN_MINUTES * 60)

    def customer_pays(self, payment: dict, request: dict, success: bool) -> Tx:
        oid = payment["merchant_oid"]
        tx = self.tx[oid] = Tx(oid, payment["method"], payment["amount"], "success" if success else "failed",
                               self.now)
        extras = {}
        if success and payment["method"] == "direct" and request.get("store_card") == "1":
            # The card joins the customer's PayTR user (a new one unless the form named one).
            utoken = request.get("utoken") or secrets.token_hex(16)
            card = SavedCard(utoken, secrets.token_hex(16), len(self.cards_ever) + 1, oid)
            self.cards.append(card)
            self.cards_ever.append(card)
            tx.utoken, tx.ctoken = utoken, card.ctoken
            extras["utoken"] = utoken
        self._owe_callback(tx, **extras)
        return tx

    # --- the calls our server makes (jobs.tick, jobs.charge_now) --------------------------

    async def list_cards(self, utoken: str) -> list[dict]:
        await asyncio.sleep(0)
        return [{"ctoken": c.ctoken, "last_4": f"{4000 + c.seq}"[-4:], "month": "12", "year": "30",
                 "c_bank": "Test Bank", "require_cvv": "0", "c_name": "AYSE YILMAZ", "c_brand": "visa",
                 "c_type": "credit", "schema": "VISA", "initial": "4", "businessCard": "n"}
                for c in self.cards if c.utoken == utoken]

    async def delete_card(self, utoken: str, ctoken: str) -> None:
        await asyncio.sleep(0)
        self.cards = [c for c in self.cards if not (c.utoken == utoken and c.ctoken == ctoken)]

    async def charge_stored_card(self, request: dict) -> None:
        await asyncio.sleep(0)
        oid, utoken, ctoken = request["merchant_oid"], request.get("utoken", ""), request.get("ctoken", "")
        if not any(c.utoken == utoken and c.ctoken == ctoken for c in self.cards):
            raise PaytrRefused("utoken veya ctoken geçersiz: kayıtlı kart bulunamadı")
        if oid in self.tx:
            raise PaytrRefused("merchant_oid daha önce kullanılmış")
        mode = self.charge_mode
        if mode == "refused":
            raise PaytrRefused("Kayıtlı kart ile ödeme şu an yapılamıyor")
        self.charges.append(Charge(oid, utoken, ctoken, self.now))
        if mode == "timeout_not_charged":
            raise PaytrUnavailable("PayTR did not answer in time (the test's fake)")
        amount = int(Decimal(request["payment_amount"]) * 100)
        tx = self.tx[oid] = Tx(oid, "recurring", amount, "failed" if mode == "decline" else "success", self.now,
                               utoken, ctoken)
        self._owe_callback(tx)
        if mode == "timeout_charged":
            raise PaytrUnavailable("PayTR did not answer in time (the test's fake)")

    async def status(self, merchant_oid: str) -> dict:
        await asyncio.sleep(0)
        tx = self.tx.get(merchant_oid)
        if tx is None:
            return {"status": "error", "err_no": "004", "err_msg": "Sipariş bulunamadı"}
        tx.reported = True
        if tx.outcome == "failed":
            return {"status": "failed", "err_msg": "Kartın bakiyesi yetersiz (insufficient funds)"}
        returns = []
        for reference_no, amount in tx.refunds:
            entry = {"return_amount": php_amount(amount), "return_date": "2027-01-01 12:00:00", "return_type": "iade"}
            if self.lists_reference_no:
                entry["reference_no"] = reference_no
            returns.append(entry)
        return {"status": "success", "payment_amount": php_amount(tx.amount), "payment_total": php_amount(tx.amount),
                "currency": "USD", "test_mode": self.test_mode, "taksit": "0", "returns": returns}

    # --- refunds (the staff form calls PayTR; the test plays both sides) -------------------

    def refund(self, merchant_oid: str, amount: int, reference_no: str) -> bool:
        """PayTR makes the refund if the payment has that much left; True if it did."""
        tx = self.tx.get(merchant_oid)
        if tx is None or tx.outcome != "success" or tx.refunded + amount > tx.amount:
            return False
        tx.refunds.append((reference_no, amount))
        return True

    def card(self, ctoken: str) -> SavedCard:
        return next(c for c in self.cards_ever if c.ctoken == ctoken)

    def refund_made(self, reference_no: str) -> bool:
        return any(ref == reference_no for tx in self.tx.values() for ref, _ in tx.refunds)

    # --- callbacks --------------------------------------------------------------------

    def _owe_callback(self, tx: Tx, **extras) -> None:
        if tx.outcome == "success":
            fields = {"payment_amount": tx.amount, "currency": "USD", "test_mode": self.test_mode,
                      "payment_type": "card", "installment_count": "0", **extras}
        else:
            fields = {"failed_reason_code": "0", "failed_reason_msg": "Kartın bakiyesi yetersiz (insufficient funds)",
                      "test_mode": self.test_mode, "payment_type": "card"}
        form = protocol.callback_form(merchant_oid=tx.oid, status=tx.outcome,
                                      total_amount=tx.amount if tx.outcome == "success" else 0,
                                      key=self.key, salt=self.salt, **fields)
        self.outbox.append(protocol.parse_callback(form, self.key, self.salt))

    def take(self, index: int) -> protocol.Callback:
        """The callback to deliver now (PayTR's order is not ours to assume)."""
        cb = self.outbox.pop(index % len(self.outbox))
        self.delivered.append(cb)
        self.tx[cb.merchant_oid].reported = True
        return cb


def php_amount(minor: int) -> str:
    """How PayTR's status query prints an amount: 2900 -> '29', 1080 -> '10.8'."""
    whole, cents = divmod(minor, 100)
    return str(whole) if cents == 0 else f"{whole}.{cents:02d}".rstrip("0")


# --- the model's calendar -----------------------------------------------------------------


def add_month(at: datetime, anchor_day: int, tz: ZoneInfo) -> datetime:
    """One calendar month after `at`, on `anchor_day` (clamped to the month's length), at the
    same local wall-clock time."""
    local = at.astimezone(tz)
    year, month = divmod(local.year * 12 + local.month, 12)  # months counted from 0: this is the next one
    month += 1
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return datetime(year, month, day, local.hour, local.minute, local.second, tzinfo=tz).astimezone(UTC)


def local_date(at: datetime, tz: ZoneInfo) -> str:
    """How the customer reads a date on an invoice line: 11.01.2027."""
    return at.astimezone(tz).strftime("%d.%m.%Y")
