"""A company's saved cards, for the pages that show or use them.

Pages that show cards read the stored list (`cards.box`): no page view calls PayTR. There is
no separate card page: the dashboard's card box is the wallet, and the owner's actions on it
(choose, remove: billing/web/subscription.py) list live, because acting on a card PayTR no
longer has must be caught before it happens; each list refreshes the store. The one page that
lists is a payment's result page while the card just saved is not yet known (once per saving
payment: the list clears the mark). Listing is a call to PayTR: made here, in the request,
before the worker thread records what it found (`cards.sync`), so no transaction waits on the
network.
"""

from __future__ import annotations

from starlette.requests import Request

from billing import accounts, cards
from billing.paytr.client import PaytrError
from billing.web.common import now, run, settings


async def listed(request: Request, company: dict) -> tuple[dict, list[dict]]:
    """PayTR's card list for the company, recorded; (the company as it is now, the list).
    A card saved with a payment since the last list becomes the one renewals charge."""
    found = await request.app.state.paytr.list_cards(company["paytr_utoken"])
    return await run(request, cards.sync, now(request), company, found), found


async def card_box(request: Request, company: dict) -> dict:
    """What the dashboard's card box shows (see cards.box), from the stored list: no PayTR call."""
    empty = {"card": None, "other_cards": [], "missing_card": None, "cards_pending": False}
    if not settings(request).paytr_recurring or not company.get("paytr_utoken"):
        return empty
    return {**empty, **await run(request, cards.box, company)}


async def after_saving_payment(request: Request, payment: dict) -> dict | None:
    """Right after a payment that saved a card: learn which card it was (the callback does not
    say), so the result page can name it. None while there is nothing to learn or PayTR is slow."""
    if payment["status"] != "succeeded" or payment["method"] != "direct":
        return None
    company = await run(request, accounts.company, payment["company_id"])
    if company.get("card_saved_by") != payment["merchant_oid"] or not company.get("paytr_utoken"):
        return None  # already learnt (or another payment saved a card since)
    try:
        company, _found = await listed(request, company)
    except PaytrError:
        return None  # the dashboard or the next renewal learns it instead
    return {"label": cards.shown(company["paytr_card_label"])} if company.get("paytr_card_label") else None
