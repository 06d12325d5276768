"""Entitlements: what the host product is told a customer may use now."""

from datetime import UTC, datetime, timedelta

from billing import entitlements, snapshots
from billing.db import one, write
from billing.entitlements import GB
from conftest import make_company

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def sub(status, **fields):
    return {"status": status, "plan": "starter", "trial_ends_at": None, "current_period_start": None,
            "current_period_end": None, "cancel_at_period_end": 0, **fields}


def test_access_follows_trial_paid_period_and_grace():
    later, earlier = "2026-12-10T09:00:00Z", "2026-11-28T09:00:00Z"
    assert entitlements.access(sub("trialing", trial_ends_at=later), NOW, 7)
    assert not entitlements.access(sub("trialing", trial_ends_at=earlier), NOW, 7)
    assert not entitlements.access(sub("expired", trial_ends_at=earlier), NOW, 7)
    assert entitlements.access(sub("active", current_period_end=later), NOW, 7)
    assert entitlements.access(sub("past_due", current_period_end=earlier), NOW, 7)  # 3 days into 7 of grace
    assert not entitlements.access(sub("past_due", current_period_end="2026-11-20T09:00:00Z"), NOW, 7)
    assert entitlements.access(sub("canceled", current_period_end=later), NOW, 7)  # paid time left
    assert not entitlements.access(sub("canceled", current_period_end=earlier), NOW, 7)


def test_valid_until_is_when_access_would_end():
    assert entitlements.valid_until(sub("trialing", trial_ends_at="2026-12-10T09:00:00Z"), NOW, 7) == \
        datetime(2026, 12, 10, 9, tzinfo=UTC)
    assert entitlements.valid_until(sub("past_due", current_period_end="2026-11-28T09:00:00Z"), NOW, 7) == \
        datetime(2026, 12, 5, 9, tzinfo=UTC)
    assert entitlements.valid_until(sub("expired", trial_ends_at="2026-11-28T09:00:00Z"), NOW, 7) is None


def test_over_limit_and_warning_share(db):
    from billing import plans

    starter = plans.get(db, "starter")  # 5 workspaces, 10 GB
    assert entitlements.over_limit(starter, {"usage_workspaces": 5, "usage_storage_bytes": 10 * GB}) == []
    assert entitlements.over_limit(starter, {"usage_workspaces": 6, "usage_storage_bytes": 10 * GB + 1}) == \
        ["workspaces", "storage_gb"]
    assert entitlements.over_limit(starter, {"usage_workspaces": 4, "usage_storage_bytes": 7 * GB}, share=0.8) == \
        ["workspaces"]
    assert entitlements.over_limit(plans.get(db, "enterprise"), {"usage_workspaces": 10_000}) == []  # unlimited


def test_customer_snapshot_of_a_new_trial(db, settings, password_hash):
    with write(db):
        make_company(db, settings, NOW, password_hash, company_name="Ege Bulut Ltd.", email="deniz@example.com")
    company = one(db, "SELECT * FROM companies WHERE name = 'Ege Bulut Ltd.'")
    snap = snapshots.customer(db, NOW, settings, company)
    assert snap["id"] == f"cus_{company['id']}" and snap["email"] == "deniz@example.com"
    assert snap["subscription"]["status"] == "trialing" and snap["subscription"]["cancel_at_period_end"] is False
    ent = snap["entitlements"]
    assert ent["access"] is True and ent["limits"] == {"workspaces": 5, "storage_gb": 10}
    assert ent["valid_until"] == snap["subscription"]["trial_ends_at"]
    assert ent["usage"] == {"workspaces": None, "storage_bytes": None, "reported_at": None}


def test_customer_ids_parse_strictly():
    assert entitlements.parse_customer_id("cus_42") == 42
    for bad in ("cus_", "cus_042", "cus_4a", "42", "cus_١٢", None, "cus_" + "9" * 30):
        assert entitlements.parse_customer_id(bad) is None
