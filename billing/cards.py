"""The cards saved at PayTR, and the one renewals charge.

PayTR keeps the cards under one user token (`utoken`, on the company); each card has its
own `ctoken`. We keep the ctoken of the card renewals charge (`companies.paytr_ctoken`, with
its label for when PayTR no longer lists it) and the ctokens PayTR listed last time
(`paytr_cards`). The renewal card's expiry month (`companies.card_expires`, '2027-03') is
recorded whenever PayTR's list is, so the console can find "card expiring" customers by an
index.

No page view asks PayTR: listing is a network call, and at 100,000 companies a dashboard that
listed on every view would be PayTR's load, not ours. Whenever the app lists anyway (a charge,
the owner choosing or removing a card, the result page of a payment that saved one) `sync`
records each card's details (brand, last four, expiry, bank) and `companies.cards_listed_at`;
pages read them (`box`). The tick's `refresh_due` keeps the lists that matter fresh: a card
just saved whose details are unknown, and a renewal due within a few days, at most once a day
and a bounded number per tick.

PayTR's callback after a payment that saved a card brings the utoken but not the card's
ctoken. So the payment only marks the company (`card_saved_by`, its merchant_oid), and the
next time anyone lists the cards (the payment's result page, the dashboard, a renewal
charge) `sync` finds the card that was not there before and makes it the one renewals
charge. Listing is network I/O: it happens before the write that records it, never inside
a transaction and never in the callback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import datetime, timedelta

import anyio.to_thread

from sqlite_utils import Database

from billing import accounts, clock, events, mail, plans, subscriptions
from billing.db import one, rows, write
from billing.i18n import gettext as _
from billing.settings import Settings

log = logging.getLogger("billing.cards")

# The mark of cards saved before the chosen card existed: renewals charged PayTR's first card.
FIRST_LISTED = "first-listed"

# The tick's refresh of stored card lists (refresh_due). A list is refreshed at most once a day,
# and only when it matters: renewals due within RENEWAL_WINDOW, or details unknown.
REFRESH_AGE = timedelta(days=1)
RENEWAL_WINDOW = timedelta(days=3)
# A failed list (PayTR slow or refusing) is asked again after this, not on every tick.
REFRESH_RETRY = timedelta(hours=1)
# At most this many PayTR list calls per tick: at the default 60-s tick that is 28,800 a day,
# well above the ~1/30 of card-holding companies renewing each day (about 3,300 at 100,000
# customers), while one tick adds at most a few seconds of calls, 8 at a time; the one-off
# backfill after m024 (every saved card's details) spreads over a day or two instead of one
# tick calling PayTR 60,000 times.
REFRESH_PER_TICK = 20
REFRESH_CONCURRENCY = 8


class CardError(Exception):
    """The owner's change to the saved cards cannot be made; the message says why."""


def describe(card: dict) -> dict:
    brand = (card.get("c_brand") or card.get("schema") or "card").strip()
    month, year = str(card.get("month") or ""), str(card.get("year") or "")
    return {"ctoken": card.get("ctoken") or "", "brand": brand[:1].upper() + brand[1:],
            "last4": str(card.get("last_4") or "")[-4:],
            "expiry": f"{month.zfill(2)}/{year[-2:]}" if month and year else "", "expires": expiry_month(card),
            "bank": card.get("c_bank") or ""}


def expiry_month(card: dict | None) -> str | None:
    """'2027-03' from a card in PayTR's list (month "03", year "27" or "2027"); None if it has none."""
    if not card:
        return None
    month, year = str(card.get("month") or "").strip(), str(card.get("year") or "").strip()
    if not (month.isdigit() and year.isdigit() and 1 <= int(month) <= 12 and len(year) in (2, 4)):
        return None
    return f"{int(year) + 2000 if len(year) == 2 else int(year):04d}-{int(month):02d}"


def label(card: dict) -> str:
    """The card's name as stored (companies.paytr_card_label, events): always in English."""
    return f"{card['brand']} ending {card['last4']}" if card.get("last4") else card.get("brand", "card")


_STORED_LABEL = re.compile(r"^(?P<brand>.+) ending (?P<last4>\d{4})$")


def shown(stored: str | None) -> str | None:
    """A stored label ("Visa ending 4242") in the reader's language."""
    if not stored:
        return stored
    found = _STORED_LABEL.match(stored)
    if found:
        return _("%(brand)s ending %(last4)s", brand=found["brand"], last4=found["last4"])
    return _("Saved card") if stored in ("card", "Card", "saved card", "Saved card") else stored


