"""The JSON API's front door: keys, scopes, rate limit, and problem details for every error."""

import logging

import pytest

from api_support import bearer, make_key, new_customer

PROBLEM = "application/problem+json"


def problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("http://testserver/api/docs#problem-")
    return body


def test_a_request_without_a_key_is_refused_with_a_bearer_challenge(client):
    response = client.get("/api/v1/plans")
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    # not a login page, not a session cookie: the API is not the website
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("header", ["Bearer bk_test_wrong", "Basic Zm9vOmJhcg==", "Bearer ", "bk_test_x"])
def test_a_wrong_or_malformed_key_is_401_and_never_echoed(client, app, header):
    make_key(app)
    response = client.get("/api/v1/plans", headers={"Authorization": header})
    problem(response, 401)
    assert "bk_test_wrong" not in response.text


def test_a_working_key_reads_and_last_use_is_recorded(client, app, db):
    key = make_key(app)
    assert client.get("/api/v1/plans", headers=bearer(key)).status_code == 200
    [row] = db.execute("SELECT last_used_at FROM api_keys").fetchall()
    assert row[0] is not None


def test_a_read_key_may_read_but_not_write(client, app):
    write_key, read_key = make_key(app), make_key(app, scope="read", name="Dashboards")
    new_customer(client, write_key)
    assert client.get("/api/v1/customers/cus_1", headers=bearer(read_key)).status_code == 200
    body = problem(client.post("/api/v1/customers", headers=bearer(read_key),
                               json={"external_id": "u2", "name": "B", "email": "b@example.com"}), 403)
    assert "read-only" in body["detail"]
    problem(client.put("/api/v1/customers/cus_1/usage", headers=bearer(read_key),
                       json={"workspaces": 1, "storage_bytes": 0}), 403)


def test_unknown_routes_and_wrong_methods_are_problems(client, app):
    key = make_key(app)
    body = problem(client.get("/api/v1/customerz", headers=bearer(key)), 404)
    assert "/api/v1/openapi.json" in body["detail"]
    response = client.delete("/api/v1/plans", headers=bearer(key))
    problem(response, 405)
    assert "GET" in response.headers["allow"]
    problem(client.get("/api/v1/customers/42", headers=bearer(key)), 404)  # ids are cus_42
    problem(client.get("/api/v1/customers/cus_999", headers=bearer(key)), 404)


def test_bad_json_is_400_and_a_list_is_not_an_object(client, app):
    key = make_key(app)
    headers = {**bearer(key), "Content-Type": "application/json"}
    body = problem(client.post("/api/v1/customers", headers=headers, content=b'{"name": '), 400)
    assert "not valid JSON" in body["detail"]
    problem(client.post("/api/v1/customers", headers=headers, content=b"[1, 2]"), 400)
    problem(client.post("/api/v1/customers", headers=headers, content=b'{"x": NaN}'), 400)
    problem(client.post("/api/v1/customers", headers=headers, content=b"[" * 30000), 400)
    problem(client.post("/api/v1/customers", headers=headers, content=b""), 400)
    form = {**bearer(key), "Content-Type": "application/x-www-form-urlencoded"}
    problem(client.post("/api/v1/customers", headers=form, content=b"name=x"), 415)


def test_bodies_over_64_kib_are_413_by_header_and_by_streamed_size(client, app, db):
    key = make_key(app)
    big = b'{"name": "' + b"x" * (65 * 1024) + b'"}'
    problem(client.post("/api/v1/customers", headers={**bearer(key), "Content-Type": "application/json"},
                        content=big), 413)

    def chunks():  # no Content-Length: sent chunked
        yield b'{"name": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    problem(client.post("/api/v1/customers", headers={**bearer(key), "Content-Type": "application/json"},
                        content=chunks()), 413)
    assert db.execute("SELECT count(*) FROM companies").fetchone()[0] == 0


def test_validation_errors_name_each_field(client, app):
    key = make_key(app)
    body = problem(client.post("/api/v1/customers", headers=bearer(key),
                               json={"external_id": 5, "name": "", "email": "not-an-email", "locale": "de",
                                     "timezone": "Mars/Olympus", "colour": "red"}), 422)
    assert [e["field"] for e in body["errors"]] == ["colour"]  # unknown fields first: likely a typo
    body = problem(client.post("/api/v1/customers", headers=bearer(key),
                               json={"external_id": 5, "name": "", "email": "not-an-email", "locale": "de",
                                     "timezone": "Mars/Olympus"}), 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert set(fields) == {"external_id", "name", "email", "locale", "timezone"}
    assert "IANA" in fields["timezone"] and "tr or en" in fields["locale"]


def test_over_the_rate_a_key_gets_429_with_retry_after_and_others_are_unaffected(tmp_path, clock):
    from starlette.testclient import TestClient

    from billing.app import create_app
    from conftest import make_settings

    app = create_app(make_settings(tmp_path, API_RATE_PER_SECOND=1, API_RATE_BURST=3), clock=clock)
    app.state.api.state.buckets.monotonic = lambda: 100.0  # time stands still: no token comes back
    with TestClient(app, base_url="http://testserver") as client:
        busy, quiet = make_key(app, name="busy"), make_key(app, name="quiet")
        statuses = [client.get("/api/v1/plans", headers=bearer(busy)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = client.get("/api/v1/plans", headers=bearer(busy))
        body = problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1 and "1 requests a second" in body["detail"]
        assert client.get("/api/v1/plans", headers=bearer(quiet)).status_code == 200


def test_json_answers_carry_security_headers_and_are_not_cached(client, app):
    key = make_key(app)
    response = client.get("/api/v1/plans", headers=bearer(key))
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_keys_never_reach_the_logs(client, app, caplog):
    key = make_key(app)
    with caplog.at_level(logging.DEBUG):
        client.get("/api/v1/plans", headers=bearer(key))
        client.get("/api/v1/nowhere", headers=bearer(key))
        client.get("/api/v1/plans", headers=bearer(key + "x"))
    assert key not in caplog.text


def test_the_web_pages_still_get_their_own_headers_and_sessions(client):
    page = client.get("/auth/login")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
