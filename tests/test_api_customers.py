"""Customers, entitlements, usage, invoices, payments, plans and portal links through the API,
as a host engineer would call them."""

from datetime import timedelta

import pytest

from api_support import bearer, make_key, new_customer
from billing import accounts, events
from billing.db import one, rows
from conftest import START, make_company, outbox


@pytest.fixture
def key(app, client):
    return make_key(app)


def test_create_makes_a_company_like_sign_up_with_no_password_yet(client, key, db):
    response = client.post("/api/v1/customers", headers=bearer(key), json={
        "external_id": "usr_8f3a", "name": "Acme Yazılım", "email": "Ayse@Example.com", "owner_name": "Ayşe Kaya",
        "locale": "tr", "timezone": "Europe/Berlin"})
    assert response.status_code == 201
    customer = response.json()
    assert response.headers["location"] == f"/api/v1/customers/{customer['id']}"
    assert customer["id"].startswith("cus_") and customer["external_id"] == "usr_8f3a"
    assert (customer["name"], customer["email"], customer["owner_name"]) == ("Acme Yazılım", "ayse@example.com",
                                                                             "Ayşe Kaya")
    assert (customer["locale"], customer["timezone"]) == ("tr", "Europe/Berlin")
    assert customer["subscription"]["status"] == "trialing" and customer["entitlements"]["access"] is True
    assert customer["entitlements"]["limits"] == {"workspaces": 5, "storage_gb": 10}
    owner = accounts.user_by_email(db, "ayse@example.com")
    assert owner["role"] == "owner" and owner["locale"] == "tr"
    # no password opens the account; the usual reset email does
    assert not accounts.password_matches(owner["password_hash"], "")
    assert not accounts.password_matches(owner["password_hash"], accounts.NO_PASSWORD)
    [welcome] = outbox(db, template="welcome")
    assert welcome["to_addr"] == "ayse@example.com" and "/auth/forgot-password" in welcome["body_text"]
    [event] = [e for e in events.for_company(db, owner["company_id"]) if e["kind"] == "company.registered"]
    assert event["actor"].startswith("api:bk_test_") and key not in event["actor"]


def test_web_sign_up_welcome_has_no_set_password_line(db, settings, password_hash):
    make_company(db, settings, START, password_hash, email="web@example.com")
    [welcome] = outbox(db, template="welcome")
    assert "forgot-password" not in welcome["body_text"]


