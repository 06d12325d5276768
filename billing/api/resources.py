"""The API's resources: thin handlers over the domain, and the route table they are listed in.

Every answer about a customer, payment or invoice is built by billing/snapshots.py, the
same code that builds webhook payloads.
"""

from __future__ import annotations

import hashlib
import json

from starlette.requests import Request
from starlette.responses import Response

from billing import entitlements, plans, portal, snapshots, usage
from billing.accounts import FormError
from billing.api import customers, idempotency
from billing.api.app import Endpoint, Param, actor, int_param, json_object, json_response, now, read, run
from billing.api.problems import Problem
from billing.db import one, rows, write
from billing.entitlements import customer_id, parse_customer_id
from billing.i18n import gettext as _

LIMIT_DEFAULT, LIMIT_MAX = 20, 100


def _invalid(exc: FormError) -> Problem:
    return Problem(422, " ".join(str(message) for message in exc.errors.values()), errors=exc.errors)


def _company_id(request: Request) -> int:
    value = request.path_params["customer_id"]
    company_id = parse_customer_id(value)
    if company_id is None:
        raise Problem(404, _("Customer ids look like cus_42; %(value)s is not one.", value=repr(value[:40])))
    return company_id


def _settings(request: Request):
    return request.app.state.settings


def _customer_snapshot(db, at, settings, company_id: int) -> dict | None:
    return snapshots.customer_by_id(db, at, settings, company_id)


async def _customer_or_404(request: Request, company_id: int) -> dict:
    customer = await run(request, _customer_snapshot, now(request), _settings(request), company_id)
    if customer is None:
        raise Problem(404, _("There is no customer %(id)s.", id=customer_id(company_id)))
    return customer


def _list(data: list, has_more: bool) -> dict:
    return {"object": "list", "data": data, "has_more": has_more}


# --- customers -----------------------------------------------------------------------------------


