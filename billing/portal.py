"""Portal links: the host product hands its signed-in user to billing without a second login.

A link is single-use and valid for `LINK_MINUTES`; it carries a 256-bit random token of
which only the SHA-256 is stored. Opening it (billing/web/portal.py) logs the company's
owner in with a fresh session, as a login would, and remembers `return_url` so every page
can offer "← Back to {host}".
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlite_utils import Database

from billing import clock, events, plans
from billing.accounts import FormError, token_hash
from billing.db import one, write
from billing.i18n import gettext as _
from billing.settings import Settings

LINK_MINUTES = 5
FLOWS = ("billing", "subscribe")
MAX_URL = 2000


def check_return_url(settings: Settings, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FormError({"return_url": _("Give the URL to send the customer back to.")})
    url = value.strip()
    if len(url) > MAX_URL or any(ord(ch) < 33 or ch == "\x7f" for ch in url):
        raise FormError({"return_url": _("The return URL is too long or has spaces or control characters.")})
    parts = urlsplit(url)
    allowed = ("https",) if settings.is_production else ("https", "http")
    if parts.scheme not in allowed or not parts.hostname:
        raise FormError({"return_url": _("The return URL must be an absolute https:// URL.")
                         if settings.is_production else _("The return URL must be an absolute http(s):// URL.")})
    if parts.username or parts.password:
        raise FormError({"return_url": _("The return URL must not carry a user name or password.")})
    if settings.portal_return_hosts and parts.hostname.lower() not in settings.portal_return_hosts:
        raise FormError({"return_url": _("%(host)s is not in PORTAL_RETURN_HOSTS.", host=parts.hostname)})
    return url


def create(db: Database, now: datetime, settings: Settings, company_id: int, return_url, *, flow=None,
           plan=None, created_by: str = "api") -> dict:
    """Make a link for the company's owner; call inside a write. Returns {url, expires_at}."""
    errors = {}
    try:
        return_url = check_return_url(settings, return_url)
    except FormError as exc:
        errors.update(exc.errors)
    flow = flow or "billing"
    if flow not in FLOWS:
        errors["flow"] = _("flow is billing (the default) or subscribe.")
    if flow == "subscribe":
        if not isinstance(plan, str) or plans.subscribable(db, plan) is None:
            errors["plan"] = _("Name the plan to subscribe to: one of %(plans)s.",
                               plans=", ".join(p.code for p in plans.all_plans(db)))
    elif plan is not None:
        errors["plan"] = _("plan is only for flow subscribe.")
    if errors:
        raise FormError(errors)
    if one(db, "SELECT 1 FROM users WHERE company_id = ? AND role = 'owner'", [company_id]) is None:
        raise FormError({"customer": _("This customer has no owner to log in.")})
    token = secrets.token_urlsafe(32)  # 256 bits
    expires = now + timedelta(minutes=LINK_MINUTES)
    db.conn.execute(
        """INSERT INTO portal_sessions (token_hash, company_id, return_url, flow, plan, created_by, created_at,
                                        expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        [token_hash(token), company_id, return_url, flow, plan if flow == "subscribe" else None, created_by,
         clock.iso(now), clock.iso(expires)])
    events.record(db, now, "portal.link_created", f"portal link for {flow} created by {created_by}",
                  company_id=company_id, actor=created_by)
    return {"url": settings.url(f"/portal/{token}"), "expires_at": clock.iso(expires)}


def find(db: Database, token: str) -> dict | None:
    """The link a token names, used or not (the expired page offers its return URL)."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    return one(db, "SELECT * FROM portal_sessions WHERE token_hash = ?", [token_hash(token)])


def open_link(db: Database, now: datetime, token: str) -> tuple[dict, dict] | None:
    """Spend a link for its company's owner: (link, owner user), or None when it is unknown,
    used or expired, or the company has no owner any more. Nothing is spent in that case."""
    with write(db):
        found = find(db, token)
        owner = found and one(db, "SELECT * FROM users WHERE company_id = ? AND role = 'owner' ORDER BY id LIMIT 1",
                              [found["company_id"]])
        link = use(db, now, token) if owner else None
        if link is None:
            return None
        events.record(db, now, "portal.link_used", f"{owner['name']} opened billing from a portal link",
                      company_id=link["company_id"], actor=events.user_actor(owner), flow=link["flow"])
    return link, owner


def use(db: Database, now: datetime, token: str) -> dict | None:
    """Spend a link: the portal session row, once; None when unknown, used or expired. Call inside a write."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    row = one(db, "UPDATE portal_sessions SET used_at = ? WHERE token_hash = ? AND used_at IS NULL "
                  "AND expires_at > ? RETURNING *", [clock.iso(now), token_hash(token), clock.iso(now)])
    return row
