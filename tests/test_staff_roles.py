"""Staff roles, "confirm it's you" before sensitive actions, and the audit log's rules."""

from datetime import timedelta

import pytest

from billing import accounts, audit, roles
from billing.accounts import FormError
from billing.db import one, scalar
from conftest import START, login, post, second_browser, visible
from test_refunds import paid, refund  # noqa: F401 (fixture)


def staff_browser(app, db, password_hash, email, role):
    accounts.create_staff(db, START, email=email, name=email.split("@")[0], password_hash=password_hash,
                          staff_role=role)
    browser = second_browser(app)
    assert login(browser, email=email).status_code == 303
    return browser


def test_each_role_may_do_what_the_issue_says_and_unknown_permissions_fail_closed():
    admin, finance, support = ({"role": "staff", "staff_role": r} for r in roles.ROLES)
    owner = {"role": "owner"}
    assert all(roles.can(admin, p) for p in roles.PERMISSIONS)
    assert roles.can(finance, "refund") and roles.can(finance, "export") and roles.can(finance, "metrics")
    assert not roles.can(finance, "trial.extend") and not roles.can(finance, "plans.manage")
    assert roles.can(support, "trial.extend") and roles.can(support, "days.grant") and roles.can(support, "email.resend")
    assert not roles.can(support, "refund") and not roles.can(support, "subscription.manage")
    assert all(roles.can(r, "console.read") for r in (admin, finance, support))
    assert not roles.can(owner, "console.read") and not roles.can(None, "console.read")
    assert not roles.can(admin, "no.such.permission")


def test_create_staff_makes_an_admin(db, password_hash):
    staff = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    assert staff["staff_role"] == "admin"


def test_support_can_read_a_customer_but_not_refund_and_is_told_why(client, app, db, paid, password_hash):
    support = staff_browser(app, db, password_hash, "destek@example.com", "support")
    assert support.get(f"/admin/companies/{paid['company_id']}").status_code == 200
    page = support.get(f"/admin/payments/{paid['id']}/refund")
    assert page.status_code == 403
    assert "Your role (Support) cannot do this" in visible(page)
    assert scalar(db, "SELECT count(*) FROM refunds") == 0


def test_only_roles_that_may_resend_see_send_again_under_the_timelines_emails(client, app, db, paid, password_hash):
    support = staff_browser(app, db, password_hash, "destek@example.com", "support")
    finance = staff_browser(app, db, password_hash, "finans@example.com", "finance")
    customer = f"/admin/companies/{paid['company_id']}"
    emails = scalar(db, "SELECT count(*) FROM outbox WHERE company_id = ?", [paid["company_id"]])
    shown = visible(support.get(customer))
    assert emails >= 2 and shown.count("Send again") == emails and shown.count("Why send it again?") == emails
    assert "Send again" not in visible(finance.get(customer))


def test_finance_can_refund_but_cannot_manage_api_keys(client, app, db, paid, password_hash):
    finance = staff_browser(app, db, password_hash, "finans@example.com", "finance")
    assert refund(finance, paid).status_code == 303
    assert scalar(db, "SELECT count(*) FROM refunds") == 1
    assert finance.get("/admin/api-keys").status_code == 403


def test_a_refund_after_ten_quiet_minutes_asks_for_the_password_first_then_comes_back(
        client, app, db, paid, password_hash):
    admin = staff_browser(app, db, password_hash, "ops@example.com", "admin")
    page = f"/admin/payments/{paid['id']}/refund"
    assert admin.get(page).status_code == 200
    app.state.clock.advance(timedelta(minutes=11))
    asked = admin.get(page, follow_redirects=False)
    assert asked.status_code == 303 and asked.headers["location"].startswith("/auth/confirm?next=")
    confirm = admin.get(asked.headers["location"])
    assert "Confirm it's you" in visible(confirm)
    wrong = post(admin, "/auth/confirm", {"password": "not the password", "next": page}, token_from=page)
    assert wrong.status_code == 422 and "That password is not right." in visible(wrong)
    right = post(admin, "/auth/confirm", {"password": "correct horse battery staple", "next": page},
                 token_from=page)
    assert right.status_code == 303 and right.headers["location"] == page
    assert admin.get(page).status_code == 200


def test_a_stale_post_does_nothing_and_is_sent_to_confirm(client, app, db, paid, password_hash):
    admin = staff_browser(app, db, password_hash, "ops@example.com", "admin")
    page = f"/admin/payments/{paid['id']}/refund"
    form_page = admin.get(page)
    app.state.clock.advance(timedelta(minutes=11))
    token = form_page.text.split('name="csrf_token" value="')[1].split('"')[0]
    stale = admin.post(page, data={"amount": "29.00", "reason": "x", "csrf_token": token},
                       headers={"referer": f"http://testserver{page}"}, follow_redirects=False)
    assert stale.status_code == 303 and stale.headers["location"] == f"/auth/confirm?next={page}"
    assert scalar(db, "SELECT count(*) FROM refunds") == 0


def test_the_audit_log_needs_a_reason_and_cannot_be_changed(db, password_hash):
    staff = accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=password_hash)
    with pytest.raises(FormError) as refused:
        audit.record(db, START, staff, "subscription.grant_days", reason="   ")
    assert "reason" in refused.value.errors
    entry_id = audit.record(db, START, staff, "subscription.grant_days", reason="Kesinti  telafisi",
                            before={"period_end": "2027-01-01"}, after={"period_end": "2027-01-08"})
    entry = audit.entry(db, entry_id)
    assert entry["reason"] == "Kesinti telafisi" and entry["after"] == {"period_end": "2027-01-08"}
    for sql in ("UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            db.execute(sql)
    assert one(db, "SELECT reason FROM audit_log")["reason"] == "Kesinti telafisi"


def test_a_subscription_keeps_the_price_it_was_started_and_changed_at(client, app, db, paid):
    sub = one(db, "SELECT plan, price, currency FROM subscriptions WHERE company_id = ?", [paid["company_id"]])
    assert (sub["plan"], sub["price"], sub["currency"]) == ("starter", 2900, "USD")
    db.execute("UPDATE plans SET price = 3500 WHERE code = 'starter'")  # the catalog moves on
    assert one(db, "SELECT price FROM subscriptions WHERE company_id = ?", [paid["company_id"]])["price"] == 2900
