"""What one move of the test clock set going, for the test clock page's report.

The tick that follows a move queues emails and starts renewal charges, but in the server the
mail sender and the charge lane do the sending a few seconds later, in the background. So the
report counts what the move queued (rows added to the outbox and to payments since just before
it), not what had left by the time the page answered: "0 emails sent" read as "nothing happened".
"""

from __future__ import annotations


def mark(db) -> dict:
    """The newest outbox and payment rows before the move."""
    return {
        "outbox": db.conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0],
        "payments": db.conn.execute("SELECT coalesce(max(id), 0) FROM payments").fetchone()[0],
    }


def since(db, before: dict) -> dict:
    """Emails queued and saved-card charges started after `before` (by the move's tick)."""
    return {
        "emails_queued": db.conn.execute("SELECT count(*) FROM outbox WHERE id > ?",
                                         [before["outbox"]]).fetchone()[0],
        "charges_started": db.conn.execute("SELECT count(*) FROM payments WHERE id > ? AND method = 'recurring'",
                                           [before["payments"]]).fetchone()[0],
    }