def renews_by_card(company: dict) -> bool:
    """Are renewals charged to a saved card: one chosen, or one just saved that the next list names?"""
    return bool(company.get("paytr_utoken") and (company.get("paytr_ctoken") or company.get("card_saved_by")))


def wallet(company: dict, listed: list[dict]) -> dict:
    """What the card box shows from PayTR's list (as PayTR sends it): see `shown_cards`."""
    return shown_cards(company, [describe(c) for c in listed if c.get("ctoken")])


def shown_cards(company: dict, cards: list[dict]) -> dict:
    """The card renewals charge and the company's other saved cards (`cards`: described)."""
    chosen = next((c for c in cards if c["ctoken"] == company.get("paytr_ctoken")), None)
    missing = company.get("paytr_ctoken") and chosen is None
    return {"card": chosen, "other_cards": [c for c in cards if c is not chosen],
            "missing_card": shown(company.get("paytr_card_label")) or _("The chosen card") if missing else None}


def stored(db: Database, company_id: int) -> list[dict]:
    """The cards as PayTR listed them last (described like `describe`), in PayTR's order; a card
    recorded before m024 has no details (brand None) until its next list."""
    found = []
    for row in db.conn.execute("SELECT ctoken, brand, last4, expires, bank FROM paytr_cards WHERE company_id = ? "
                               "ORDER BY position IS NULL, position, first_seen_at, ctoken", [company_id]):
        ctoken, brand, last4, expires, bank = row
        found.append({"ctoken": ctoken, "brand": brand, "last4": last4 or "", "expires": expires,
                      "expiry": _short_expiry(expires), "bank": bank or ""})
    return found


def _short_expiry(expires: str | None) -> str:
    """'03/27' (as PayTR's card shows it) from '2027-03'."""
    return f"{expires[5:7]}/{expires[2:4]}" if expires and len(expires) == 7 else ""


def _from_label(company: dict) -> dict:
    """The chosen card as far as the company's own row knows it (label, expiry), for while its
    details are being fetched."""
    found = _STORED_LABEL.match(company.get("paytr_card_label") or "")
    brand, last4 = (found["brand"], found["last4"]) if found else (shown(company.get("paytr_card_label")) or "", "")
    return {"ctoken": company.get("paytr_ctoken") or "", "brand": brand, "last4": last4,
            "expires": company.get("card_expires"), "expiry": _short_expiry(company.get("card_expires")), "bank": ""}


def box(db: Database, company: dict) -> dict:
    """What the dashboard's card box shows, from the stored list alone (never PayTR).
    `cards_pending`: the details are not known yet (a card just saved, or never listed since
    m024); the tick fetches them within minutes. Until then the chosen card is shown by its
    label, the other cards by what is known, and nothing is called missing."""
    known = stored(db, company["id"])
    if company.get("cards_listed_at"):
        return {**shown_cards(company, known), "cards_pending": False}
    detailed = [c for c in known if c["brand"]]
    chosen = None
    if not company.get("card_saved_by"):  # else the card just saved takes over at the next list
        chosen = next((c for c in detailed if c["ctoken"] == company.get("paytr_ctoken")), None)
        if chosen is None and company.get("paytr_ctoken"):
            chosen = _from_label(company)
    return {"card": chosen, "other_cards": [c for c in detailed if c["ctoken"] != (chosen or {}).get("ctoken")],
            "missing_card": None, "cards_pending": True}


def find(listed: list[dict], ctoken: str) -> dict | None:
    return next((c for c in listed if ctoken and c.get("ctoken") == ctoken), None)


# --- what the callback records ---------------------------------------------------------------


