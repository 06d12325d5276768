"""What an attacker's probe found (issue 7, section 2): each answer is a clear 4xx or form
error that changes nothing, never a 500, and each limit holds under a burst."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient

from billing import accounts, cli, clock as clock_module, money, settings as settings_module
from billing.accounts import FormError
from billing.billing_details import check as check_details
from billing.db import Store, one, rows, scalar
from billing.paytr import protocol
from billing.settings import ConfigError
from conftest import (PASSWORD, START, csrf, free_port, login, make_company, make_settings, outbox, post, register,
                      second_browser, visible, wait_for)
from test_refunds import at_paytr, paid, pay_twice, refund, staff  # noqa: F401 (fixtures)
from test_settings import PRODUCTION

ROOT = Path(__file__).resolve().parent.parent
FORM = {"content-type": "application/x-www-form-urlencoded"}


def count(db, table: str) -> int:
    return scalar(db, f"SELECT count(*) FROM {table}")


# --- 1. login throttling holds under a burst -------------------------------------------------


@pytest.fixture
def password_checks(monkeypatch):
    """Every password actually checked (argon2 verify), slowed a little so tries overlap."""
    checked = []
    real = accounts.password_matches

    def counting(password_hash, password):
        checked.append(password)
        time.sleep(0.02)
        return real(password_hash, password)

    monkeypatch.setattr(accounts, "password_matches", counting)
    return checked


def test_forty_parallel_guesses_check_at_most_five_passwords(db, settings, password_hash, password_checks):
    make_company(db, settings, START, password_hash, email="ayse@example.com")
    store, barrier = db.store, threading.Barrier(40)

    def guess(i):
        barrier.wait()  # all forty at once, each from its own address (a botnet)
        return accounts.check_login(store.db(), START, "ayse@example.com", f"guess number {i}", f"10.0.0.{i}")

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(guess, range(40)))
    assert results == [None] * 40
    assert len(password_checks) <= accounts.ACCOUNT_LOCK_AFTER
    # The account is locked now, even for the right password, and no further password is checked.
    assert accounts.check_login(db, START, "ayse@example.com", PASSWORD, "10.9.9.9") is None
    assert len(password_checks) <= accounts.ACCOUNT_LOCK_AFTER


def test_parallel_logins_over_http_are_refused_after_the_limit(app, client, password_checks):
    register(client)
    client.cookies.clear()
    browsers = [second_browser(app) for _ in range(12)]
    tokens = [csrf(b) for b in browsers]
    barrier = threading.Barrier(len(browsers))

    def guess(i):
        barrier.wait()
        return browsers[i].post("/auth/login", data={"csrf_token": tokens[i], "email": "ayse@example.com",
                                                     "password": f"wrong guess {i}"})

    with ThreadPoolExecutor(len(browsers)) as pool:
        statuses = sorted(r.status_code for r in pool.map(guess, range(len(browsers))))
    assert len(password_checks) <= accounts.ACCOUNT_LOCK_AFTER
    assert statuses.count(429) >= len(browsers) - accounts.ACCOUNT_LOCK_AFTER
    assert set(statuses) <= {422, 429}


# --- 2. HEAD (and every method but GET and HEAD) -------------------------------------------------


def test_head_with_a_form_body_changes_nothing(client, db):
    body = urlencode({"company_name": "Sahte A.Ş.", "name": "Saldırgan", "email": "head@example.com",
                      "password": PASSWORD})
    answer = client.request("HEAD", "/auth/register", content=body, headers=FORM)
    assert answer.status_code == 200 and answer.content == b""
    assert count(db, "companies") == 0 and count(db, "users") == 0

    register(client, email="known@example.com")
    client.cookies.clear()
    for path, fields in (("/auth/login", {"email": "known@example.com", "password": PASSWORD}),
                         ("/auth/forgot-password", {"email": "known@example.com"})):
        assert client.request("HEAD", path, content=urlencode(fields), headers=FORM).status_code == 200
    assert client.get("/billing/", follow_redirects=False).headers["location"].startswith("/auth/login")
    assert count(db, "login_attempts") == 0 and outbox(db, template="password_reset") == []


def test_only_get_and_head_skip_the_csrf_token(client, db):
    body = urlencode({"company_name": "Sahte A.Ş.", "name": "X", "email": "o@example.com", "password": PASSWORD})
    for method in ("OPTIONS", "TRACE", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/auth/register", content=body, headers=FORM).status_code == 403
    assert count(db, "companies") == 0


# --- 3. amounts ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1_0", "١٠", "１０", "1e-2", "1e999999", "1E2", "10.5.5", "1.234", "-1", "+1",
                                  "1 000", ".5", "5.", "0x10", "NaN", "Infinity", "1" * 13, "1\u00a0000", "١٫٥"])
def test_amounts_are_ascii_digits_with_two_decimals_at_most(text):
    with pytest.raises(money.MoneyError):
        money.parse(text)


@pytest.mark.parametrize("text, minor", [(" 29 ", 2900), ("29,5", 2950), ("0.07", 7), ("999999999999.99", 99999999999999)])
def test_plain_amounts_still_parse(text, minor):
    assert money.parse(text) == minor


@pytest.mark.parametrize("amount", ["1_0", "١٠", "1e-2", "1e999999"])
def test_staff_refund_form_refuses_odd_amounts_and_refunds_nothing(app, db, paid, staff, amount):
    response = refund(staff, paid, amount=amount)
    assert response.status_code == 422
    assert "Enter the amount to refund, like 29.00." in visible(response)
    assert count(db, "refunds") == 0 and at_paytr(app, paid) == []


# --- 4. no 500s on odd input ---------------------------------------------------------------------


def test_htmx_login_with_non_ascii_next_redirects_instead_of_failing(client):
    register(client)
    client.cookies.clear()
    response = htmx_login(client, "/billing/ş\u2028")
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == "/billing/%C5%9F%E2%80%A8"
    for target in ("//[x", "http://[::1"):  # urlsplit raises on these
        client.cookies.clear()
        assert htmx_login(client, target).headers["hx-redirect"] == "/billing/"


def htmx_login(client, target):
    return post(client, "/auth/login", {"email": "ayse@example.com", "password": PASSWORD, "next": target},
                headers={"HX-Request": "true"})


def test_a_signed_callback_with_a_twenty_digit_amount_is_a_400(app, client, db, settings):
    register(client)
    oid = re.fullmatch(r"/billing/checkout/(\w+)",
                       post(client, "/billing/subscribe/starter", token_from="/billing/").headers["location"]).group(1)
    before = rows(db, "SELECT * FROM payments")
    form = protocol.callback_form(merchant_oid=oid, status="success", total_amount=10**19,
                                  key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt))
    answer = client.post("/billing/callback", data=form)
    assert answer.status_code == 400 and answer.text == "bad request: bad total_amount"
    assert rows(db, "SELECT * FROM payments") == before
    assert count(db, "callbacks") == 0 and count(db, "invoices") == 0 and count(db, "anomalies") == 0


@pytest.mark.parametrize("advance", ["1000000000d", "99999999999999999999999h", "3661d", "٨d", "1_0d"])
def test_a_huge_or_odd_test_clock_step_is_a_form_error(app, client, db, staff, advance):
    response = post(staff, "/admin/clock", {"advance": advance}, token_from="/admin/clock")
    assert response.status_code == 422
    assert "too far" in visible(response) or "is not a duration" in visible(response)
    assert clock_module.load_offset(db).total_seconds() == 0


def test_the_test_clock_stays_within_a_century(db):
    with pytest.raises(ValueError, match="at most"):
        clock_module.save_offset(db, clock_module.MAX_OFFSET + clock_module.parse_duration("1m"))
    assert clock_module.load_offset(db).total_seconds() == 0


# --- 5. text people type ---------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, message", [
    ("company_name", "Acme\x00 Ltd", "control characters"),
    ("name", "Ayşe\x1b[31m", "control characters"),
    ("company_name", "Acme \u202eLTD", "direction"),
    ("name", "Ayşe \u2066Yılmaz\u2069", "direction"),
])
def test_registration_refuses_control_and_bidi_characters(client, db, field, value, message):
    typed = {"company": "Yılmaz A.Ş.", "name": "Ayşe"}
    typed["company" if field == "company_name" else "name"] = value
    response = register(client, **typed)
    assert response.status_code == 422 and message in visible(response)
    assert count(db, "companies") == 0


def test_invisible_characters_are_dropped_from_names(client, db):
    assert register(client, company="Yıl\u200bmaz\u2060 A.Ş.\ufeff", name="Ay\u200dşe\u200e").status_code == 303
    company = one(db, "SELECT name FROM companies")
    user = one(db, "SELECT name FROM users")
    assert (company["name"], user["name"]) == ("Yılmaz A.Ş.", "Ayşe")


@pytest.mark.parametrize("field, value, message", [
    ("legal_name", "Yılmaz\x00", "control characters"),
    ("tax_office", "Kadıköy\u202e", "direction"),
    ("address", "Moda Cad.\x07\nKadıköy", "control characters"),
    ("tax_id", "٤٥٤٠٥٣٦٩٢٠", "10 digits"),  # Arabic-Indic digits: str.isdigit() says yes
    ("tax_id", "454-053-69-20", "10 digits"),
    ("tax_id", "454.053.69.20", "10 digits"),
])
def test_billing_details_refuse_odd_characters(field, value, message):
    data = {"legal_name": "Yılmaz Yazılım", "tax_office": "Kadıköy", "tax_id": "4540536920", field: value}
    with pytest.raises(FormError) as caught:
        check_details(data)
    assert message in caught.value.errors[field]


def test_billing_details_form_refuses_a_nul_and_changes_nothing(client, db):
    register(client)
    response = post(client, "/billing/details", {"legal_name": "Yılmaz\x00 Yazılım", "tax_id": "4540536920",
                                                 "tax_office": "Kadıköy"}, token_from="/billing/details")
    assert response.status_code == 422 and "control characters" in visible(response)
    assert one(db, "SELECT billing_legal_name, billing_tax_id FROM companies") == {
        "billing_legal_name": None, "billing_tax_id": None}


def test_a_refund_reason_with_a_nul_is_refused(app, db, paid, staff):
    response = refund(staff, paid, reason="Müşteri\x00 istedi")
    assert response.status_code == 422 and "control characters" in visible(response)
    assert count(db, "refunds") == 0 and at_paytr(app, paid) == []


def test_an_anomaly_note_with_a_bidi_override_is_refused(client, app, db, staff):
    pay_twice(client, app)
    anomaly_id = one(db, "SELECT id FROM anomalies")["id"]
    answer = post(staff, f"/admin/anomalies/{anomaly_id}/resolve", {"note": "İade \u202eedildi", "back": "/admin/"},
                  token_from="/admin/")
    assert "direction" in visible(staff.get(answer.headers["location"]))
    assert one(db, "SELECT resolved_at FROM anomalies")["resolved_at"] is None


# --- 6. production start-up and headers ---------------------------------------------------------------


def production(tmp_path, **overrides):
    return settings_module.load({"BILLING_DATA_DIR": str(tmp_path / "data"), **PRODUCTION, **overrides},
                                env_file=None)


@pytest.mark.parametrize("overrides, reason", [
    ({"BILLING_SECRET_KEY": "a" * 64}, "one character repeated"),
    ({"BILLING_SECRET_KEY": "s3cr3t-" + "x" * 40}, "does not look random"),
    ({"BILLING_SECRET_KEY": "passwordpasswordpasswordpasswordpassword1234"}, "does not look random"),
    ({"BILLING_SECRET_KEY": "Zr3kq0P-yN8vW2sLxE5bT9aJcF1gH7uM"}, "too short"),  # 32 characters: 24 bytes
    ({"PAYTR_MERCHANT_KEY": settings_module.DEMO_MERCHANT_KEY}, "demo value"),
    ({"PAYTR_MERCHANT_SALT": settings_module.DEMO_MERCHANT_SALT}, "demo value"),
    ({"PAYTR_API_BASE": "http://www.paytr.com"}, "PAYTR_API_BASE must start with https://"),
    ({"SMTP_TLS": "none"}, "SMTP_TLS=none"),
    ({"SMTP_TLS": "none", "SMTP_HOST": "10.0.0.5"}, "SMTP_TLS=none"),
])
def test_production_refuses_unsafe_settings(tmp_path, overrides, reason):
    with pytest.raises(ConfigError, match=reason):
        production(tmp_path, **overrides)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "[::1]"])
def test_plain_smtp_is_allowed_to_a_server_on_this_machine(tmp_path, host):
    assert production(tmp_path, SMTP_TLS="none", SMTP_HOST=host).smtp_tls == "none"


def test_generated_keys_always_pass(tmp_path):
    import secrets

    for key in [secrets.token_urlsafe(32) for _ in range(200)] + [secrets.token_hex(32) for _ in range(200)]:
        production(tmp_path, BILLING_SECRET_KEY=key)


@pytest.mark.parametrize("env", [{"BASE_URL": "https://billing.example.com", "PAYTR_API_BASE": "https://www.paytr.com"}])
def test_https_gets_hsts_and_forms_may_only_go_to_us_and_paytr(client):
    for path in ("/", "/auth/login", "/no-such-page", "/static/css/app.css"):
        response = client.get(path)
        assert response.headers["strict-transport-security"] == "max-age=31536000", path
    csp = client.get("/auth/login").headers["content-security-policy"]
    assert "form-action 'self' https://www.paytr.com;" in csp


def test_plain_http_development_has_no_hsts_and_forms_stay_here(client):
    response = client.get("/auth/login")
    assert "strict-transport-security" not in response.headers
    assert "form-action 'self';" in response.headers["content-security-policy"]


# --- 7. development mode stays on this machine unless chosen ------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """cli.main in this process: no BILLING_ENV, no .env, a fresh data dir; serving recorded, not done."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BILLING_ENV", raising=False)
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path / "data"))
    served = []
    monkeypatch.setattr(cli, "serve", lambda settings, host, port: served.append(host))
    monkeypatch.setattr("billing.paytr.emulator.run_standalone", lambda host, port, config: served.append(host))
    umask = os.umask(0o022)
    yield served
    os.umask(umask)


