"""LOG_FORMAT=json: one object per line with the request's id, and nothing in it that is secret."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re

import pyotp
import pytest

from billing.api import keys
from billing.ops import logs
from billing.ops.logs import JsonFormatter, Masker, MaskFilter, logging_config
from conftest import START, login, post, register, wait_for
from test_auth_http import reset_link
from test_checkout_http import callback_body, checkout_oid, pay, subscribe
from test_two_factor import enrol
from test_webhooks import add_endpoint, wait_delivered
from webhook_receiver import Receiver


@pytest.fixture
def env():
    return {"LOG_FORMAT": "json"}


@pytest.fixture
def restore_logging():
    """dictConfig changes process-wide loggers: put every one back as it was."""
    manager = logging.root.manager
    saved = {name: (lg.level, lg.propagate, list(lg.handlers), lg.disabled)
             for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root = (logging.root.level, list(logging.root.handlers))
    yield
    for name, lg in list(manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        level, propagate, handlers, disabled = saved.get(name, (logging.NOTSET, True, [], False))
        lg.setLevel(level)
        lg.propagate, lg.handlers, lg.disabled = propagate, handlers, disabled
    logging.root.setLevel(root[0])
    logging.root.handlers = root[1]


@pytest.fixture
def json_logs(settings, restore_logging):
    """The server's logging configuration (uvicorn's, through cli._logging_config), into a buffer."""
    from billing.cli import _logging_config

    buffer = io.StringIO()
    config = _logging_config(settings)
    for handler in config["handlers"].values():
        handler.pop("stream", None)
        handler["class"] = "logging.StreamHandler"
    logging.config.dictConfig(config)
    for handler in {*logging.root.handlers, *logging.getLogger("billing").handlers,
                    *logging.getLogger("uvicorn").handlers}:
        handler.setStream(buffer)
    return buffer


def lines(buffer) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_each_request_gets_an_id_in_its_header_and_every_log_line(json_logs, client):
    response = client.get("/pricing", headers={"X-Request-ID": "lb-7f3a.42"})
    assert response.headers["x-request-id"] == "lb-7f3a.42"
    [access] = [line for line in lines(json_logs) if line["logger"] == "billing.access"]
    assert access["request_id"] == "lb-7f3a.42"
    assert (access["method"], access["route"], access["status"]) == ("GET", "/pricing", 200)
    assert access["level"] == "info" and access["duration_ms"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", access["time"])


@pytest.mark.parametrize("offered", ["", "a" * 65, "two words", "new\nline", "<script>", "é".encode()])
def test_an_unsafe_request_id_is_replaced_by_a_fresh_one(json_logs, client, offered):
    response = client.get("/healthz", headers={"X-Request-ID": offered})
    generated = response.headers["x-request-id"]
    assert generated not in (offered, str(offered)) and re.fullmatch(r"[0-9a-f]{16}", generated)


def test_requests_without_an_id_get_different_ones(json_logs, client):
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_a_line_logged_while_serving_carries_the_request_id_and_the_company(json_logs, client, settings):
    register(client)
    client.post("/billing/callback", data={**callback_body(settings, "PB1TX"), "hash": "forged"},
                headers={"X-Request-ID": "paytr-1"})
    refused = [line for line in lines(json_logs) if line["logger"] == "billing.callback"]
    assert refused and refused[0]["request_id"] == "paytr-1" and refused[0]["level"] == "warning"
    client.get("/billing/", headers={"X-Request-ID": "dash-1"})
    [page] = [line for line in lines(json_logs) if line.get("request_id") == "dash-1"]
    assert page["route"] == "/billing/" and isinstance(page["company_id"], int)


def test_lines_logged_inside_a_customers_request_carry_their_company(json_logs, client, monkeypatch):
    """Not only the access line: anything a handler or domain function logs names the company."""
    from billing import dashboard

    overview = dashboard.overview

    def logging_overview(db, now, company_id):
        logging.getLogger("billing.dashboard").warning("dashboard read")
        return overview(db, now, company_id)

    monkeypatch.setattr(dashboard, "overview", logging_overview)
    register(client)
    client.get("/billing/", headers={"X-Request-ID": "dash-2"})
    [line] = [line for line in lines(json_logs) if line["message"] == "dashboard read"]
    assert line["request_id"] == "dash-2" and isinstance(line["company_id"], int)


def test_emails_cards_and_token_links_are_masked():
    mask = Masker(("an-operator-secret-value",))
    assert mask("mail to ayse.yilmaz@example.com failed") == "mail to a***@example.com failed"
    assert mask("card 4355 0843 5508 4358 declined") == "card [card] declined"
    assert mask("card 4355084355084358") == "[card]".join(["card ", ""])
    assert mask("order 1234567890123 is not a card") == "order 1234567890123 is not a card"  # fails Luhn
    assert mask("GET /auth/reset/abcDEF123 200") == "GET /auth/reset/… 200"
    assert mask("key=an-operator-secret-value") == "key=[secret]"


def test_masking_covers_arguments_and_tracebacks(restore_logging):
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(MaskFilter(Masker(("the-salt-of-the-merchant",))))
    logger = logging.getLogger("billing.test_masking")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info("sending to %s", "mehmet@example.com.tr")
    try:
        raise ValueError("salt the-salt-of-the-merchant for ayse@example.com")
    except ValueError:
        logger.exception("failed")
    text = buffer.getvalue()
    assert "mehmet@" not in text and "m***@example.com.tr" in text
    assert "the-salt-of-the-merchant" not in text and "ayse@" not in text
    [first, second] = [json.loads(line) for line in text.splitlines()]
    assert second["level"] == "error" and "ValueError" in second["exception"]


def test_text_format_keeps_uvicorns_lines_and_adds_no_second_access_line(tmp_path, restore_logging):
    from billing.cli import _logging_config
    from conftest import make_settings

    config = _logging_config(make_settings(tmp_path))
    assert config["loggers"]["billing.access"]["level"] == "WARNING"
    assert "json" not in config["formatters"]
    assert all("mask" in h["filters"] for h in config["handlers"].values())


def test_a_full_flow_logs_no_secret_it_used(json_logs, client, app, db, settings, clock):
    """Sign-up, checkout through the emulator, an API key, a webhook, a password reset and a TOTP
    enrolment, with JSON logs on and every warning path we can reach: not one secret in the logs."""
    used = {
        "SECRET_KEY": str(settings.secret_key),
        "PayTR key": str(settings.paytr_merchant_key),
        "PayTR salt": str(settings.paytr_merchant_salt),
    }
    receiver = Receiver().start()
    try:
        endpoint = add_endpoint(db, settings, receiver)
        used["webhook secret"] = receiver.secrets[0]
        register(client)
        used["session cookie"] = client.cookies["billing_session"]
        pay(client, app, checkout_oid(subscribe(client)))
        # PayTR's callback again (a retry) and a forged one, which is logged as refused.
        client.post("/billing/callback", data={**callback_body(settings, "PB1TX"), "hash": "forged"})
        wait_delivered(db, 3, receiver)
        assert endpoint["url"] == receiver.url
    finally:
        receiver.stop()

    _row, api_key = keys.create(db, START, settings, "host app")
    used["API key"] = api_key
    assert client.get("/api/v1/customers", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    assert client.get("/api/v1/customers", headers={"Authorization": f"Bearer {api_key[:-2]}xx"}).status_code == 401

    secret, codes = enrol(client, clock)
    used["TOTP secret"] = secret
    used["recovery code"] = codes[0]
    code = pyotp.TOTP(secret).at(clock.real_now())
    used["TOTP code"] = code

    post(client, "/auth/logout", token_from="/billing/account")
    post(client, "/auth/forgot-password", {"email": "ayse@example.com"})
    link = reset_link(db)
    used["reset token"] = link.rsplit("/", 1)[1]
    client.get(link)
    post(client, link, {"password": "a new long passphrase", "password_confirm": "a new long passphrase"},
         token_from=link)
    login(client, password="a wrong password for the log")

    wait_for(lambda: any(line["logger"] == "billing.access" for line in lines(json_logs)))
    text = json_logs.getvalue()
    every = lines(text and json_logs)
    assert len(every) > 20 and all(isinstance(line, dict) for line in every)
    assert any(line["route"] == "/auth/reset/{token}" for line in every if line["logger"] == "billing.access")
    leaked = [name for name, value in used.items() if value and value in text]
    assert leaked == [], f"secrets in the logs: {leaked}"
    assert "ayse@example.com" not in text  # masked wherever it was logged


def test_json_lines_have_the_documented_fields(json_logs, client):
    client.get("/pricing")
    [access] = [line for line in lines(json_logs) if line["logger"] == "billing.access"]
    assert {"time", "level", "logger", "message", "request_id", "route", "status", "duration_ms"} <= set(access)
    assert logs.REQUEST.get() is None  # nothing leaks into the next request's context


def test_text_access_lines_are_written_masked_by_uvicorns_formatter(settings, restore_logging, capsys):
    """LOG_FORMAT=text (the default): uvicorn's access formatter needs its five arguments; masking
    must keep them, or every access line becomes a '--- Logging error ---' on stderr."""
    from billing.cli import _logging_config

    logging.config.dictConfig(_logging_config(settings.replace(log_format="text")))
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/auth/reset/s3cretTOKEN", "1.1", 200)
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/billing/callback", "1.1", 400)
    out, err = capsys.readouterr()
    assert "Logging error" not in err and "Logging error" not in out
    assert '"GET /auth/reset/… HTTP/1.1" 200' in out and "s3cretTOKEN" not in out
    assert '"POST /billing/callback HTTP/1.1" 400' in out
