"""The OpenAPI document and reference page, staff's API keys page, and `main.py api-key`."""

import os
import subprocess
import sys
from pathlib import Path

from openapi_spec_validator import validate
from starlette.routing import Route

from api_support import bearer, make_key
from billing import accounts
from conftest import PASSWORD, START, login, post, visible

ROOT = Path(__file__).resolve().parent.parent


def test_the_openapi_document_is_valid_3_1_and_lists_every_route(client, app):
    response = client.get("/api/v1/openapi.json")  # no key needed: it is documentation
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    served = {(method, route.path) for route in app.state.api.routes if isinstance(route, Route)
              for method in route.methods if method != "HEAD"}
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == documented and len(served) == 12
    create = document["paths"]["/api/v1/customers"]["post"]
    assert create["x-scope"] == "write" and {"401", "403", "409", "422", "429"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("CustomerCreate")
    # the figures a host engineer needs are in the document itself
    assert "50 requests a second per key" in document["info"]["description"]
    assert "Authorization: Bearer" in document["info"]["description"]


def test_the_reference_page_shows_every_operation(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    text = visible(page)
    for words in ("Create a customer", "POST /api/v1/customers", "Get a customer's entitlements",
                  "If-None-Match", "PUT /api/v1/customers/{customer_id}/usage", "Create a portal link",
                  "50 requests a second per key", "problem-rate-limited"[8:]):
        assert words in text, words
    assert 'id="problem-rate-limited"' in page.text and 'id="schema-Entitlements"' in page.text
    assert "https://" not in page.text.split("<main", 1)[1].split("</main>")[0].replace(
        "https (http", "")  # no CDN, nothing fetched from elsewhere


def staff_client(client, db):
    accounts.create_staff(db, START, email="ops@example.com", name="Ops", password_hash=accounts.hash_password(PASSWORD))
    assert login(client, "ops@example.com").status_code == 303
    return client


def test_staff_create_a_key_see_it_once_and_revoke_it(client, db):
    staff_client(client, db)
    assert "No API keys yet" in visible(client.get("/admin/api-keys"))
    assert "API keys" in visible(client.get("/admin/"))
    created = post(client, "/admin/api-keys", {"name": "Production app", "scope": "write"},
                   token_from="/admin/api-keys")
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    key = created.text.split('id="new-key"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    assert key.startswith("bk_test_") and len(key) >= 8 + 43
    assert "only time it is shown" in visible(created)
    assert client.get("/api/v1/plans", headers=bearer(key)).status_code == 200
    listing = client.get("/admin/api-keys")
    assert key not in listing.text and key[:18] + "…" in visible(listing) and "Active" in visible(listing)
    [key_id] = [r[0] for r in db.execute("SELECT id FROM api_keys")]
    confirm = client.get(f"/admin/api-keys/{key_id}/revoke")
    assert "Revoke Production app?" in visible(confirm)
    done = post(client, f"/admin/api-keys/{key_id}/revoke", token_from="/admin/api-keys", follow_redirects=True)
    assert "Revoked Production app" in visible(done) and "Revoked" in visible(done)
    assert client.get("/api/v1/plans", headers=bearer(key)).status_code == 401  # at once


def test_the_create_form_explains_a_missing_name(client, db):
    staff_client(client, db)
    response = post(client, "/admin/api-keys", {"name": " ", "scope": "write"}, token_from="/admin/api-keys")
    assert response.status_code == 422 and "Enter a name for the key" in visible(response)
    assert db.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 0


def test_customers_cannot_open_the_keys_page(client, db, settings, password_hash):
    from conftest import make_company

    make_company(db, settings, START, password_hash, email="owner@example.com")
    login(client, "owner@example.com")
    assert client.get("/admin/api-keys").status_code in (403, 404)


def cli(tmp_path, *args):
    env = {**os.environ, "BILLING_DATA_DIR": str(tmp_path / "data"), "BILLING_ENV": "development"}
    return subprocess.run([sys.executable, "main.py", "api-key", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_the_key_alone_lists_and_revokes(tmp_path, clock):
    from starlette.testclient import TestClient

    from billing.app import create_app
    from conftest import make_settings

    created = cli(tmp_path, "create", "CI host", "--scope", "read")
    assert created.returncode == 0
    assert created.stdout.count("\n") == 1 and created.stdout.startswith("bk_test_")
    key = created.stdout.strip()
    assert "shown only this once" in created.stderr and key not in created.stderr
    listed = cli(tmp_path, "list")
    assert "CI host" in listed.stdout and "read" in listed.stdout and key not in listed.stdout
    app = create_app(make_settings(tmp_path), clock=clock)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.get("/api/v1/plans", headers=bearer(key)).status_code == 200
        assert client.post("/api/v1/portal-sessions", headers=bearer(key), json={}).status_code == 403
        revoked = cli(tmp_path, "revoke", key[:18])
        assert revoked.returncode == 0 and revoked.stdout == ""
        assert client.get("/api/v1/plans", headers=bearer(key)).status_code == 401
    assert cli(tmp_path, "revoke", "bk_test_nothing").returncode == 2
    assert cli(tmp_path, "create", "x", "--scope", "admin").returncode == 2


def test_a_production_key_says_live(db, settings):
    from billing.api import keys

    _row, key = keys.create(db, START, settings.replace(env="production"), "Live")
    assert key.startswith("bk_live_") and keys.kind(settings) == "bk_test_"