@pytest.mark.parametrize("argv", [["--host", "0.0.0.0"], ["serve", "--host", "192.168.1.20"],
                                  ["paytr-emulator", "--host", "0.0.0.0"]])
def test_development_by_default_refuses_to_listen_beyond_this_machine(cli_env, capsys, argv):
    assert cli.main(argv) == 2
    assert cli_env == []
    assert "BILLING_ENV is not set" in capsys.readouterr().err


def test_loopback_or_an_explicit_environment_may_listen(cli_env, monkeypatch):
    assert cli.main(["--host", "127.0.0.1"]) == 0
    monkeypatch.setenv("BILLING_ENV", "development")
    assert cli.main(["--host", "0.0.0.0"]) == 0
    assert cli_env == ["127.0.0.1", "0.0.0.0"]


# --- 8. the data directory is ours alone ------------------------------------------------------------------


def modes(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): stat.S_IMODE(p.stat().st_mode) for p in [directory, *directory.rglob("*")]}


def test_database_and_secret_are_private_in_process(client, settings):
    register(client)
    found = modes(settings.data_dir)
    assert found["."] == 0o700
    for name in ("billing.sqlite3", "billing.sqlite3-wal", "billing.sqlite3-shm", "secret_key"):
        assert found[name] == 0o600, name


