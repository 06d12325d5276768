"""The operations behind `python main.py`."""

import os
import subprocess
import sys
from pathlib import Path

from billing.db import Store, rows

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path, *args, stdin="", **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "BASE_URL"}  # only what a test sets
    env.update(BILLING_DATA_DIR=str(tmp_path / "data"), BILLING_ENV="development", **extra_env)
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_migrate_then_migrate_again(tmp_path):
    first = run(tmp_path, "migrate")
    assert first.returncode == 0 and first.stdout.startswith("applied: m001_accounts")
    second = run(tmp_path, "migrate")
    assert second.returncode == 0 and second.stdout.strip() == "database is up to date"


def test_create_staff_reads_the_password_from_stdin(tmp_path):
    result = run(tmp_path, "create-staff", "Ops@Example.com", "--name", "Operasyon", stdin="a long staff password\n")
    assert result.returncode == 0, result.stderr
    assert "staff account ops@example.com created" in result.stdout
    store = Store(tmp_path / "data" / "billing.sqlite3")
    [user] = rows(store.db(), "SELECT email, name, role, company_id FROM users")
    store.close()
    assert user == {"email": "ops@example.com", "name": "Operasyon", "role": "staff", "company_id": None}
    again = run(tmp_path, "create-staff", "ops@example.com", stdin="a long staff password\n")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_create_staff_prints_the_login_link_of_the_configured_base_url(tmp_path):
    result = run(tmp_path, "create-staff", "ops@example.com", stdin="a long staff password\n",
                 BASE_URL="https://billing.example.com/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("log in at https://billing.example.com/auth/login")


def test_create_staff_links_to_where_the_server_runs_without_base_url(tmp_path):
    # `main.py --port 8123` records where it serves; the link must not point at the default port 8000.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "served_url").write_text("http://127.0.0.1:8123\n")
    result = run(tmp_path, "create-staff", "ops@example.com", stdin="a long staff password\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("log in at http://127.0.0.1:8123/auth/login")


def test_create_staff_refuses_weak_passwords_and_bad_emails(tmp_path):
    weak = run(tmp_path, "create-staff", "ops@example.com", stdin="short\n")
    assert weak.returncode == 2 and "at least 8" in weak.stderr
    bad = run(tmp_path, "create-staff", "not-an-email", stdin="a long staff password\n")
    assert bad.returncode == 2 and "valid email" in bad.stderr


def test_send_mail_reports_what_it_did(tmp_path):
    result = run(tmp_path, "send-mail")
    assert result.returncode == 0 and result.stdout.strip() == "sent 0, will retry 0, failed for good 0"


def test_help_lists_the_operations(tmp_path):
    result = run(tmp_path, "--help")
    for command in ("migrate", "create-staff", "send-mail", "--host", "--port"):
        assert command in result.stdout


def test_test_clock_and_a_tick_from_the_command_line(tmp_path):
    advanced = run(tmp_path, "clock", "advance", "8d")
    assert advanced.returncode == 0 and "8 days" in advanced.stdout
    tick = run(tmp_path, "jobs", "run")
    assert tick.returncode == 0 and tick.stdout.startswith("tick as of ")
    import datetime
    shown = tick.stdout.split("tick as of ")[1][:10]
    assert shown == (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=8)).strftime("%Y-%m-%d")
    at = run(tmp_path, "jobs", "run", "--at", "2026-12-24T09:00:00Z")
    assert "tick as of 2026-12-24T09:00:00Z: 0 subscriptions advanced" in at.stdout
    assert run(tmp_path, "jobs", "run", "--at", "24 December").returncode == 2
    assert run(tmp_path, "clock", "advance", "soon").returncode == 2
    reset = run(tmp_path, "clock", "reset")
    assert reset.returncode == 0 and "0:00:00 ahead" in reset.stdout


def test_the_access_log_leaves_out_successful_entitlements_polls_only():
    import logging

    from billing.cli import QuietPolls

    def record(method, path, status):
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5000", method, path, "1.1", status), None)

    quiet = QuietPolls()
    assert not quiet.filter(record("GET", "/api/v1/customers/cus_42/entitlements", 200))
    assert not quiet.filter(record("GET", "/api/v1/customers/cus_42/entitlements", 304))
    assert quiet.filter(record("GET", "/api/v1/customers/cus_42/entitlements", 401))  # a bad key is worth a line
    assert quiet.filter(record("GET", "/api/v1/customers/cus_42/entitlements", 429))
    assert quiet.filter(record("PUT", "/api/v1/customers/cus_42/usage", 200))
    assert quiet.filter(record("GET", "/billing/", 200))
