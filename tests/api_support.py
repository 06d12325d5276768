"""Helpers for the JSON API tests: keys made through the domain, requests with them."""

from __future__ import annotations

from billing.api import keys
from billing.clock import utcnow


def make_key(app, scope="write", name="Host app") -> str:
    settings = app.state.settings
    _row, key = keys.create(app.state.store.db(), utcnow(), settings, name, scope)
    return key


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def new_customer(client, key, n=1, **fields) -> dict:
    body = {"external_id": f"user_{n}", "name": f"Firma {n}", "email": f"owner{n}@example.com", **fields}
    response = client.post("/api/v1/customers", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()