def test_files_left_readable_by_an_older_version_are_tightened(tmp_path):
    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    for path in (data / "billing.sqlite3", data / "paytr-emulator.pickle", data / "mail" / "00000001.eml"):
        path.write_bytes(b"")
        path.chmod(0o644)
    (data / "mail").chmod(0o755)
    data.chmod(0o755)
    make_settings(tmp_path)
    assert set(modes(data).values()) <= {0o600, 0o700}


def test_a_shared_sticky_directory_is_left_alone(tmp_path):
    """BILLING_DATA_DIR=/tmp by mistake must not lock everyone else out of /tmp."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses").write_bytes(b"")
    (shared / "someone-elses").chmod(0o644)
    settings_module.load({"BILLING_DATA_DIR": str(shared)}, env_file=None)
    Store(shared / "billing.sqlite3").close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "someone-elses").stat().st_mode) == 0o644
    assert stat.S_IMODE((shared / "billing.sqlite3").stat().st_mode) == 0o600


def test_the_server_creates_every_file_private(tmp_path):
    """The real thing: `python main.py` with a permissive umask; register, start a checkout
    (the emulator saves its state) and let the welcome email be captured."""
    port, data = free_port(), tmp_path / "data"
    env = {**os.environ, "BILLING_DATA_DIR": str(data), "BILLING_SCHEDULER": "0"}
    env.pop("BILLING_ENV", None)
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "main.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0o022))
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            wait_for(lambda: _up(http), timeout=30, message="the server")
            token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/auth/register").text).group(1)
            http.post("/auth/register", data={"csrf_token": token, "company_name": "Kip A.Ş.", "name": "Kip",
                                              "email": "kip@example.com", "password": PASSWORD})
            token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/billing/").text).group(1)
            http.post("/billing/subscribe/starter", data={"csrf_token": token})
            wait_for(lambda: list((data / "mail").glob("*.eml")) and (data / "paytr-emulator.pickle").exists(),
                     timeout=20, message="a captured email and the emulator's state")
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
    found = modes(data)
    assert {"billing.sqlite3", "secret_key", "paytr-emulator.pickle", "mail"} <= set(found)
    assert any(name.endswith(".eml") for name in found)
    wrong = {name: oct(mode) for name, mode in found.items() if mode not in (0o600, 0o700)}
    assert wrong == {}


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


# --- 9. who has an account stays private ----------------------------------------------------------------------


def test_signing_up_with_a_taken_address_is_rate_limited_per_client(client, db):
    register(client, email="known@example.com", company="Gizli Şirket A.Ş.")
    client.cookies.clear()
    for _ in range(accounts.IP_LOCK_AFTER):
        taken = register(client, email="known@example.com", company="Başka")
        assert taken.status_code == 422
        page = visible(taken)
        assert "Log in or reset your password" in page and "Gizli Şirket" not in page and "owner" not in page
    # The address is locked now: whatever the address typed, nothing is revealed or created.
    for email in ("known@example.com", "new@example.com"):
        locked = register(client, email=email, company="Başka")
        assert locked.status_code == 429 and "Too many attempts" in visible(locked)
        assert int(locked.headers["retry-after"]) > 0
    assert count(db, "companies") == 1
    # Shared with logins: the same client cannot go on guessing passwords either.
    assert login(client, email="known@example.com").status_code == 429


def test_inviting_an_address_with_an_account_says_nothing_about_it_and_is_rate_limited(client, app, db):
    register(client, email="other@example.com", company="Rakip Ltd.")
    client.cookies.clear()
    register(client, email="owner@example.com", company="Bizim A.Ş.")
    for _ in range(accounts.IP_LOCK_AFTER):
        answer = post(client, "/billing/team/invite", {"email": "other@example.com", "role": "owner"},
                      token_from="/billing/team")
        assert answer.status_code == 422
        page = visible(answer)
        assert "They can log in, or reset their password" in page and "Rakip" not in page
    locked = post(client, "/billing/team/invite", {"email": "fresh@example.com"}, token_from="/billing/team")
    assert locked.status_code == 429 and "Too many attempts" in visible(locked)
    assert count(db, "invites") == 0 and outbox(db, template="invite") == []


def test_forgot_password_does_the_same_work_for_known_and_unknown_addresses(db, settings, password_hash, monkeypatch):
    make_company(db, settings, START, password_hash, email="known@example.com")
    tokens = []
    real_token = accounts._token
    monkeypatch.setattr(accounts, "_token", lambda: tokens.append(1) or real_token())

    def statements(email):
        seen = []
        db.conn.set_trace_callback(seen.append)
        try:
            accounts.request_password_reset(db, START, settings, email, "10.1.1.1")
        finally:
            db.conn.set_trace_callback(None)
        return seen

    known, unknown = statements("known@example.com"), statements("ghost@example.com")
    assert len(tokens) == 2  # a token made (hashed) for both
    for seen in (known, unknown):  # one write transaction each, the attempt recorded in both
        assert seen.count("BEGIN IMMEDIATE") == 1 and seen.count("COMMIT") == 1
        assert sum(s.startswith("INSERT INTO login_attempts") for s in seen) == 1
    assert reads(known) == reads(unknown)  # the same lookups, in the same order
    # Only the known address gets mail, and only queued: the sender sends it later, not the request.
    assert [m["to_addr"] for m in outbox(db)] == ["known@example.com"] * 2  # welcome, then the reset link
    assert one(db, "SELECT status FROM outbox WHERE template = 'password_reset'")["status"] != "sent"


def test_forgot_password_answers_before_doing_the_work(app, client, db, monkeypatch):
    """Over HTTP the answer is complete before any reset work starts, for either address: the
    time to answer is the same, whatever the work costs afterwards."""
    register(client, email="known@example.com")
    client.cookies.clear()
    timeline = []
    real = accounts.request_password_reset
    monkeypatch.setattr(accounts, "request_password_reset",
                        lambda *args, **kwargs: timeline.append(("work", args[3])) or real(*args, **kwargs))

    async def recording(scope, receive, send):
        async def send_and_note(message):
            await send(message)
            if scope["method"] == "POST" and message["type"] == "http.response.body" and not message.get("more_body"):
                timeline.append(("answered", scope["path"]))
        await app(scope, receive, send_and_note)

    browser = TestClient(recording, base_url="http://testserver")  # the app's lifespan already runs
    pages = []
    for email in ("known@example.com", "ghost@example.com"):
        timeline.clear()
        pages.append(visible(post(browser, "/auth/forgot-password", {"email": email})).replace(email, "EMAIL"))
        assert timeline == [("answered", "/auth/forgot-password"), ("work", email)]
    assert pages[0] == pages[1]
    assert [m["to_addr"] for m in outbox(db, template="password_reset")] == ["known@example.com"]


def reads(statements: list[str]) -> list[str]:
    """The SELECTs run, with their values blanked out."""
    return [re.sub(r"'[^']*'|\b\d+\b|\bNULL\b", "?", s) for s in statements if s.lstrip().upper().startswith("SELECT")]


def test_reset_requests_from_one_client_are_capped(db, settings, password_hash):
    for i in range(accounts.RESETS_PER_IP_HOUR + 3):
        make_company(db, settings, START, password_hash, email=f"user{i}@example.com", n=i + 1)
    for i in range(accounts.RESETS_PER_IP_HOUR + 3):
        accounts.request_password_reset(db, START, settings, f"user{i}@example.com", "10.2.2.2")
    assert len(outbox(db, template="password_reset")) == accounts.RESETS_PER_IP_HOUR