def test_a_second_create_with_the_same_external_id_is_409_naming_the_customer(client, key, db):
    first = new_customer(client, key, 1)
    response = client.post("/api/v1/customers", headers=bearer(key),
                           json={"external_id": "user_1", "name": "Other", "email": "other@example.com"})
    assert response.status_code == 409
    assert response.json()["customer"] == first["id"] and first["id"] in response.json()["detail"]
    taken = client.post("/api/v1/customers", headers=bearer(key),
                        json={"external_id": "user_2", "name": "Other", "email": "owner1@example.com"})
    assert taken.status_code == 409 and taken.json()["customer"] == first["id"]
    assert one(db, "SELECT count(*) AS n FROM companies")["n"] == 1


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(client, key, db, clock):
    body = {"external_id": "u_1", "name": "Acme", "email": "a@example.com"}
    headers = {**bearer(key), "Idempotency-Key": "7b0e1c2a"}
    first = client.post("/api/v1/customers", headers=headers, json=body)
    again = client.post("/api/v1/customers", headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.post("/api/v1/customers", headers=headers, json={**body, "name": "Acme 2"})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(rows(db, "SELECT id FROM companies")) == 1 and len(outbox(db, template="welcome")) == 1
    # another API key's requests are its own: the same Idempotency-Key there is a new request
    other_key = make_key(client.app, name="Another service")
    second = client.post("/api/v1/customers", headers={**bearer(other_key), "Idempotency-Key": "7b0e1c2a"},
                         json={"external_id": "u_2", "name": "Beta", "email": "b@example.com"})
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    # a day later the key is forgotten: the same body is a new create (and meets the existing external_id)
    clock.advance(timedelta(hours=24, seconds=1))
    assert client.post("/api/v1/customers", headers=headers, json=body).status_code == 409


def test_get_and_find_by_external_id(client, key):
    created = new_customer(client, key, 1)
    assert client.get(f"/api/v1/customers/{created['id']}", headers=bearer(key)).json() == created
    found = client.get("/api/v1/customers", params={"external_id": "user_1"}, headers=bearer(key)).json()
    assert found == {"object": "list", "data": [created], "has_more": False}
    none = client.get("/api/v1/customers", params={"external_id": "nobody"}, headers=bearer(key)).json()
    assert none["data"] == []


def test_list_pages_newest_first_with_a_cursor(client, key):
    ids = [new_customer(client, key, n)["id"] for n in range(1, 6)]
    first = client.get("/api/v1/customers?limit=2", headers=bearer(key)).json()
    assert [c["id"] for c in first["data"]] == [ids[4], ids[3]] and first["has_more"] is True
    seen = [c["id"] for c in first["data"]]
    page = first
    while page["has_more"]:
        page = client.get("/api/v1/customers", params={"limit": 2, "starting_after": page["data"][-1]["id"]},
                          headers=bearer(key)).json()
        seen += [c["id"] for c in page["data"]]
    assert seen == ids[::-1]
    bad = client.get("/api/v1/customers?limit=500", headers=bearer(key))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
    assert client.get("/api/v1/customers?starting_after=5", headers=bearer(key)).status_code == 422


def test_patch_links_a_web_registered_customer(client, key, db, settings, password_hash):
    owner = make_company(db, settings, START, password_hash, email="web@example.com", company_name="Web Ltd")
    cid = f"cus_{owner['company_id']}"
    # the host tries to create its user, learns who it is, and links it
    conflict = client.post("/api/v1/customers", headers=bearer(key),
                           json={"external_id": "host_9", "name": "Web Ltd", "email": "web@example.com"})
    assert conflict.status_code == 409 and conflict.json()["customer"] == cid
    patched = client.patch(f"/api/v1/customers/{cid}", headers=bearer(key),
                           json={"external_id": "host_9", "name": "Web Ltd. Şti.", "email": "billing@web.example"})
    assert patched.status_code == 200
    assert (patched.json()["external_id"], patched.json()["name"], patched.json()["email"]) == (
        "host_9", "Web Ltd. Şti.", "billing@web.example")
    assert client.get("/api/v1/customers?external_id=host_9", headers=bearer(key)).json()["data"][0]["id"] == cid
    # the owner logs in with the new address and the same password
    assert accounts.user_by_email(db, "billing@web.example")["id"] == owner["id"]


def test_patch_refuses_a_taken_external_id_or_email_and_bad_fields(client, key):
    a, b = new_customer(client, key, 1), new_customer(client, key, 2)
    taken = client.patch(f"/api/v1/customers/{b['id']}", headers=bearer(key), json={"external_id": "user_1"})
    assert taken.status_code == 409 and taken.json()["customer"] == a["id"]
    email = client.patch(f"/api/v1/customers/{b['id']}", headers=bearer(key), json={"email": "owner1@example.com"})
    assert email.status_code == 409
    bad = client.patch(f"/api/v1/customers/{b['id']}", headers=bearer(key), json={"email": "nope", "name": None})
    assert bad.status_code == 422
    assert client.patch(f"/api/v1/customers/{b['id']}", headers=bearer(key), json={}).status_code == 422
    assert client.patch("/api/v1/customers/cus_99", headers=bearer(key), json={"name": "X"}).status_code == 404
    unlinked = client.patch(f"/api/v1/customers/{b['id']}", headers=bearer(key), json={"external_id": None})
    assert unlinked.status_code == 200 and unlinked.json()["external_id"] is None
    assert client.get(f"/api/v1/customers/{a['id']}", headers=bearer(key)).json() == a


def test_entitlements_carry_an_etag_and_answer_304_until_something_changes(client, key):
    cid = new_customer(client, key, 1)["id"]
    first = client.get(f"/api/v1/customers/{cid}/entitlements", headers=bearer(key))
    assert first.status_code == 200 and first.headers["etag"]
    data = first.json()
    assert (data["customer"], data["plan"], data["status"], data["access"]) == (cid, "starter", "trialing", True)
    assert data["usage"] == {"workspaces": None, "storage_bytes": None, "reported_at": None}
    same = client.get(f"/api/v1/customers/{cid}/entitlements",
                      headers={**bearer(key), "If-None-Match": first.headers["etag"]})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == first.headers["etag"]
    weak = client.get(f"/api/v1/customers/{cid}/entitlements",
                      headers={**bearer(key), "If-None-Match": f'"other", W/{first.headers["etag"]}'})
    assert weak.status_code == 304
    client.put(f"/api/v1/customers/{cid}/usage", headers=bearer(key), json={"workspaces": 7, "storage_bytes": 10})
    changed = client.get(f"/api/v1/customers/{cid}/entitlements",
                         headers={**bearer(key), "If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and changed.json()["over_limit"] == ["workspaces"]


def test_put_usage_records_and_answers_the_entitlements(client, key, clock):
    cid = new_customer(client, key, 1)["id"]
    response = client.put(f"/api/v1/customers/{cid}/usage", headers=bearer(key),
                          json={"workspaces": 3, "storage_bytes": 11 * 1024 ** 3})
    assert response.status_code == 200
    assert response.json()["usage"] == {"workspaces": 3, "storage_bytes": 11 * 1024 ** 3,
                                        "reported_at": "2026-11-27T09:00:00Z"}
    assert response.json()["over_limit"] == ["storage_gb"]
    for bad in ({"workspaces": -1, "storage_bytes": 0}, {"workspaces": True, "storage_bytes": 0},
                {"workspaces": 1}, {"workspaces": 1.5, "storage_bytes": 0}):
        assert client.put(f"/api/v1/customers/{cid}/usage", headers=bearer(key), json=bad).status_code == 422
    missing = client.put("/api/v1/customers/cus_77/usage", headers=bearer(key), json={"workspaces": 1,
                                                                                      "storage_bytes": 0})
    assert missing.status_code == 404


def test_payments_and_invoices_of_a_customer(client, key, db, settings):
    from test_payments import apply, callback, checkout

    cid = new_customer(client, key, 1)["id"]
    owner = accounts.user_by_email(db, "owner1@example.com")
    failed = checkout(db, settings, owner).payment
    apply(db, settings, callback(settings, failed, status="failed"))
    paid = checkout(db, settings, owner).payment
    apply(db, settings, callback(settings, paid))
    payments = client.get(f"/api/v1/customers/{cid}/payments", headers=bearer(key)).json()
    assert [(p["id"], p["status"]) for p in payments["data"]] == [(f"pay_{paid['id']}", "succeeded"),
                                                                   (f"pay_{failed['id']}", "failed")]
    assert payments["data"][0]["invoice"] == "INV-2026-000001"
    page = client.get(f"/api/v1/customers/{cid}/payments?limit=1&starting_after=pay_{paid['id']}",
                      headers=bearer(key)).json()
    assert [p["id"] for p in page["data"]] == [f"pay_{failed['id']}"] and page["has_more"] is False
    invoices = client.get(f"/api/v1/customers/{cid}/invoices", headers=bearer(key)).json()
    [invoice] = invoices["data"]
    assert (invoice["number"], invoice["total"], invoice["currency"]) == ("INV-2026-000001", 2900, "USD")
    assert client.get("/api/v1/invoices/INV-2026-000001", headers=bearer(key)).json() == invoice
    assert client.get("/api/v1/invoices/INV-2026-000999", headers=bearer(key)).status_code == 404
    assert client.get("/api/v1/customers/cus_77/invoices", headers=bearer(key)).status_code == 404


def test_plans_list_the_catalog(client, key):
    plans = client.get("/api/v1/plans", headers=bearer(key)).json()["data"]
    assert plans[0] == {"code": "starter", "name": "Starter", "price": 2900, "currency": "USD", "interval": "month",
                        "description": "For small teams getting started.", "trial_days": 14,
                        "limits": {"workspaces": 5, "storage_gb": 10}}
    assert [p["code"] for p in plans] == ["starter", "team", "enterprise"]
    assert plans[2]["limits"]["workspaces"] is None


def test_portal_session_gives_a_single_use_link(client, key, db):
    cid = new_customer(client, key, 1)["id"]
    response = client.post("/api/v1/portal-sessions", headers=bearer(key),
                           json={"customer": cid, "return_url": "https://app.example.com/settings"})
    assert response.status_code == 201
    link = response.json()
    assert link["url"].startswith("http://testserver/portal/") and link["expires_at"] == "2026-11-27T09:05:00Z"
    row = one(db, "SELECT * FROM portal_sessions")
    assert row["created_by"].startswith("api:bk_test_") and link["url"].rsplit("/", 1)[1] not in row["token_hash"]
    bad = client.post("/api/v1/portal-sessions", headers=bearer(key),
                      json={"customer": cid, "return_url": "javascript:alert(1)", "flow": "subscribe"})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"return_url", "plan"}
    nobody = client.post("/api/v1/portal-sessions", headers=bearer(key),
                         json={"customer": "cus_404", "return_url": "https://app.example.com/"})
    assert nobody.status_code == 422 and nobody.json()["errors"][0]["field"] == "customer"
