"""The card saved at PayTR for automatic renewal.

PayTR keeps the card; we keep only its user token (`utoken`) on the company.
What the customer sees about the card (brand, last four, expiry) is read from
PayTR's card list when needed, never stored here.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils import Database

from billing import accounts, clock, events, mail, plans, subscriptions
from billing.db import one, write
from billing.paytr.client import PaytrClient
from billing.settings import Settings


def describe(card: dict) -> dict:
    brand = (card.get("c_brand") or card.get("schema") or "card").strip()
    month, year = str(card.get("month") or ""), str(card.get("year") or "")
    return {"brand": brand[:1].upper() + brand[1:], "last4": str(card.get("last_4") or "")[-4:],
            "expiry": f"{month.zfill(2)}/{year[-2:]}" if month and year else "", "bank": card.get("c_bank") or ""}


def label(card: dict) -> str:
    return f"{card['brand']} ending {card['last4']}" if card.get("last4") else card.get("brand", "card")


async def saved_card(client: PaytrClient, utoken: str) -> dict | None:
    """The saved card as PayTR lists it, or None if PayTR has none for this user."""
    cards = await client.list_cards(utoken)
    return describe(cards[0]) if cards else None


async def remove_at_paytr(client: PaytrClient, utoken: str) -> str:
    """Delete every card PayTR keeps for this user; returns how the card was called."""
    cards = await client.list_cards(utoken)
    for card in cards:
        await client.delete_card(utoken, card["ctoken"])
    return label(describe(cards[0])) if cards else ""


def forget(db: Database, now: datetime, settings: Settings, user: dict, card_label: str) -> None:
    """The card is gone at PayTR: stop automatic renewal and tell the owner."""
    with write(db):
        db.conn.execute("UPDATE companies SET paytr_utoken = NULL, card_ip = NULL WHERE id = ?", [user["company_id"]])
        # the renewal notices change from "we will charge your card" to a pay link
        db.conn.execute("UPDATE subscriptions SET next_action_at = ? WHERE company_id = ?",
                        [clock.iso(now), user["company_id"]])
        company = accounts.company(db, user["company_id"])
        sub = subscriptions.for_company(db, company["id"])
        events.record(db, now, "card.removed", f"{user['name']} removed the saved card {card_label}".strip(),
                      company_id=company["id"], actor=events.user_actor(user))
        owner = one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                    [company["id"]])
        if owner:
            mail.enqueue(db, now, settings, template="card_removed", to=owner["email"],
                         dedupe_key=f"card-removed:{company['id']}:{now.isoformat()}", company_id=company["id"],
                         context={"name": owner["name"], "company": company["name"], "card_label": card_label,
                                  "removed_by": user["name"], "plan_name": plans.get(sub["plan"]).name,
                                  "period_end": sub["current_period_end"] if subscriptions.is_paid(sub) else None,
                                  "tz": company["timezone"], "dashboard_url": settings.url("/billing/")})
