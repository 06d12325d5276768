"""The mail server is down during a callback storm. Payments do not care: every callback
is answered OK, and the receipts wait in the outbox with the error that kept them. Once
the mail server is back, `send-mail --retry-now` delivers every waiting email exactly once."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from conftest import SmtpSink

from .support import Shot, encode, fire, fresh_port, query, seed_orders, success_form, wait_until

pytestmark = pytest.mark.slow

ORDERS = 50
COPIES = 3


class SmtpSinkOnPort(SmtpSink):
    """The shared aiosmtpd sink, listening on a port chosen before it starts."""

    def __init__(self, port: int):
        super().__init__()
        self.port = self.controller.port = port


def test_a_mail_outage_never_fails_a_callback_and_the_mail_goes_out_once_it_is_back(make_app, password_hash):
    smtp_port = fresh_port()  # nothing listens here until the sink starts
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_port, SMTP_TLS="none")
    orders = seed_orders(app.settings, ORDERS, password_hash, tag="mail")
    app.start()

    shots = [Shot(encode(success_form(app.settings, o.payment)), label=o.oid) for o in orders for _ in range(COPIES)]
    random.Random(7).shuffle(shots)
    answers = fire(app.callback_url, shots, concurrency=50)
    not_ok = [a for a in answers if (a.status, a.body) != (200, b"OK")]
    assert not not_ok, f"{len(not_ok)} answers were not exactly 200 OK: {not_ok[:5]}\n{app.tail()}"

    db = app.database_path
    assert query(db, "SELECT count(*) AS n FROM payments WHERE status = 'succeeded'")[0]["n"] == ORDERS

    def receipts_tried():
        rows = query(db, "SELECT * FROM outbox WHERE template = 'payment_succeeded'")
        return rows if len(rows) == ORDERS and all(r["attempts"] >= 1 and r["last_error"] for r in rows) else None

    # The app's own sender tries right after the storm and fails: the rows wait, with the reason.
    receipts = wait_until(receipts_tried, 60, "the sender to try every receipt", details=app.tail)
    assert {r["status"] for r in receipts} == {"pending"}
    assert {r["sent_at"] for r in receipts} == {None}
    assert all("refused" in r["last_error"].lower() or "errno" in r["last_error"].lower() for r in receipts), \
        receipts[0]["last_error"]
    outbox = query(db, "SELECT * FROM outbox ORDER BY id")
    assert Counter(r["template"] for r in outbox) == {"welcome": ORDERS, "payment_succeeded": ORDERS}
    assert {r["status"] for r in outbox} == {"pending"}

    sink = SmtpSinkOnPort(smtp_port).start()
    try:
        result = app.cli("send-mail", "--retry-now")
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"

        def details() -> str:
            return f"{result.stdout}\n{result.stderr}\n{app.tail()}"

        wait_until(lambda: len(sink.received()) >= len(outbox), 30, "every email to reach the mail server",
                   details=details)
        wait_until(lambda: {r["status"] for r in query(db, "SELECT status FROM outbox")} == {"sent"}, 30,
                   "every outbox row to be marked sent", details=details)
        messages = sink.received()
    finally:
        sink.stop()

    # Each email arrived exactly once: one message per outbox row, none twice.
    assert len(messages) == len(outbox)
    expected = Counter((r["to_addr"], r["template"]) for r in outbox)
    assert Counter((m["To"], m["X-Billing-Template"]) for m in messages) == expected
    assert len({m["Message-ID"] for m in messages}) == len(messages)
    owners = {o.user["email"] for o in orders}
    assert {m["To"] for m in messages if m["X-Billing-Template"] == "payment_succeeded"} == owners
    assert app.running, app.tail()
