"""`python main.py doctor`: each check against the real thing it checks (a database file, an SMTP
server, the PayTR emulator over HTTP), and what an operator reads when it is wrong."""

from __future__ import annotations

import io
import os
import sqlite3
import threading
import time

import pytest
import uvicorn

from billing import cli, migrations
from billing.db import Store, write
from billing.ops import doctor
from billing.paytr.emulator import create_emulator
from billing.paytr.emulator_model import EmulatorConfig
from billing.settings import DEMO_MERCHANT_ID, DEMO_MERCHANT_KEY, DEMO_MERCHANT_SALT
from tests.conftest import SmtpSink, free_port

VALID_VKN = "1234567890"  # check digits valid (tests/test_settings uses it too)


@pytest.fixture(scope="module")
def emulator():
    """The PayTR emulator on its own port, as PayTR would be: a real HTTP server with a Date header."""
    port = free_port()
    app = create_emulator(EmulatorConfig(merchant_id=DEMO_MERCHANT_ID, merchant_key=DEMO_MERCHANT_KEY,
                                         merchant_salt=DEMO_MERCHANT_SALT, notification_url="http://127.0.0.1:9/"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the emulator did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class AuthSink(SmtpSink):
    """The shared SMTP sink, asking for a login (without TLS, as a test server may)."""

    def __init__(self, username: str, password: str):
        super().__init__()
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == username.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok, handled=False)

        handler = self.controller.handler
        self.controller.loop.close()  # the sink's own controller never starts
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, authenticator=authenticator,
                                     auth_require_tls=False, auth_exclude_mechanism=["LOGIN"])


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "data" / "billing.sqlite3"
    store = Store(path)
    with write(store.db()):
        migrations.apply(store.db())
    store.close()
    return path


def environment(tmp_path, emulator, **extra) -> dict:
    return {"BILLING_DATA_DIR": str(tmp_path / "data"), "PAYTR_API_BASE": emulator, **extra}


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_healthy_installation_passes_every_check_that_matters(tmp_path, emulator, database, smtp):
    env = environment(tmp_path, emulator, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="none")
    before = (database.stat().st_mtime_ns, database.read_bytes())
    out = io.StringIO()
    code = doctor.main(env, None, out=out)
    lines = out.getvalue().splitlines()
    checks = by_name(doctor.run(env, None))
    assert code == 0, out.getvalue()
    for name in ("data_dir", "disk", "database", "migrations", "smtp", "paytr", "clock"):
        assert checks[name].status == "ok", checks[name]
    assert "quick_check ok" in checks["database"].detail
    assert f"current ({migrations.migrations._migrations[-1].name}" in checks["migrations"].detail
    assert "accepted the credentials" in checks["paytr"].detail and "Sipariş bulunamadı" in checks["paytr"].detail
    assert "127.0.0.1" in checks["smtp"].detail and "without TLS" in checks["smtp"].detail
    # One line per check, each starting with its verdict, then a summary.
    assert [line.split()[0] for line in lines[:-1]] == [c.status for c in checks.values()]
    assert lines[-1].startswith("nothing failed")
    # The database was only read (a WAL reader may leave empty -wal/-shm files, nothing more).
    assert (database.stat().st_mtime_ns, database.read_bytes()) == before
    assert os.path.getsize(f"{database}-wal") == 0


def test_wrong_paytr_salt_is_named_as_a_credentials_problem(tmp_path, emulator, database):
    env = environment(tmp_path, emulator, PAYTR_MERCHANT_SALT="NOTTHESALT12345")
    out = io.StringIO()
    assert doctor.main(env, None, out=out) == 1
    paytr = by_name(doctor.run(env, None))["paytr"]
    assert paytr.status == "fail"
    assert "refused the credentials" in paytr.detail and "paytr_token" in paytr.detail
    assert "NOTTHESALT" not in out.getvalue()  # a secret is never printed
    assert "1 failed (paytr)" in out.getvalue()


