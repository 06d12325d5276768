"""The example host in examples/host.py does what the README's "Connect your product" says,
against the real app: create a customer at sign-up (safely retried), gate on entitlements
(polled with an ETag), report usage, open billing with a portal link, and keep entitlements
fresh from verified webhooks."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn

from api_support import make_key
from billing.notify import webhooks
from conftest import START, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def load_example():
    spec = importlib.util.spec_from_file_location("example_host", ROOT / "examples" / "host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


host = load_example()


@pytest.fixture
def billing(app, client):
    # The example's client, speaking to the app in-process through the test client.
    return host.BillingClient("http://testserver", make_key(app), http=client)


def test_sign_up_gate_report_usage_and_open_billing(billing, client, db):
    customer = billing.create_customer("usr_8f3a", "Ege Bulut Ltd.", "deniz@example.com", owner_name="Deniz Aydın")
    again = billing.create_customer("usr_8f3a", "Ege Bulut Ltd.", "deniz@example.com", owner_name="Deniz Aydın")
    assert again["id"] == customer["id"]  # a retried sign-up is the same customer
    assert billing.customer_for("usr_8f3a")["id"] == customer["id"]
    assert billing.customer_for("nobody") is None

    first = billing.entitlements(customer["id"])
    assert first["access"] is True and first["limits"]["workspaces"] == 5
    assert host.may_create_workspace(first)
    assert billing.entitlements(customer["id"]) == first  # answered 304 from the copy

    billing.report_usage(customer["id"], workspaces=5, storage_bytes=1_000)
    full = billing.entitlements(customer["id"])
    assert full["usage"]["workspaces"] == 5 and not host.may_create_workspace(full)

    with pytest.raises(host.BillingError) as refused:
        billing.create_customer("usr_other", "Other", "deniz@example.com")
    assert refused.value.problem["status"] == 409

    url = billing.portal_link(customer["id"], "https://app.example.com/settings")
    page = client.get(url.removeprefix("http://testserver"), follow_redirects=True)
    assert page.status_code == 200 and "Back to" in page.text and "Ege Bulut Ltd." in page.text


class Served:
    """The example host's own app on a real port, as the billing app's webhooks reach it."""

    def __init__(self, app, port: int):
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def test_webhooks_keep_the_hosts_entitlements_fresh(app, client, db, settings, billing):
    port = free_port()
    _endpoint, secret = webhooks.add(db, START, settings, f"http://127.0.0.1:{port}/webhooks")
    inbox = host.WebhookInbox(secret)
    with Served(host.create_host_app(billing, inbox, "https://app.example.com"), port) as served:
        customer = billing.create_customer("usr_1", "Ege Bulut Ltd.", "deniz@example.com")

        # Events are delivered one by one, in any order: wait until both the host needs are in.
        wait_for(lambda: {"customer.created", "entitlements.updated"} <= {e["type"] for e in inbox.events},
                 timeout=30, message="customer.created and entitlements.updated reached the host")
        sequence, held = inbox.entitlements[customer["id"]]
        assert held["access"] is True and held["plan"] == "starter"

        # The host's "Billing" button: a redirect to a fresh portal link.
        opened = httpx.get(f"http://127.0.0.1:{served.port}/billing/{customer['id']}", timeout=10)
        assert opened.status_code == 303 and "/portal/" in opened.headers["location"]

        # An unsigned or forged request is turned away and changes nothing.
        forged = httpx.post(f"http://127.0.0.1:{served.port}/webhooks", content=b'{"type":"x"}', timeout=5,
                            headers={"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())),
                                     "webhook-signature": "v1,AAAA"})
        assert forged.status_code == 400
        assert inbox.entitlements[customer["id"]] == (sequence, held)

        # An event older than what the host holds (delivery order is not guaranteed) is kept in
        # the log but does not replace the newer entitlements.
        stale = {**held, "access": False}
        body = json.dumps({"id": "evt_old", "type": "entitlements.updated", "created_at": "2026-11-27T09:00:00Z",
                           "data": {"id": customer["id"], "entitlements": stale}, "sequence": sequence - 1})
        stamp = datetime.now(UTC)
        signed = {"webhook-id": "evt_old", "webhook-timestamp": str(int(stamp.timestamp())),
                  "webhook-signature": host.Webhook(secret).sign("evt_old", stamp, body)}
        assert httpx.post(f"http://127.0.0.1:{served.port}/webhooks", content=body, headers=signed,
                          timeout=5).status_code == 204
        assert inbox.entitlements[customer["id"]] == (sequence, held)
