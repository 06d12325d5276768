"""The plan catalog, kept by the operator in the `plans` table. Prices are integer minor units
of `currency`, VAT included: the amount a customer pays in PayTR's iframe is exactly the
advertised price. A subscription renews at the price it stores (`subscriptions.price`), which
follows the catalog only when staff apply a change to existing subscribers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlite_utils import Database

from billing import i18n
from billing.db import one, rows
from billing.i18n import gettext as _, ngettext

CURRENCIES = ("TRY", "USD", "EUR")  # what PayTR takes
INTERVALS = ("month", "year")


@dataclass(frozen=True)
class Plan:
    code: str
    name_en: str
    name_tr: str
    description_en: str
    description_tr: str
    price: int  # minor units per period, VAT included
    currency: str
    interval: str  # 'month' or 'year' (12 calendar months on the anchor day)
    workspaces: int | None  # None = unlimited
    storage_gb: int
    trial_days: int
    sort_order: int
    public: bool
    archived_at: str | None
    featured: bool = False  # highlighted on the pricing page

    @classmethod
    def from_row(cls, row: dict) -> "Plan":
        values = {field: row.get(field) for field in cls.__dataclass_fields__}
        return cls(**{**values, "public": bool(values["public"]), "featured": bool(values.get("featured"))})

    @property
    def name(self) -> str:
        """In the reader's language."""
        return self.name_tr if i18n.current() == "tr" else self.name_en

    @property
    def blurb_text(self) -> str:
        return self.description_tr if i18n.current() == "tr" else self.description_en

    @property
    def months(self) -> int:
        return 12 if self.interval == "year" else 1

    @property
    def per_period(self) -> str:
        """"/ month" or "/ year", after a price."""
        return _("/ year") if self.interval == "year" else _("/ month")

    @property
    def interval_label(self) -> str:
        return _("Yearly") if self.interval == "year" else _("Monthly")

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @property
    def available(self) -> bool:
        """Offered to customers: public and not archived."""
        return self.public and not self.archived

    @property
    def workspaces_label(self) -> str:
        if self.workspaces is None:
            return _("Unlimited workspaces")
        return ngettext("%(num)d workspace", "%(num)d workspaces", self.workspaces)

    @property
    def storage_label(self) -> str:
        return _("%(gb)d GB storage", gb=self.storage_gb)

    def to_context(self) -> dict:
        """As an email's context stores it: every field, so the email names the plan in its
        reader's language and shows the price that was true when it was queued."""
        return {"__plan__": True, **asdict(self)}


def from_context(value: dict) -> Plan:
    values = {field: value.get(field) for field in Plan.__dataclass_fields__}
    return Plan(**{**values, "interval": values["interval"] or "month", "featured": bool(values["featured"])})


class UnknownPlan(LookupError):
    pass


def find(db: Database, code: str | None) -> Plan | None:
    if not code or not isinstance(code, str):
        return None
    row = one(db, "SELECT * FROM plans WHERE code = ?", [code])
    return Plan.from_row(row) if row else None


def get(db: Database, code: str) -> Plan:
    plan = find(db, code)
    if plan is None:
        raise UnknownPlan(code)
    return plan


def all_plans(db: Database, *, hidden: bool = False, archived: bool = False) -> list[Plan]:
    """The catalog in the operator's order. By default what customers may choose: public, not archived."""
    where = []
    if not hidden:
        where.append("public = 1")
    if not archived:
        where.append("archived_at IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return [Plan.from_row(row) for row in rows(db, f"SELECT * FROM plans {clause} ORDER BY sort_order, price, code")]


def default_code(db: Database) -> str | None:
    """The plan a sign-up without a choice starts its trial on: the first one offered."""
    offered = all_plans(db)
    return offered[0].code if offered else None


def subscribable(db: Database, code: str | None) -> Plan | None:
    """A plan a customer may pick by themselves: public and not archived."""
    plan = find(db, code)
    return plan if plan is not None and plan.available else None


def offered(db: Database, code: str | None) -> Plan:
    """The plan a customer asked for by code, or UnknownPlan (a 404) when it is not offered."""
    plan = subscribable(db, code)
    if plan is None:
        raise UnknownPlan(code)
    return plan


def prices_that_do_not_split(db: Database, vat_rate) -> list[str]:
    """Plans whose VAT-inclusive price has no net amount with net + round(net × rate) == price.
    Their invoices could not show VAT as exactly the rate of the net, so start-up refuses them."""
    from billing import money

    return [f"{plan.name} ({money.format(plan.price, plan.currency)})" for plan in all_plans(db, hidden=True)
            if not money.splits_exactly(plan.price, vat_rate)]
