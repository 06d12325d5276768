"""An example host product: what a SaaS team adds to its own app to use PayTR Billing.

It is small on purpose; copy the parts you need. It shows the whole integration:

1. at sign-up, create the billing customer with your own user id as `external_id`;
2. gate features on `entitlements.access` and `limits` (polled cheaply with an ETag, and kept
   fresh by the `entitlements.updated` webhook);
3. report usage when it changes;
4. send the user into billing with a portal link and take them back;
5. receive webhooks, verified with the `standardwebhooks` package, ignoring stale ones.

Run it beside the billing app:

    BILLING_URL=http://127.0.0.1:8000 BILLING_API_KEY=bk_test_... \
    BILLING_WEBHOOK_SECRET=whsec_... python examples/host.py --port 9000

and add its webhook endpoint in billing (`python main.py webhook add http://127.0.0.1:9000/webhooks`).
"""

from __future__ import annotations

import argparse
import os
import threading

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


class BillingError(Exception):
    """The billing API refused a request; `problem` is its RFC 9457 body."""

    def __init__(self, problem: dict):
        super().__init__(f"{problem.get('status')} {problem.get('title')}: {problem.get('detail')}")
        self.problem = problem


class BillingClient:
    """The billing API as the host calls it: a key, a timeout, and problem details on errors."""

    def __init__(self, base_url: str, api_key: str, *, http: httpx.Client | None = None):
        # Always with a timeout: a billing outage must not hang your sign-up page.
        self.http = http or httpx.Client(base_url=base_url, timeout=10.0)
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self._entitlements: dict[str, tuple[str, dict]] = {}  # customer -> (ETag, body)

    def _call(self, method: str, path: str, *, headers: dict | None = None, **kwargs) -> httpx.Response:
        response = self.http.request(method, "/api/v1" + path, headers={**self.auth, **(headers or {})}, **kwargs)
        if response.status_code >= 400:
            raise BillingError(response.json())
        return response

    def create_customer(self, external_id: str, name: str, email: str, *, idempotency_key: str | None = None,
                        **extra) -> dict:
        """Call at your sign-up. A retry with the same Idempotency-Key gets the same answer."""
        headers = {"Idempotency-Key": idempotency_key or f"signup-{external_id}"}
        body = {"external_id": external_id, "name": name, "email": email, **extra}
        return self._call("POST", "/customers", json=body, headers=headers).json()

    def customer_for(self, external_id: str) -> dict | None:
        found = self._call("GET", "/customers", params={"external_id": external_id}).json()["data"]
        return found[0] if found else None

    def entitlements(self, customer: str) -> dict:
        """Poll cheaply: a 304 answer means the copy we hold is still right."""
        etag, cached = self._entitlements.get(customer, (None, None))
        headers = {"If-None-Match": etag} if etag else {}
        response = self._call("GET", f"/customers/{customer}/entitlements", headers=headers)
        if response.status_code == 304:
            return cached
        body = response.json()
        self._entitlements[customer] = (response.headers.get("ETag"), body)
        return body

    def report_usage(self, customer: str, workspaces: int, storage_bytes: int) -> dict:
        return self._call("PUT", f"/customers/{customer}/usage",
                          json={"workspaces": workspaces, "storage_bytes": storage_bytes}).json()

    def portal_link(self, customer: str, return_url: str, *, plan: str | None = None) -> str:
        body = {"customer": customer, "return_url": return_url}
        if plan:
            body |= {"flow": "subscribe", "plan": plan}
        return self._call("POST", "/portal-sessions", json=body).json()["url"]


def may_create_workspace(entitlements: dict) -> bool:
    """The check a host makes before letting a customer add a workspace."""
    if not entitlements["access"]:
        return False
    allowed = entitlements["limits"]["workspaces"]  # None: unlimited
    used = entitlements["usage"]["workspaces"] or 0
    return allowed is None or used < allowed


class WebhookInbox:
    """Verified events, keeping per customer the newest entitlements by `sequence`
    (delivery order is not guaranteed, and an event may arrive twice)."""

    def __init__(self, secret: str):
        self.verifier = Webhook(secret)
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.events: list[dict] = []
        self.entitlements: dict[str, tuple[int, dict]] = {}

    def receive(self, body: bytes, headers: dict) -> dict:
        event = self.verifier.verify(body, headers)  # raises WebhookVerificationError
        with self.lock:
            if event["id"] in self.seen:
                return event  # a retry of one we already have: answer 2xx, do nothing
            self.seen.add(event["id"])
            self.events.append(event)
            data = event["data"]
            snapshot = data.get("entitlements") if isinstance(data.get("entitlements"), dict) else None
            if snapshot is None and "access" in data:
                snapshot = data
            if snapshot is not None:
                customer = snapshot["customer"]
                held = self.entitlements.get(customer)
                if held is None or held[0] < event["sequence"]:
                    self.entitlements[customer] = (event["sequence"], snapshot)
        return event


def create_host_app(client: BillingClient, inbox: WebhookInbox, public_url: str) -> Starlette:
    async def webhooks(request: Request) -> Response:
        body = await request.body()
        try:
            inbox.receive(body, dict(request.headers))
        except WebhookVerificationError:
            return Response(status_code=400)
        return Response(status_code=204)

    async def open_billing(request: Request) -> Response:
        customer = request.path_params["customer"]
        # The client is synchronous: call it off the event loop.
        url = await run_in_threadpool(client.portal_link, customer, public_url + "/")
        return RedirectResponse(url, status_code=303)

    async def home(request: Request) -> Response:
        return JSONResponse({"customers": {c: e for c, (_, e) in inbox.entitlements.items()}})

    return Starlette(routes=[Route("/webhooks", webhooks, methods=["POST"]), Route("/", home),
                             Route("/billing/{customer}", open_billing)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    client = BillingClient(os.environ["BILLING_URL"], os.environ["BILLING_API_KEY"])
    inbox = WebhookInbox(os.environ["BILLING_WEBHOOK_SECRET"])
    uvicorn.run(create_host_app(client, inbox, f"http://127.0.0.1:{args.port}"), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
