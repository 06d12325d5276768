"""The staff home's company count comes from a counter kept by triggers, not a count(*)."""

from billing import staff
from billing.db import scalar, write
from conftest import START, make_company


def test_the_company_counter_follows_every_insert_and_delete(db, settings, password_hash):
    assert staff.company_count(db) == 0
    made = [make_company(db, settings, START, password_hash, n=n) for n in range(3)]
    assert staff.company_count(db) == 3 == scalar(db, "SELECT count(*) FROM companies")
    with write(db):
        db.conn.execute("DELETE FROM users WHERE company_id = ?", [made[0]["id"]])
        db.conn.execute("DELETE FROM subscriptions WHERE company_id = ?", [made[0]["id"]])
        db.conn.execute("DELETE FROM companies WHERE id = ?", [made[0]["id"]])
    assert staff.company_count(db) == 2 == scalar(db, "SELECT count(*) FROM companies")


def test_the_staff_home_says_how_many_companies_there_are(client, db, password_hash):
    from conftest import login, register, visible
    from test_staff_admin import staff as make_staff

    register(client)
    client.cookies.clear()
    make_staff(db, password_hash)
    assert login(client, email="ops@example.com").status_code == 303
    assert "1 company ·" in visible(client.get("/admin/"))
