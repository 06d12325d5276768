"""What one move of the test clock set going, for the test clock page's report.

The tick that follows a move queues emails and starts renewal charges, but in the server the
mail sender and the charge lane do the sending a few seconds later, in the background. So the
report counts what the move queued (rows added to the outbox and to payments since just before
it), not what had left by the time the page answered: "0 emails sent" read as "nothing happened".
"""

from __future__ import annotations

from billing.db import scalar


def mark(db) -> dict:
    """The newest outbox and payment rows before the move."""
    return {
        "outbox": scalar(db, "SELECT coalesce(max(id), 0) FROM outbox"),
        "payments": scalar(db, "SELECT coalesce(max(id), 0) FROM payments"),
    }


def since(db, before: dict) -> dict:
    """Emails queued and saved-card charges started after `before` (by the move's tick)."""
    return {
        "emails_queued": scalar(db, "SELECT count(*) FROM outbox WHERE id > ?", [before["outbox"]]),
        "charges_started": scalar(db, "SELECT count(*) FROM payments WHERE id > ? AND method = 'recurring'",
                                  [before["payments"]]),
    }
