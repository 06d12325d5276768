"""A local PayTR: the gateway's API, payment page and callbacks.

Its state lives in memory; given a `state_path` (the app's built-in emulator keeps
it in the data directory) it is also saved there after every change and loaded at
start, so transactions and saved cards outlive a restart, and callbacks that never
got `OK` are sent again, as PayTR keeps retrying while a merchant is down.

It ships with the product as a test double of PayTR and speaks its protocol exactly
(paths, form fields, tokens, JSON answers and errors), using `protocol.py` for every
token and hash. The app mounts it with `Mount("/paytr-emulator", app=create_emulator(...))`;
`run_standalone` serves it at the root. A mounted sub-app's lifespan never runs, so the
http client is created lazily, callback deliveries are tasks started from request
handlers, and the host calls `Emulator.aclose()` on shutdown.

The routes live in `emulator_api.py` (what PayTR serves to merchants and browsers) and
`emulator_pages.py` (the pages for people, and the fault knobs); the rules and data
in `emulator_model.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from billing.i18n import gettext as _
from billing.paytr import emulator_api, emulator_assets, emulator_pages
from billing.paytr.emulator_model import (
    OUTCOMES, ApiLoad, Attempt, Card, Decline, EmulatorConfig, Faults, Refund, StoredCard, Transaction, utcnow,
)

__all__ = ["Emulator", "EmulatorConfig", "Faults", "Transaction", "create_emulator", "run_standalone"]

log = logging.getLogger("billing.paytr.emulator")

_MAX_DOUBLINGS = 30  # keeps retry_base * 2**n a finite float however long a delivery keeps failing


class Emulator:
    """PayTR's side of every payment: transactions, stored cards and callback deliveries."""

    STATE_VERSION = 1
    SAVE_DELAY = 0.5

    def __init__(self, config: EmulatorConfig, *, callback_client: httpx.AsyncClient | None = None,
                 state_path: Path | None = None):
        self.config = config
        self.state_path = state_path
        self.faults = Faults()
        self.api_load = ApiLoad()  # what the merchant's server asked, for load tests (not saved)
        self._given_client = callback_client  # owned by the host, which closes it
        self._own_client: httpx.AsyncClient | None = None
        self._transactions: dict[str, Transaction] = {}
        self._oid_by_token: dict[str, str] = {}
        self._cards: dict[str, dict[str, StoredCard]] = {}  # utoken -> ctoken -> card
        self._card_outcomes: dict[str, str] = {}  # full number or last 4 digits -> outcome
        # Running deliveries -> their merchant_oid; also the strong references the loop does not keep.
        self._deliveries: dict[asyncio.Task, str] = {}
        self._dirty = self._flush_scheduled = False
        if state_path is not None:
            self._load()

    # --- saved state -------------------------------------------------------------------

    def _load(self) -> None:
        try:
            # pickle: a development tool's own file in the app's data directory, as trusted as the database
            with open(self.state_path, "rb") as file:
                state = pickle.load(file)
            if state.get("version") != self.STATE_VERSION:
                raise ValueError(f"saved by another version ({state.get('version')})")
            self._transactions, self._oid_by_token = state["transactions"], state["oid_by_token"]
            self._cards, self._card_outcomes = state["cards"], state["card_outcomes"]
        except FileNotFoundError:
            return
        except Exception as exc:  # an unreadable file must not stop the app: start empty, say so
            log.warning("PayTR emulator: could not load %s (%s); starting with no transactions",
                        self.state_path, exc)

    def save(self) -> None:
        """Note a change. On the event loop the file is written at most every SAVE_DELAY
        seconds (a busy tick changes hundreds of transactions); elsewhere at once."""
        if self.state_path is None:
            return
        self._dirty = True
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        self._flush_scheduled = True
        loop.call_later(self.SAVE_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._dirty:
            self._write()

    def _write(self) -> None:
        self._dirty = False
        state = {"version": self.STATE_VERSION, "transactions": self._transactions,
                 "oid_by_token": self._oid_by_token, "cards": self._cards, "card_outcomes": self._card_outcomes}
        # Its own temporary file per thread: a script's thread and the event loop may both write.
        temporary = self.state_path.with_name(f"{self.state_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as file:
            pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, self.state_path)

    def resume_deliveries(self) -> int:
        """After a restart: send again every callback that never got `OK`, as PayTR would."""
        pending = [t for t in self._transactions.values() if t.decided and not t.delivered]
        for transaction in pending:
            self._start_deliveries(transaction, copies=1)
        return len(pending)

    def attach_callback_client(self, client: httpx.AsyncClient) -> None:
        """Send callbacks with the host's client from now on (the host owns and closes it).

        For hosts whose client can only exist after create_emulator(), e.g. an
        ASGITransport to the app that mounts the emulator.
        """
        self._given_client = client

    # --- faults ------------------------------------------------------------------------

    def set_faults(self, **changes) -> None:
        self.faults = self.faults.changed(changes)

    # --- transactions ------------------------------------------------------------------

    def transactions(self) -> list[Transaction]:
        """Every transaction, oldest first."""
        return list(self._transactions.values())

    def transaction(self, merchant_oid: str) -> Transaction | None:
        return self._transactions.get(merchant_oid)

    def by_token(self, token: str) -> Transaction | None:
        oid = self._oid_by_token.get(token)
        return self._transactions.get(oid) if oid else None

    def add(self, transaction: Transaction) -> Transaction:
        """Record a new order; an iframe order also gets the token of its payment page."""
        if transaction.merchant_oid in self._transactions:
            raise ValueError(f"merchant_oid {transaction.merchant_oid} already used")
        if transaction.api == "iframe":
            transaction.token = secrets.token_urlsafe(24)
            self._oid_by_token[transaction.token] = transaction.merchant_oid
        self._transactions[transaction.merchant_oid] = transaction
        self.save()
        return transaction

    def decide(self, transaction: Transaction, card: Card, decline: Decline | None, *,
               store_card: bool = False, utoken: str = "") -> None:
        """Settle a payment, store its card if asked and it went through, and send the callback.

        Callers check `transaction.decided` without awaiting in between, so a token
        cannot be paid twice even by concurrent requests.
        """
        if transaction.decided:
            raise ValueError(f"{transaction.merchant_oid} was already decided")
        transaction.card = card
        transaction.decline = decline
        transaction.status = "failed" if decline else "success"
        transaction.decided_at = utcnow()
        if store_card and decline is None:
            transaction.utoken = self.store_card(card, utoken).utoken
        self.save()
        self._start_deliveries(transaction, copies=self.faults.duplicate_callbacks)

    def refund(self, transaction: Transaction, amount: int, reference_no: str) -> Refund:
        # Like PayTR, no deduplication by reference_no: only the refundable balance limits refunds.
        if not 0 < amount <= transaction.refundable:
            raise ValueError("amount exceeds what is still refundable")
        refund = Refund(amount=amount, at=utcnow(), reference_no=reference_no)
        transaction.refunds.append(refund)
        self.save()
        return refund

    def resend(self, transaction: Transaction) -> None:
        """The operator's "Send callback again": a new delivery replaces any still retrying."""
        if not transaction.decided:
            raise ValueError(f"{transaction.merchant_oid} has no outcome to send yet")
        for task, oid in list(self._deliveries.items()):
            if oid == transaction.merchant_oid:
                task.cancel()
        self._start_deliveries(transaction, copies=1)

    # --- stored cards ------------------------------------------------------------------

    def store_card(self, card: Card, utoken: str = "") -> StoredCard:
        """Store a card under `utoken` (a new user when empty) with its own ctoken."""
        utoken = utoken or secrets.token_hex(16)
        stored = StoredCard(utoken=utoken, ctoken=secrets.token_hex(16), card=card, stored_at=utcnow())
        self._cards.setdefault(utoken, {})[stored.ctoken] = stored
        self.save()
        return stored

    def knows_user(self, utoken: str) -> bool:
        return utoken in self._cards

    def cards_of(self, utoken: str) -> list[StoredCard]:
        return list(self._cards.get(utoken, {}).values())

    def stored_card(self, utoken: str, ctoken: str) -> StoredCard | None:
        return self._cards.get(utoken, {}).get(ctoken)

    def stored_cards(self) -> dict[str, list[StoredCard]]:
        return {utoken: list(cards.values()) for utoken, cards in self._cards.items() if cards}

    def delete_card(self, utoken: str, ctoken: str) -> bool:
        deleted = self._cards.get(utoken, {}).pop(ctoken, None) is not None
        self.save()
        return deleted

    def set_card_outcome(self, card_number_or_last4: str, outcome: str) -> None:
        """Program how charges of a stored card end, until changed (full number beats last 4)."""
        digits = card_number_or_last4.replace(" ", "")
        if not (digits.isdigit() and (len(digits) == 4 or 12 <= len(digits) <= 19)):
            raise ValueError(_("Give a card number or its last 4 digits."))
        if outcome not in OUTCOMES:
            raise ValueError(_("%(name)s must be one of %(choices)s", name="outcome", choices=", ".join(OUTCOMES)))
        self._card_outcomes[digits] = outcome
        self.save()

    def card_outcome(self, card: Card) -> str:
        return self._card_outcomes.get(card.number) or self._card_outcomes.get(card.last4) or "success"

    # --- callbacks ---------------------------------------------------------------------

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Return once no delivery is pending; TimeoutError if one is still retrying after `timeout`."""
        async with asyncio.timeout(timeout):
            while self._deliveries:
                await asyncio.wait(set(self._deliveries))

    async def aclose(self) -> None:
        """Stop every delivery and close the client the emulator created (a given one is the host's)."""
        deliveries = list(self._deliveries)
        for task in deliveries:
            task.cancel()
        await asyncio.gather(*deliveries, return_exceptions=True)
        if self._dirty:
            self._write()
        if self._own_client is not None:
            await self._own_client.aclose()
            self._own_client = None

    def _client(self) -> httpx.AsyncClient:
        if self._given_client is not None:
            return self._given_client
        if self._own_client is None:
            self._own_client = httpx.AsyncClient(timeout=self.config.callback_timeout)
        return self._own_client

    def _start_deliveries(self, transaction: Transaction, copies: int) -> None:
        faults = self.faults  # a delivery keeps the faults of the moment it started
        for _ in range(copies):
            transaction.deliveries += 1
            task = asyncio.create_task(self._deliver(transaction, transaction.deliveries, faults))
            self._deliveries[task] = transaction.merchant_oid
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task) -> None:
        self._deliveries.pop(task, None)

    async def _deliver(self, transaction: Transaction, delivery: int, faults: Faults) -> None:
        """POST the callback until the merchant answers exactly OK, backing off between attempts."""
        form = transaction.callback_form(self.config)
        if faults.callback_delay:
            await asyncio.sleep(faults.callback_delay)
        failures = 0
        while True:
            if failures < faults.drop_first:
                attempt = Attempt(at=utcnow(), delivery=delivery, answer="dropped (drop_first fault), not sent")
            else:
                attempt = await self._attempt(form, delivery)
            transaction.attempts.append(attempt)
            self.save()
            if attempt.delivered:
                return
            await asyncio.sleep(min(self.config.retry_base * 2 ** min(failures, _MAX_DOUBLINGS),
                                    self.config.retry_max))
            failures += 1

    async def _attempt(self, form: dict, delivery: int) -> Attempt:
        at = utcnow()
        try:
            # asyncio.timeout also bounds transports that ignore httpx's timeout (ASGITransport).
            async with asyncio.timeout(self.config.callback_timeout):
                response = await self._client().post(self.config.notification_url, data=form,
                                                     timeout=self.config.callback_timeout)
        except TimeoutError:
            return Attempt(at=at, delivery=delivery, answer=f"timeout after {self.config.callback_timeout:g}s")
        except Exception as error:  # noqa: BLE001 - any failure is a failed attempt PayTR would retry
            return Attempt(at=at, delivery=delivery, answer=f"{type(error).__name__}: {error}"[:200])
        # PayTR counts a callback as received only when the answer is exactly "OK".
        delivered = response.status_code == 200 and response.content == b"OK"
        return Attempt(at=at, delivery=delivery, answer=f"HTTP {response.status_code}",
                       body=response.text[:200], delivered=delivered)


def create_emulator(config: EmulatorConfig, *, callback_client: httpx.AsyncClient | None = None,
                    state_path: Path | None = None) -> Starlette:
    """The emulator as an ASGI app; `app.state.emulator` is its `Emulator`."""
    emulator = Emulator(config, callback_client=callback_client, state_path=state_path)

    @asynccontextmanager
    async def lifespan(app):
        # Runs only when served on its own; a host that mounts the emulator calls aclose() itself.
        yield
        await emulator.aclose()

    app = Starlette(routes=emulator_api.routes + emulator_pages.routes + emulator_assets.routes, lifespan=lifespan)
    app.state.emulator = emulator
    app.state.templates = emulator_pages.make_templates()
    return app


def run_standalone(host: str, port: int, config: EmulatorConfig) -> None:
    uvicorn.run(create_emulator(config), host=host, port=port)