def saved_with_payment(db: Database, now: datetime, payment: dict, utoken: str) -> None:
    """PayTR stored a card with this payment (inside the callback's transaction): mark the
    company so the next card list makes that card the one renewals charge."""
    utoken = utoken[:200]
    company = accounts.company(db, payment["company_id"])
    if company.get("paytr_utoken") != utoken:
        # A new PayTR user: the cards we knew belong to the old one, and it is not charged any more.
        db.conn.execute("DELETE FROM paytr_cards WHERE company_id = ?", [company["id"]])
        db.conn.execute("UPDATE companies SET paytr_ctoken = NULL, paytr_card_label = NULL, card_expires = NULL "
                        "WHERE id = ?", [company["id"]])
    # The new card's details are unknown until the next list (the tick's refresh_due looks first).
    db.conn.execute("UPDATE companies SET paytr_utoken = ?, card_ip = ?, card_saved_by = ?, cards_listed_at = NULL "
                    "WHERE id = ?", [utoken, payment["user_ip"], payment["merchant_oid"], company["id"]])
    events.record(db, now, "card.saved", "Card saved at PayTR; renewals are charged to it from now on",
                  company_id=company["id"], actor="paytr", merchant_oid=payment["merchant_oid"])


# --- keeping up with PayTR's list ------------------------------------------------------------


def sync(db: Database, now: datetime, before: dict, listed: list[dict]) -> dict:
    """Record PayTR's card list, fetched while `before` (the company's row) was current. A card
    saved with a payment since the last list becomes the one renewals charge. Returns the
    company's row as it is now. Always writes (the details and `cards_listed_at`): lists are
    made only by actions, charges and the bounded daily refresh, never by page views."""
    with write(db):
        _sync_in(db, now, accounts.company(db, before["id"]), before, listed)
        return accounts.company(db, before["id"])


def _sync_in(db: Database, now: datetime, company: dict, before: dict, listed: list[dict]) -> bool:
    """`sync` inside the caller's transaction; False when the list is another PayTR user's."""
    if company.get("paytr_utoken") != before.get("paytr_utoken") or not company.get("paytr_utoken"):
        return False  # a payment saved a card under a new PayTR user meanwhile: the next list is its
    tokens = [c["ctoken"] for c in listed if c.get("ctoken")]
    mark = company.get("card_saved_by")
    # A mark set after the list was fetched waits for the next list, which is sure to show its card.
    if mark and mark == before.get("card_saved_by"):
        seen = _seen(db, company["id"])
        new = [c for c in listed if c.get("ctoken") and c["ctoken"] not in seen]
        if not new and mark != FIRST_LISTED:
            # A list made after PayTR stored the card but before its payment was heard of has
            # seen it already: a card first seen once that checkout had begun is the one.
            since = {row[0] for row in db.conn.execute(
                "SELECT ctoken FROM paytr_cards WHERE company_id = ? AND first_seen_at >= "
                "(SELECT created_at FROM payments WHERE merchant_oid = ?)", [company["id"], mark])}
            new = [c for c in listed if c.get("ctoken") in since]
        # Several new cards (two saving payments before any list): PayTR lists cards in the order
        # they were saved, so the last one is the newest.
        pick = listed[:1] if mark == FIRST_LISTED else new[-1:]
        if pick and pick[0].get("ctoken") != company.get("paytr_ctoken"):
            card = describe(pick[0])
            how = ("the first card PayTR lists, as before" if mark == FIRST_LISTED
                   else f"the card saved with payment {mark}")
            _choose_in(db, now, company, card, f"Renewals are charged to {label(card)}, {how}", actor="paytr")
        db.conn.execute("UPDATE companies SET card_saved_by = NULL WHERE id = ?", [company["id"]])
    db.conn.execute("DELETE FROM paytr_cards WHERE company_id = ? AND ctoken NOT IN (SELECT value FROM json_each(?))",
                    [company["id"], json.dumps(tokens)])
    described = [describe(c) for c in listed if c.get("ctoken")]
    db.conn.executemany(
        """INSERT INTO paytr_cards (company_id, ctoken, first_seen_at, brand, last4, expires, bank, position)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (company_id, ctoken) DO UPDATE SET brand = excluded.brand, last4 = excluded.last4,
               expires = excluded.expires, bank = excluded.bank, position = excluded.position""",
        [(company["id"], c["ctoken"], clock.iso(now), c["brand"], c["last4"], c["expires"], c["bank"], i)
         for i, c in enumerate(described)])
    db.conn.execute("UPDATE companies SET cards_listed_at = ? WHERE id = ?", [clock.iso(now), company["id"]])
    _record_expiry(db, company["id"], listed)
    return True


def _record_expiry(db: Database, company_id: int, listed: list[dict]) -> None:
    """The renewal card's expiry month as PayTR lists it now (kept as it was while PayTR's list does
    not show the card: a renewal charged to it fails anyway, and says so)."""
    expires = expiry_month(find(listed, _chosen(db, company_id)))
    if expires:
        db.conn.execute("UPDATE companies SET card_expires = ? WHERE id = ? AND card_expires IS NOT ?",
                        [expires, company_id, expires])


