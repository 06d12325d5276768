"""The plan catalog. Prices are integer minor units of `currency`, VAT included:
the amount a customer pays in PayTR's iframe is exactly the advertised price."""

from __future__ import annotations

from dataclasses import dataclass

from billing.i18n import gettext as _, lazy_gettext, ngettext


@dataclass(frozen=True)
class Plan:
    code: str
    name: str
    price: int  # minor units per month, VAT included
    currency: str
    workspaces: int | None  # None = unlimited
    storage_gb: int
    blurb: str  # in English, as stored in emails' contexts; `blurb_text` is the reader's language

    @property
    def blurb_text(self) -> str:
        return _(self.blurb)

    @property
    def workspaces_label(self) -> str:
        if self.workspaces is None:
            return _("Unlimited workspaces")
        return ngettext("%(num)d workspace", "%(num)d workspaces", self.workspaces)

    @property
    def storage_label(self) -> str:
        return _("%(gb)d GB storage", gb=self.storage_gb)


PLANS: dict[str, Plan] = {
    plan.code: plan
    for plan in (
        Plan("starter", "Starter", 2900, "USD", 5, 10, "For small teams getting started."),
        Plan("team", "Team", 9900, "USD", 20, 50, "For growing teams that collaborate daily."),
        Plan("enterprise", "Enterprise", 29900, "USD", None, 250, "For organisations that need room to grow."),
    )
}
DEFAULT_PLAN = "starter"
# The blurbs above, for the catalog (Plan.blurb_text translates them when shown).
_BLURBS = (lazy_gettext("For small teams getting started."), lazy_gettext("For growing teams that collaborate daily."),
           lazy_gettext("For organisations that need room to grow."))


class UnknownPlan(LookupError):
    pass


def get(code: str) -> Plan:
    try:
        return PLANS[code]
    except KeyError:
        raise UnknownPlan(code) from None


def all_plans() -> list[Plan]:
    return list(PLANS.values())


def prices_that_do_not_split(vat_rate) -> list[str]:
    """Plans whose VAT-inclusive price has no net amount with net + round(net × rate) == price.
    Their invoices could not show VAT as exactly the rate of the net, so start-up refuses them."""
    from billing import money

    return [f"{plan.name} ({money.format(plan.price, plan.currency)})" for plan in PLANS.values()
            if not money.splits_exactly(plan.price, vat_rate)]
