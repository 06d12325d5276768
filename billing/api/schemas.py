"""JSON Schemas (OpenAPI 3.1 dialect) of what the API takes and answers.

Written once, here; the route table names them and openapi.py puts them in the document.
Descriptions are for the integrating engineer reading /api/docs.
"""

from __future__ import annotations


def _s(kind, description: str, **extra) -> dict:
    return {"type": kind, "description": description, **extra}


TIME = {"type": ["string", "null"], "format": "date-time"}
ID = "Our id of the customer, like `cus_42`."

ENTITLEMENTS = {
    "type": "object",
    "description": "What the customer may use now. Gate your product on `access` and `limits`.",
    "required": ["customer", "plan", "status", "access", "limits", "usage", "over_limit", "valid_until"],
    "properties": {
        "customer": _s("string", ID),
        "plan": _s("string", "The plan's code, as in GET /plans."),
        "status": {"type": "string", "enum": ["trialing", "active", "past_due", "canceled", "expired"],
                   "description": "The subscription's status."},
        "access": _s("boolean", "Let the customer in now? True while trialing, active, past due within the grace "
                                "period, or canceled with paid time left; false otherwise."),
        "limits": {"type": "object", "required": ["workspaces", "storage_gb"], "properties": {
            "workspaces": {"type": ["integer", "null"], "description": "Workspaces allowed; null is unlimited."},
            "storage_gb": _s("integer", "Storage allowed, in GB (1 GB = 2^30 bytes)."),
        }},
        "usage": {"type": "object", "description": "What you last reported with PUT /customers/{id}/usage.",
                  "properties": {
                      "workspaces": {"type": ["integer", "null"]},
                      "storage_bytes": {"type": ["integer", "null"]},
                      "reported_at": {**TIME, "description": "When; null before the first report."},
                  }},
        "over_limit": {"type": "array", "items": {"type": "string", "enum": ["workspaces", "storage_gb"]},
                       "description": "The limits the reported usage is over."},
        "valid_until": {**TIME, "description": "Until when `access` holds if nothing changes (no payment, no "
                                               "cancellation); null when there is no access."},
    },
}

SUBSCRIPTION = {
    "type": "object",
    "properties": {
        "plan": _s("string", "The plan's code."),
        "status": {"type": "string", "enum": ["trialing", "active", "past_due", "canceled", "expired"]},
        "trial_ends_at": TIME,
        "current_period_start": TIME,
        "current_period_end": TIME,
        "cancel_at_period_end": _s("boolean", "The customer canceled; access ends with the period."),
        "scheduled_plan": {"type": ["string", "null"], "description": "A downgrade that starts next period."},
    },
}

CUSTOMER = {
    "type": "object",
    "required": ["id", "external_id", "name", "email", "created_at", "subscription", "entitlements"],
    "properties": {
        "id": _s("string", ID),
        "external_id": {"type": ["string", "null"], "description": "Your own id of this customer (unique)."},
        "name": _s("string", "The company's name."),
        "email": {"type": ["string", "null"], "format": "email", "description": "The owner's email address."},
        "owner_name": {"type": ["string", "null"]},
        "locale": {"type": ["string", "null"], "enum": ["tr", "en", None]},
        "timezone": _s("string", "IANA time zone of the company."),
        "created_at": {"type": "string", "format": "date-time"},
        "subscription": {"$ref": "#/components/schemas/Subscription"},
        "entitlements": {"$ref": "#/components/schemas/Entitlements"},
    },
}

CUSTOMER_CREATE = {
    "type": "object",
    "required": ["external_id", "name", "email"],
    "additionalProperties": False,
    "properties": {
        "external_id": _s("string", "Your id of this customer: unique, 1 to 200 characters, no spaces.",
                          maxLength=200),
        "name": _s("string", "The company's name.", maxLength=200),
        "email": _s("string", "The owner's email; billing emails go here. Unique among users.", format="email"),
        "owner_name": _s("string", "The owner's name (default: the part of the email before @).", maxLength=100),
        "locale": {"type": "string", "enum": ["tr", "en"], "description": "The owner's language."},
        "timezone": _s("string", "IANA time zone (default: the app's, Europe/Istanbul)."),
    },
}

CUSTOMER_UPDATE = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "external_id": {"type": ["string", "null"], "description": "Link (or with null, unlink) your id."},
        "name": _s("string", "The company's name."),
        "email": _s("string", "The owner's email address.", format="email"),
    },
}

USAGE = {
    "type": "object",
    "required": ["workspaces", "storage_bytes"],
    "additionalProperties": False,
    "properties": {
        "workspaces": _s("integer", "Workspaces the customer has now.", minimum=0),
        "storage_bytes": _s("integer", "Bytes the customer stores now.", minimum=0),
    },
}