def _chosen(db: Database, company_id: int) -> str | None:
    row = db.conn.execute("SELECT paytr_ctoken FROM companies WHERE id = ?", [company_id]).fetchone()
    return row[0] if row else None


def _seen(db: Database, company_id: int) -> set[str]:
    return {row[0] for row in db.conn.execute("SELECT ctoken FROM paytr_cards WHERE company_id = ?", [company_id])}


def _choose_in(db: Database, now: datetime, company: dict, card: dict, message: str, actor: str) -> None:
    was = renews_by_card(company)
    db.conn.execute("UPDATE companies SET paytr_ctoken = ?, paytr_card_label = ?, card_expires = ? WHERE id = ?",
                    [card["ctoken"], label(card), card.get("expires"), company["id"]])
    events.record(db, now, "card.chosen", message, company_id=company["id"], actor=actor, card=label(card))
    if not was:
        _replan(db, now, company["id"])


def _replan(db: Database, now: datetime, company_id: int) -> None:
    # Renewal notices and charges differ between a card and a pay link: plan them again now.
    db.conn.execute("UPDATE subscriptions SET next_action_at = ? WHERE company_id = ?", [clock.iso(now), company_id])


# --- the owner's changes -----------------------------------------------------------------------


def choose(db: Database, now: datetime, user: dict, before: dict, listed: list[dict], ctoken: str) -> dict:
    """The owner chose which saved card renewals charge (`listed`: PayTR's list, just fetched)."""
    found = find(listed, ctoken)
    if found is None:
        raise CardError(_("That card is no longer saved at PayTR. Here are the cards it has now."))
    card = describe(found)
    with write(db):
        company = accounts.company(db, user["company_id"])
        if not _sync_in(db, now, company, before, listed):
            raise CardError(_("Your saved cards changed a moment ago. Please choose again."))
        company = accounts.company(db, company["id"])
        if company["paytr_ctoken"] != card["ctoken"]:
            _choose_in(db, now, company, card, f"{user['name']} chose {label(card)} for renewals",
                       actor=events.user_actor(user))
    return card


def removed(db: Database, now: datetime, settings: Settings, user: dict, before: dict, listed: list[dict],
            ctoken: str) -> dict:
    """PayTR deleted one card at the owner's request (`listed`: its list before the deletion).
    Renewals charged to it fall back to pay links until the owner chooses another card; the
    last card gone, the PayTR user is forgotten. Returns what the owner is told."""
    card = describe(find(listed, ctoken) or {"ctoken": ctoken})
    remaining = [c for c in listed if c.get("ctoken") != ctoken]
    with write(db):
        company = accounts.company(db, user["company_id"])
        was = renews_by_card(company)
        # PayTR's list before the deletion: a card just saved (the mark) is identified by it even when
        # it is the one removed (pages no longer list, so the owner may remove it before any list).
        in_step = _sync_in(db, now, company, before, listed)
        db.conn.execute("DELETE FROM paytr_cards WHERE company_id = ? AND ctoken = ?", [company["id"], ctoken])
        db.conn.execute("UPDATE companies SET paytr_ctoken = NULL, paytr_card_label = NULL, card_expires = NULL "
                        "WHERE id = ? AND paytr_ctoken = ?", [company["id"], ctoken])
        if in_step and not remaining:
            db.conn.execute("UPDATE companies SET paytr_utoken = NULL, card_ip = NULL, card_saved_by = NULL "
                            "WHERE id = ?", [company["id"]])
        company = accounts.company(db, company["id"])
        if was != renews_by_card(company):
            _replan(db, now, company["id"])
        renewals = (company["paytr_card_label"] or "the card you saved last") if renews_by_card(company) else None
        renewals_shown = (shown(company["paytr_card_label"]) or _("the card you saved last")) if renewals else None
        events.record(db, now, "card.removed", f"{user['name']} removed the saved card {label(card)}",
                      company_id=company["id"], actor=events.user_actor(user), card=label(card))
        sub = subscriptions.for_company(db, company["id"])
        owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                    [company["id"]])
        if owner:
            mail.enqueue(db, now, settings, template="card_removed", to=owner["email"],
                         dedupe_key=f"card-removed:{company['id']}:{ctoken}", company_id=company["id"],
                         context={"name": owner["name"], "company": company["name"], "card_label": label(card),
                                  "removed_by": user["name"], "plan_name": plans.get(db, sub["plan"]).name,
                                  "renewals_card": renewals, "other_cards": len(remaining),
                                  "period_end": sub["current_period_end"] if subscriptions.is_paid(sub) else None,
                                  "tz": company["timezone"], "dashboard_url": settings.url("/billing/")})
    return {"label": shown(label(card)), "renewals_card": renewals_shown, "remaining": len(remaining)}