def test_unreachable_paytr_fails_outside_the_built_in_emulator(tmp_path, database):
    env = {"BILLING_DATA_DIR": str(tmp_path / "data"), "PAYTR_API_BASE": f"http://127.0.0.1:{free_port()}"}
    checks = by_name(doctor.run(env, None))
    assert checks["paytr"].status == "fail" and "no answer" in checks["paytr"].detail
    assert checks["clock"].status == "warn"


def test_a_clock_far_from_paytrs_fails(tmp_path, emulator, database):
    env = environment(tmp_path, emulator)
    ahead = by_name(doctor.run(env, None, now=lambda: time.time() + 120))["clock"]
    assert ahead.status == "fail" and "ahead of PayTR's clock" in ahead.detail and "NTP" in ahead.detail
    assert 118 < float(ahead.detail.split()[0]) < 122
    slightly = by_name(doctor.run(env, None, now=lambda: time.time() - 10))["clock"]
    assert slightly.status == "warn" and "behind" in slightly.detail


def test_smtp_login_is_tried_and_a_refusal_is_explained(tmp_path, emulator, database):
    sink = AuthSink("mailer", "right password").start()
    try:
        base = environment(tmp_path, emulator, SMTP_HOST="127.0.0.1", SMTP_PORT=sink.port, SMTP_TLS="none",
                           SMTP_USERNAME="mailer")
        good = by_name(doctor.run({**base, "SMTP_PASSWORD": "right password"}, None))["smtp"]
        bad = by_name(doctor.run({**base, "SMTP_PASSWORD": "wrong password"}, None))["smtp"]
    finally:
        sink.stop()
    assert good.status == "ok" and "logged in as mailer" in good.detail
    assert bad.status == "fail" and "refused the login for mailer (535)" in bad.detail
    assert "wrong password" not in bad.detail


def test_starttls_asked_of_a_server_without_it_fails(tmp_path, emulator, database, smtp):
    env = environment(tmp_path, emulator, SMTP_HOST="127.0.0.1", SMTP_PORT=smtp.port, SMTP_TLS="starttls")
    check = by_name(doctor.run(env, None))["smtp"]
    assert check.status == "fail" and "does not offer STARTTLS" in check.detail


def test_smtp_that_does_not_answer_fails(tmp_path, emulator, database):
    env = environment(tmp_path, emulator, SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_TLS="none")
    check = by_name(doctor.run(env, None))["smtp"]
    assert check.status == "fail" and "cannot talk to 127.0.0.1" in check.detail


def test_a_damaged_database_fails_the_integrity_check(tmp_path, emulator, database):
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'payments' "
                        "AND rootpage > 0 LIMIT 1").fetchone()[0]
    conn.close()
    with open(database, "r+b") as f:  # scribble over an index page
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + os.urandom(page_size - 1))
    for full in (False, True):
        check = by_name(doctor.run(environment(tmp_path, emulator), None, full=full))["database"]
        assert check.status == "fail", check
        assert "restore the last good backup" in check.detail


def test_migrations_pending_or_from_a_newer_version(tmp_path, emulator, database):
    conn = sqlite3.connect(database)
    last = migrations.migrations._migrations[-1].name
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", [last])
    conn.commit()
    pending = by_name(doctor.run(environment(tmp_path, emulator), None))["migrations"]
    assert pending.status == "warn" and f"1 pending ({last})" in pending.detail
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('billing', ?, 'x'), "
                 "('billing', 'm999_from_the_future', 'x')", [last])
    conn.commit()
    conn.close()
    newer = by_name(doctor.run(environment(tmp_path, emulator), None))["migrations"]
    assert newer.status == "fail" and "m999_from_the_future" in newer.detail and "newer version" in newer.detail


def test_no_database_yet(tmp_path, emulator):
    checks = by_name(doctor.run(environment(tmp_path, emulator), None))
    assert checks["database"].status == "fail" and "python main.py migrate" in checks["database"].detail
    assert not (tmp_path / "data" / "billing.sqlite3").exists()  # the doctor did not create it


def test_a_data_dir_others_can_read_is_reported_not_fixed(tmp_path, emulator, database, smtp):
    os.chmod(database.parent, 0o755)
    os.chmod(database, 0o644)
    # Production: development's settings loader makes the directory private on its own.
    check = by_name(doctor.run(production_env(tmp_path, emulator, smtp), None))["data_dir"]
    assert check.status == "warn" and "billing.sqlite3 0644" in check.detail and "data 0755" in check.detail
    assert oct(database.stat().st_mode & 0o777) == "0o644"