PAYMENT = {
    "type": "object",
    "properties": {
        "id": _s("string", "Like `pay_7`."),
        "customer": _s("string", ID),
        "merchant_oid": _s("string", "The order id PayTR knows the payment by."),
        "kind": _s("string", "subscribe, renewal, upgrade, pay link…"),
        "method": {"type": ["string", "null"]},
        "plan": {"type": ["string", "null"]},
        "amount": _s("integer", "In minor units of `currency` (cents, kuruş)."),
        "currency": _s("string", "ISO 4217 code."),
        "status": _s("string", "pending, succeeded or failed."),
        "paid_amount": {"type": ["integer", "null"]},
        "failure_code": {"type": ["string", "null"]},
        "failure_message": {"type": ["string", "null"]},
        "period_start": TIME,
        "period_end": TIME,
        "test_mode": {"type": "boolean"},
        "invoice": {"type": ["string", "null"], "description": "The invoice's number, once issued."},
        "created_at": {"type": "string", "format": "date-time"},
        "decided_at": TIME,
    },
}

INVOICE = {
    "type": "object",
    "properties": {
        "number": _s("string", "Like `INV-2026-000001`; gapless per year."),
        "customer": _s("string", ID),
        "payment": _s("string", "The payment it is for."),
        "issued_at": {"type": "string", "format": "date-time"},
        "currency": {"type": "string"},
        "net": _s("integer", "Minor units, without VAT."),
        "vat": _s("integer", "Minor units."),
        "vat_rate": _s("string", "Percent, as a decimal string: `20`."),
        "total": _s("integer", "Minor units: net + vat."),
        "period_start": TIME,
        "period_end": TIME,
        "buyer_name": {"type": "string"},
        "url": _s("string", "The invoice's page (the customer's login is needed).", format="uri"),
    },
}

PLAN = {
    "type": "object",
    "properties": {
        "code": _s("string", "Use it in portal sessions with flow subscribe."),
        "name": _s("string", "In the language of the request's Accept-Language (Turkish or English)."),
        "description": {"type": "string"},
        "price": _s("integer", "Per interval, VAT included, in minor units of `currency`. New subscriptions pay "
                               "it; existing subscribers renew at their own price until staff apply a change."),
        "currency": {"type": "string", "enum": ["TRY", "USD", "EUR"]},
        "interval": _s("string", "month, or year (12 months on the anchor day).", enum=["month", "year"]),
        "trial_days": {"type": "integer"},
        "limits": {"type": "object", "properties": {"workspaces": {"type": ["integer", "null"]},
                                                    "storage_gb": {"type": "integer"}}},
    },
}

PORTAL_SESSION_CREATE = {
    "type": "object",
    "required": ["customer", "return_url"],
    "additionalProperties": False,
    "properties": {
        "customer": _s("string", ID),
        "return_url": _s("string", "Where \"← Back to …\" leads: https (http outside production), on a host in "
                                   "PORTAL_RETURN_HOSTS when that is set.", format="uri"),
        "flow": {"type": "string", "enum": ["billing", "subscribe"],
                 "description": "billing (default): the dashboard; subscribe: straight to `plan`'s checkout."},
        "plan": _s("string", "With flow subscribe: the plan's code."),
    },
}

PORTAL_SESSION = {
    "type": "object",
    "required": ["url", "expires_at"],
    "properties": {
        "url": _s("string", "Send your user's browser here. Works once.", format="uri"),
        "expires_at": {"type": "string", "format": "date-time", "description": "5 minutes from now."},
    },
}

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details (`application/problem+json`).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": _s("string", "Names the kind of problem; a link to its description.", format="uri"),
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": _s("string", "What went wrong this time, for a person."),
        "errors": {"type": "array", "description": "With 422: each field at fault.",
                   "items": {"type": "object", "required": ["field", "message"],
                             "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        "customer": _s("string", "With 409: the customer that exists already."),
    },
}


def list_of(item: str) -> dict:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "has_more": _s("boolean", "More items follow: ask again with starting_after = the last item's id."),
        },
    }


COMPONENTS = {
    "Customer": CUSTOMER,
    "CustomerCreate": CUSTOMER_CREATE,
    "CustomerUpdate": CUSTOMER_UPDATE,
    "CustomerList": list_of("Customer"),
    "Subscription": SUBSCRIPTION,
    "Entitlements": ENTITLEMENTS,
    "Usage": USAGE,
    "Payment": PAYMENT,
    "PaymentList": list_of("Payment"),
    "Invoice": INVOICE,
    "InvoiceList": list_of("Invoice"),
    "Plan": PLAN,
    "PlanList": list_of("Plan"),
    "PortalSessionCreate": PORTAL_SESSION_CREATE,
    "PortalSession": PORTAL_SESSION,
    "Problem": PROBLEM,
}