async def create_customer(request: Request) -> Response:
    data = await json_object(request, customers.CREATE_FIELDS)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= idempotency.KEY_MAX):
        raise Problem(422, _("Idempotency-Key must be 1 to %(max)d characters.", max=idempotency.KEY_MAX),
                      errors={"Idempotency-Key": _("1 to %(max)d characters.", max=idempotency.KEY_MAX)})
    try:
        values = customers.check_create(_settings(request), data)
    except FormError as exc:
        raise _invalid(exc) from None
    settings, who = _settings(request), actor(request)
    fingerprint = idempotency.fingerprint("POST", request.url.path, data)

    # Keys are the caller's own: two services with their own API keys may both send "signup-1".
    scoped = f"{request.state.api_key['id']}:{key}" if key is not None else None

    def go(db, at):
        with write(db):
            if scoped is not None:
                stored = idempotency.replay(db, at, scoped, fingerprint)
                if stored is not None:
                    return stored + (True,)
            company_id = customers.create(db, at, settings, values, actor=who)
            body = snapshots.customer_by_id(db, at, settings, company_id)
            if scoped is not None:
                idempotency.remember(db, at, scoped, fingerprint, 201, body)
            return 201, body, False

    try:
        status, body, replayed = await run(request, go, now(request))
    except idempotency.Mismatch:
        raise Problem(422, _("This Idempotency-Key was used in the last 24 hours for a different request; use a "
                             "new key for a new request."),
                      errors={"Idempotency-Key": _("Used for another request.")}) from None
    except customers.Conflict as exc:
        raise Problem(409, exc.detail, customer=exc.customer) from None
    except FormError as exc:
        raise _invalid(exc) from None
    headers = {"Location": f"/api/v1/customers/{body['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status, headers)


async def get_customer(request: Request) -> Response:
    return json_response(await _customer_or_404(request, _company_id(request)))


async def list_customers(request: Request) -> Response:
    settings, at = _settings(request), now(request)
    external_id = request.query_params.get("external_id")
    if external_id is not None:
        def found(db):
            company = customers.by_external_id(db, external_id)
            return [snapshots.customer(db, at, settings, company)] if company else []

        return json_response(_list(await run(request, found), False))
    limit = int_param(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    after = request.query_params.get("starting_after")
    before = None
    if after is not None:
        before = parse_customer_id(after)
        if before is None:
            raise Problem(422, _("starting_after is a customer id like cus_42."),
                          errors={"starting_after": _("A customer id like cus_42.")})

    def page(db):
        companies, more = customers.page(db, limit, before)
        return [snapshots.customer(db, at, settings, c) for c in companies], more

    data, more = await run(request, page)
    return json_response(_list(data, more))


async def update_customer(request: Request) -> Response:
    company_id = _company_id(request)
    data = await json_object(request, customers.UPDATE_FIELDS)
    try:
        values = customers.check_update(_settings(request), data)
        found = await run(request, customers.update, now(request), company_id, values, actor=actor(request))
    except FormError as exc:
        raise _invalid(exc) from None
    except customers.Conflict as exc:
        raise Problem(409, exc.detail, customer=exc.customer) from None
    if not found:
        raise Problem(404, _("There is no customer %(id)s.", id=customer_id(company_id)))
    return json_response(await _customer_or_404(request, company_id))


# --- entitlements and usage --------------------------------------------------------------------


def _serialize(data: dict) -> tuple[bytes, str]:
    """The body and its ETag: keys sorted, so equal entitlements always hash alike."""
    body = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(header: str | None, tag: str) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    return any(t.strip().removeprefix("W/") == tag for t in header.split(","))


def _entitlements(db, at, settings, company_id: int) -> dict | None:
    # One query for both rows: this is the route hosts poll.
    sub = one(db, "SELECT s.*, c.usage_workspaces, c.usage_storage_bytes, c.usage_reported_at FROM subscriptions s "
                  "JOIN companies c ON c.id = s.company_id WHERE s.company_id = ?", [company_id])
    if sub is None:
        return None
    company = {"id": company_id, "usage_workspaces": sub["usage_workspaces"],
               "usage_storage_bytes": sub["usage_storage_bytes"], "usage_reported_at": sub["usage_reported_at"]}
    return entitlements.for_company(db, company, sub, at, settings.grace_days)


async def get_entitlements(request: Request) -> Response:
    company_id = _company_id(request)
    data = read(request, _entitlements, now(request), _settings(request), company_id)
    if data is None:
        raise Problem(404, _("There is no customer %(id)s.", id=customer_id(company_id)))
    body, tag = _serialize(data)
    # no-cache: a client may keep the answer but asks again (cheaply, with If-None-Match) each time.
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type="application/json")


async def put_usage(request: Request) -> Response:
    company_id = _company_id(request)
    data = await json_object(request, ("workspaces", "storage_bytes"))
    settings = _settings(request)

    def go(db, at):
        with write(db):
            if one(db, "SELECT 1 FROM companies WHERE id = ?", [company_id]) is None:
                return None
            usage.record(db, at, company_id, data.get("workspaces"), data.get("storage_bytes"))
            return _entitlements(db, at, settings, company_id)

    try:
        result = await run(request, go, now(request))
    except FormError as exc:
        raise _invalid(exc) from None
    if result is None:
        raise Problem(404, _("There is no customer %(id)s.", id=customer_id(company_id)))
    body, tag = _serialize(result)
    return Response(body, headers={"ETag": tag}, media_type="application/json")


# --- payments, invoices, plans -------------------------------------------------------------------


def _cursor(request: Request, prefix: str) -> int | None:
    after = request.query_params.get("starting_after")
    if after is None:
        return None
    digits = after.removeprefix(prefix)
    if not after.startswith(prefix) or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise Problem(422, _("starting_after is an id like %(example)s.", example=f"{prefix}7"),
                      errors={"starting_after": _("Like %(example)s.", example=f"{prefix}7")})
    return int(digits)


async def _company_page(request: Request, fetch):
    company_id = _company_id(request)
    limit = int_param(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)

    def go(db):
        if one(db, "SELECT 1 FROM companies WHERE id = ?", [company_id]) is None:
            return None
        return fetch(db, company_id, limit)

    result = await run(request, go)
    if result is None:
        raise Problem(404, _("There is no customer %(id)s.", id=customer_id(company_id)))
    data, more = result
    return json_response(_list(data, more))


async def list_payments(request: Request) -> Response:
    before = _cursor(request, "pay_")

    def fetch(db, company_id, limit):
        found = rows(db, "SELECT * FROM payments WHERE company_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                     [company_id, before if before is not None else 2 ** 62, limit + 1])
        return [snapshots.payment(db, r) for r in found[:limit]], len(found) > limit

    return await _company_page(request, fetch)


async def list_invoices(request: Request) -> Response:
    after = request.query_params.get("starting_after")
    settings = _settings(request)

    def fetch(db, company_id, limit):
        before = 2 ** 62
        if after is not None:
            cursor = one(db, "SELECT id FROM invoices WHERE number = ? AND company_id = ?", [after, company_id])
            if cursor is None:
                raise Problem(422, _("starting_after is the number of one of this customer's invoices."),
                              errors={"starting_after": _("Not an invoice of this customer.")})
            before = cursor["id"]
        found = rows(db, "SELECT * FROM invoices WHERE company_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                     [company_id, before, limit + 1])
        return [snapshots.invoice(settings, r) for r in found[:limit]], len(found) > limit

    return await _company_page(request, fetch)


async def get_invoice(request: Request) -> Response:
    number = request.path_params["number"]
    row = await run(request, one, "SELECT * FROM invoices WHERE number = ?", [number])
    if row is None:
        raise Problem(404, _("There is no invoice %(number)s.", number=repr(number[:40])))
    return json_response(snapshots.invoice(_settings(request), row))


def plan_object(plan: plans.Plan) -> dict:
    return {"code": plan.code, "name": plan.name, "description": plan.blurb_text, "price": plan.price,
            "currency": plan.currency, "interval": plan.interval, "trial_days": plan.trial_days,
            "limits": entitlements.limits(plan)}


async def list_plans(request: Request) -> Response:
    return json_response(_list([plan_object(p) for p in await run(request, plans.all_plans)], False))


# --- portal sessions ------------------------------------------------------------------------------


async def create_portal_session(request: Request) -> Response:
    data = await json_object(request, ("customer", "return_url", "flow", "plan"))
    company_id = parse_customer_id(data.get("customer"))
    if company_id is None:
        raise Problem(422, _("Name the customer, like cus_42."), errors={"customer": _("A customer id like cus_42.")})
    settings, who = _settings(request), actor(request)

    def go(db, at):
        with write(db):
            if one(db, "SELECT 1 FROM companies WHERE id = ?", [company_id]) is None:
                raise FormError({"customer": _("There is no customer %(id)s.", id=customer_id(company_id))})
            return portal.create(db, at, settings, company_id, data.get("return_url"), flow=data.get("flow"),
                                 plan=data.get("plan"), created_by=who)

    try:
        link = await run(request, go, now(request))
    except FormError as exc:
        raise _invalid(exc) from None
    return json_response(link, 201)


async def openapi_document(request: Request) -> Response:
    from billing.api import openapi

    return json_response(openapi.document(request.app.state.settings, request.app.state.endpoints),
                         headers={"Cache-Control": "no-cache"})


# --- the route table ------------------------------------------------------------------------------

CUSTOMER_PATH = Param("customer_id", "path", "Our id of the customer, like `cus_42`.", required=True)
LIMIT = Param("limit", "query", f"How many (1 to {LIMIT_MAX}, default {LIMIT_DEFAULT}).",
              {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT})


def _after(example: str) -> Param:
    return Param("starting_after", "query", f"The last id of the previous page (like `{example}`): the page after it.")


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/customers", create_customer, "createCustomer", "Create a customer", "Customers", "write",
             response="Customer", status=201, request="CustomerCreate", errors=(400, 409, 413, 415, 422),
             params=(Param("Idempotency-Key", "header", "Any unique string (a UUID), kept per API key. Sent again "
                           "with the same body within 24 hours, the first answer is replayed (with `Idempotent-Replayed: true`) and "
                           "nothing is created twice; with another body, 422."),),
             description="Creates the company, its owner (who has no password yet: they arrive through a portal "
                         "link, or set one with the reset email) and a trial, exactly as a sign-up on the billing "
                         "site does, welcome email included. A second create with the same `external_id`, or an "
                         "`email` that has an account, answers 409 naming the existing customer."),
    Endpoint("GET", "/customers", list_customers, "listCustomers", "List customers", "Customers", "read",
             response="CustomerList",
             params=(Param("external_id", "query", "Find the customer with your id: a list of 0 or 1."),
                     LIMIT, _after("cus_42")),
             errors=(422,), description="Newest first. Page with `limit` and `starting_after`."),
    Endpoint("GET", "/customers/{customer_id}", get_customer, "getCustomer", "Get a customer", "Customers", "read",
             response="Customer", params=(CUSTOMER_PATH,), errors=(404,)),
    Endpoint("PATCH", "/customers/{customer_id}", update_customer, "updateCustomer", "Update a customer",
             "Customers", "write", response="Customer", request="CustomerUpdate", params=(CUSTOMER_PATH,),
             errors=(400, 404, 409, 413, 415, 422),
             description="Sets `external_id` (links a customer who signed up on the billing site to your user; "
                         "null unlinks), `name` or the owner's `email`. Fields left out stay as they are."),
    Endpoint("GET", "/customers/{customer_id}/entitlements", get_entitlements, "getEntitlements",
             "Get a customer's entitlements", "Entitlements", "read", response="Entitlements",
             params=(CUSTOMER_PATH, Param("If-None-Match", "header", "The ETag of the answer you have: 304 (no "
                                                                    "body) while it is still current.")),
             errors=(404,),
             description="What your product should allow now. Answers carry an `ETag`; poll with "
                         "`If-None-Match` and get 304 Not Modified until something changes."),
    Endpoint("PUT", "/customers/{customer_id}/usage", put_usage, "putUsage", "Report usage", "Entitlements", "write",
             response="Entitlements", request="Usage", params=(CUSTOMER_PATH,), errors=(400, 404, 413, 415, 422),
             description="Records what the customer uses now (replacing the last report) and answers the "
                         "entitlements, with `over_limit`. Crossing 80 % and 100 % of a limit emails the owner "
                         "once per period with an upgrade link; a downgrade the usage would not fit is refused."),
    Endpoint("GET", "/customers/{customer_id}/invoices", list_invoices, "listCustomerInvoices",
             "List a customer's invoices", "Invoices", "read", response="InvoiceList",
             params=(CUSTOMER_PATH, LIMIT, _after("INV-2026-000001")), errors=(404, 422),
             description="Newest first."),
    Endpoint("GET", "/customers/{customer_id}/payments", list_payments, "listCustomerPayments",
             "List a customer's payments", "Payments", "read", response="PaymentList",
             params=(CUSTOMER_PATH, LIMIT, _after("pay_7")), errors=(404, 422),
             description="Newest first, failed and pending ones included."),
    Endpoint("GET", "/invoices/{number}", get_invoice, "getInvoice", "Get an invoice", "Invoices", "read",
             response="Invoice", params=(Param("number", "path", "The invoice number, like `INV-2026-000001`.",
                                               required=True),), errors=(404,)),
    Endpoint("GET", "/plans", list_plans, "listPlans", "List the plans", "Plans", "read", response="PlanList",
             description="The catalog: codes for portal sessions, prices and the limits each plan grants."),
    Endpoint("POST", "/portal-sessions", create_portal_session, "createPortalSession", "Create a portal link",
             "Portal", "write", response="PortalSession", status=201, request="PortalSessionCreate",
             errors=(400, 413, 415, 422),
             description="A single-use link, valid 5 minutes, that logs the customer's owner into billing (a "
                         "fresh session) and lands on the dashboard, or with `flow: subscribe` on `plan`'s "
                         "checkout. Every page then shows \"← Back to\" your app, linking to `return_url`."),
    Endpoint("GET", "/openapi.json", openapi_document, "getOpenapi", "This API's OpenAPI 3.1 document", "Meta",
             None, description="No key needed."),
]