# --- the tick's refresh ----------------------------------------------------------------------------


# Active subscriptions renewing within the window whose company's card list is a day old or
# unknown. The unary + keeps the planner on subscriptions_renewing (the end's range: a few
# thousand rows at 100,000 customers) instead of a status index (every active subscription).
_RENEWING = """SELECT c.id FROM subscriptions s JOIN companies c ON c.id = s.company_id
               WHERE +s.status = 'active' AND s.current_period_end > :now AND s.current_period_end <= :soon
               AND s.cancel_at_period_end = 0 AND c.paytr_utoken IS NOT NULL
               AND (c.cards_listed_at IS NULL OR c.cards_listed_at <= :stale) AND {free}
               ORDER BY s.current_period_end LIMIT :n"""


def claim_refresh(db: Database, now: datetime, limit: int = REFRESH_PER_TICK) -> list[dict]:
    """Companies whose card list is worth one PayTR call now, leased (`cards_tried_at`) so two
    processes never both list and a failing one waits REFRESH_RETRY. In order: a card just saved
    whose details are unknown; an active subscription renewing within RENEWAL_WINDOW whose list
    is a day old (or unknown); any other company whose details are unknown (after m024)."""
    retry = clock.iso(now - REFRESH_RETRY)
    free = "(c.cards_tried_at IS NULL OR c.cards_tried_at <= :retry)"
    unlisted = f"""SELECT c.id FROM companies c WHERE c.paytr_utoken IS NOT NULL AND c.cards_listed_at IS NULL
                   AND {free} AND (c.card_saved_by IS NULL) = :rest ORDER BY c.card_saved_by IS NULL, c.id LIMIT :n"""
    renewing = _RENEWING.format(free=free)
    args = {"now": clock.iso(now), "soon": clock.iso(now + RENEWAL_WINDOW), "stale": clock.iso(now - REFRESH_AGE),
            "retry": retry}
    with write(db):
        ids: list[int] = []
        for sql, rest in ((unlisted, 0), (renewing, None), (unlisted, 1)):
            if len(ids) >= limit:
                break
            found = db.conn.execute(sql, {**args, "rest": rest, "n": limit}).fetchall()
            ids += [row[0] for row in found if row[0] not in ids][:limit - len(ids)]
        if not ids:
            return []
        claimed = rows(db, "UPDATE companies SET cards_tried_at = ? WHERE id IN (SELECT value FROM json_each(?)) "
                           "RETURNING *", [clock.iso(now), json.dumps(ids)])
    return sorted(claimed, key=lambda c: ids.index(c["id"]))  # in priority order


async def refresh_due(ctx, now: datetime, limit: int = REFRESH_PER_TICK) -> int:
    """The tick's refresh: list the cards of the companies `claim_refresh` picks (at most `limit`),
    record each with `sync`. `ctx`: the jobs' Context (store, settings, paytr). Returns how many
    lists were recorded; a PayTR error for one company is logged and retried later."""
    if ctx.paytr is None or not ctx.settings.paytr_recurring:
        return 0

    async def in_thread(fn, *args):
        store = ctx.store
        return await anyio.to_thread.run_sync(lambda: fn(store.db(), *args))

    claimed = await in_thread(claim_refresh, now, limit)
    gate = asyncio.Semaphore(REFRESH_CONCURRENCY)

    async def refresh(company: dict) -> bool:
        async with gate:
            try:
                listed = await ctx.paytr.list_cards(company["paytr_utoken"])
                await in_thread(sync, now, company, listed)
                return True
            except Exception as exc:  # one company's list must not stop the others, nor the tick
                log.warning("refreshing the saved cards of company %s failed: %s", company["id"], exc)
                return False

    return sum(await asyncio.gather(*(refresh(c) for c in claimed)))