def test_backup_age(tmp_path, emulator, database):
    backups = tmp_path / "backups"
    backups.mkdir()
    env = environment(tmp_path, emulator, BACKUP_DIR=str(backups))
    assert by_name(doctor.run(env, None))["backups"].status == "fail"  # none yet
    copy = backups / "billing-2026-12-01.sqlite3"
    copy.write_bytes(b"a backup")
    assert by_name(doctor.run(env, None))["backups"].status == "ok"
    three_days = time.time() - 3 * 86400
    os.utime(copy, (three_days, three_days))
    stale = by_name(doctor.run(env, None))["backups"]
    assert stale.status == "fail" and "72 hours old" in stale.detail
    # Production without BACKUP_DIR is worth a warning; development is not.
    unset = by_name(doctor.run(environment(tmp_path, emulator), None))["backups"]
    assert unset.status == "ok" and "BACKUP_DIR is not set" in unset.detail


def production_env(tmp_path, emulator, smtp) -> dict:
    return {"BILLING_ENV": "production", "BILLING_DATA_DIR": str(tmp_path / "data"),
            "BASE_URL": "https://billing.example.com", "BILLING_SECRET_KEY": "k" * 10 + os.urandom(32).hex(),
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_TLS": "none",
            "MAIL_FROM": "Billing <billing@example.com>", "PAYTR_MERCHANT_ID": DEMO_MERCHANT_ID,
            "PAYTR_MERCHANT_KEY": "realkey00000000", "PAYTR_MERCHANT_SALT": "realsalt0000000",
            "PAYTR_API_BASE": emulator, "PAYTR_TEST_MODE": "0", "SELLER_LEGAL_NAME": "Örnek Yazılım Ltd. Şti.",
            "SELLER_ADDRESS": "Büyükdere Cad. No:1, İstanbul", "SELLER_TAX_OFFICE": "Zincirlikuyu",
            "SELLER_TAX_NUMBER": VALID_VKN}


def test_production_settings_that_refuse_to_start_fail_but_the_rest_is_still_checked(tmp_path, emulator, database,
                                                                                     smtp):
    env = production_env(tmp_path, emulator, smtp)
    checks = by_name(doctor.run(env, None))
    # The emulator's http:// address is not PayTR: production refuses it, and says so.
    assert checks["settings"].status == "fail"
    assert "PAYTR_API_BASE must start with https://" in checks["settings"].detail
    assert checks["base_url"].status == "ok" and "https://billing.example.com/billing/callback" in \
        checks["base_url"].detail
    assert checks["database"].status == "ok" and checks["smtp"].status == "ok"
    # The emulator knows the demo key, not these: the credentials check says so.
    assert checks["paytr"].status == "fail"
    assert checks["backups"].status == "warn"
    http_base = by_name(doctor.run({**env, "BASE_URL": "http://billing.example.com"}, None))
    assert http_base["base_url"].status == "fail" and http_base["settings"].status == "fail"


def test_unreadable_settings_stop_the_doctor_with_one_clear_line(tmp_path):
    out = io.StringIO()
    assert doctor.main({"BILLING_DATA_DIR": str(tmp_path / "data"), "SMTP_PORT": "twenty"}, None, out=out) == 1
    assert out.getvalue().startswith("fail  settings    SMTP_PORT must be a whole number")


def test_the_command_exits_1_on_a_failure_and_neither_tightens_nor_refuses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BILLING_ENV", "production")  # and nothing else set: `serve` would refuse with 2
    monkeypatch.setenv("PAYTR_API_BASE", f"http://127.0.0.1:{free_port()}")
    (tmp_path / "data").mkdir(mode=0o755)
    os.chmod(tmp_path / "data", 0o755)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fail  settings    production: BILLING_SECRET_KEY is not set" in out
    assert "warn  data_dir" in out
    assert oct((tmp_path / "data").stat().st_mode & 0o777) == "0o755"
