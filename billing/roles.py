"""What each staff role may do in the console. Admins do everything; finance handles money
(refunds, exports, metrics); support reads and helps (trials, free days, resending email).
Every console handler names the permission it needs (`web.common.requires`), and pages ask
`can(...)` before offering a button, so a role never sees an action it cannot take."""

from __future__ import annotations

from billing.i18n import lazy_gettext

ADMIN, FINANCE, SUPPORT = "admin", "finance", "support"
ROLES = (ADMIN, FINANCE, SUPPORT)
LABELS = {ADMIN: lazy_gettext("Administrator"), FINANCE: lazy_gettext("Finance"), SUPPORT: lazy_gettext("Support")}
DESCRIPTIONS = {
    ADMIN: lazy_gettext("Everything, including staff, plans, API keys and webhooks."),
    FINANCE: lazy_gettext("Reads everything; refunds, exports and revenue metrics."),
    SUPPORT: lazy_gettext("Reads everything; extends trials, grants free days and resends email."),
}

EVERYONE = frozenset(ROLES)
PERMISSIONS: dict[str, frozenset[str]] = {
    "console.read": EVERYONE,                               # customers, payments, invoices, timelines
    "trial.extend": frozenset({ADMIN, SUPPORT}),
    "days.grant": frozenset({ADMIN, SUPPORT}),
    "email.resend": frozenset({ADMIN, SUPPORT}),
    "refund": frozenset({ADMIN, FINANCE}),
    "anomaly.resolve": frozenset({ADMIN, FINANCE}),
    "export": frozenset({ADMIN, FINANCE}),                  # payments report CSV, month exports, audit export
    "metrics": frozenset({ADMIN, FINANCE}),
    "subscription.manage": frozenset({ADMIN}),              # change plan, cancel, resume, hidden plans
    "plans.manage": frozenset({ADMIN}),
    "staff.manage": frozenset({ADMIN}),
    "api_keys.manage": frozenset({ADMIN}),
    "webhooks.manage": frozenset({ADMIN}),
    "clock.manage": frozenset({ADMIN}),                     # the test clock (never in production)
    "audit.read": EVERYONE,
    "customer.data": frozenset({ADMIN}),                    # KVKK/GDPR: export or erase a customer's data
}


def role_of(user: dict | None) -> str | None:
    if not user or user.get("role") != "staff":
        return None
    return user.get("staff_role") or ADMIN


def can(user: dict | None, permission: str) -> bool:
    """May this user do it? Unknown permissions are refused, so a typo fails closed."""
    role = role_of(user)
    return role is not None and role in PERMISSIONS.get(permission, frozenset())
