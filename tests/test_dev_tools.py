"""The development helpers a person trying the app leans on: the staff's test clock and the
captured mail viewer. Each tells the truth about what happened, in the app's own time."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from billing import accounts
from billing.app import create_app
from billing.clock import FixedClock
from conftest import START, login, make_settings, post, register, visible, wait_for


def test_the_test_clock_reports_the_emails_its_move_queued(tmp_path, password_hash):
    # The real clock, so the test clock's offset moves billing's "now" (as in the server).
    app = create_app(make_settings(tmp_path))
    with TestClient(app, base_url="http://testserver") as customer:
        register(customer)  # a 14-day trial: its reminder is due 7 days before the end
        accounts.create_staff(app.state.store.db(), START, email="ops@example.com", name="Ops",
                              password_hash=password_hash)
        staff = TestClient(app, base_url="http://testserver")
        login(staff, email="ops@example.com")
        moved = visible(post(staff, "/admin/clock", {"advance": "8d", "action": "advance"},
                             token_from="/admin/clock"))
        # Counted when queued, not when sent: the sender delivers it a moment after the page answers.
        assert "1 email queued; it appears in Dev mail within seconds" in moved
        assert "1 subscription looked at" in moved and "0 card charges started" in moved
        wait_for(lambda: "Your PayTR Billing trial ends in 6 days" in visible(staff.get("/dev/mail")),
                 message="the trial reminder in Dev mail")

        # A move that queues nothing says so, and the emails already sent are not counted again.
        again = visible(post(staff, "/admin/clock", {"advance": "1h", "action": "advance"},
                             token_from="/admin/clock"))
        assert "0 emails queued; they appear in Dev mail within seconds" in again


def test_dev_mail_shows_times_in_the_app_time_zone_and_names_it(client):
    register(client)  # at START, 09:00 UTC: 12:00 in Istanbul
    page = wait_for(lambda: (p := client.get("/dev/mail")) and "/dev/mail/" in p.text and p,
                    message="the welcome email to be captured")
    text = visible(page)
    assert "Times are in Europe/Istanbul, the app's time zone." in text
    assert "27 November 2026, 12:00" in text and "09:00" not in text
    message_id = re.search(r'href="/dev/mail/(\d+)"', page.text).group(1)
    message = visible(client.get(f"/dev/mail/{message_id}"))
    assert "Sent 27 November 2026, 12:00 (Europe/Istanbul)" in message


def test_dev_mail_follows_the_configured_time_zone(tmp_path):
    # The same TIMEZONE setting the app's pages use, not a zone of the viewer's own.
    app = create_app(make_settings(tmp_path, TIMEZONE="America/New_York"), clock=FixedClock(START))
    with TestClient(app, base_url="http://testserver") as client:
        register(client)
        page = wait_for(lambda: (p := client.get("/dev/mail")) and "/dev/mail/" in p.text and p,
                        message="the welcome email to be captured")
        text = visible(page)
        assert "Times are in America/New_York" in text and "27 November 2026, 04:00" in text

