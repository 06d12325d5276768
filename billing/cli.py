"""The subcommands behind `python main.py`."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import re
import sys

from billing import accounts, clock, mail, migrations, money, settings as settings_module
from billing.db import Store, make_private, write
from billing.settings import ConfigError, Settings, is_loopback_host

log = logging.getLogger("billing")


class RedactTokens(logging.Filter):
    """Access logs must not carry the secrets in reset and invite links."""

    PATTERN = re.compile(r"(/auth/(?:reset|invite)/|/odeme/guvenli/)[^\s/?\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1…", a) if isinstance(a, str) and ("/auth/" in a or "/guvenli/" in a)
                                else a for a in record.args)
        return True


class QuietPolls(logging.Filter):
    """Successful entitlements polls stay out of the access log. Hosts poll them (with ETags)
    for every customer, often many times a second: a line each would drown the log and cost
    a third of the server's time per poll (benchmarks/api.py). Failed polls are logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            _client, method, path, _version, status = args
            if method == "GET" and status in (200, 304) and isinstance(path, str) \
                    and path.startswith("/api/v1/customers/") and path.endswith("/entitlements"):
                return False
        return True


def _logging_config(settings: Settings) -> dict:
    from uvicorn.config import LOGGING_CONFIG

    from billing.ops.logs import logging_config

    config = {**LOGGING_CONFIG}
    config["filters"] = {"redact": {"()": RedactTokens}, "quiet_polls": {"()": QuietPolls}}
    config["handlers"] = {name: {**handler, "filters": ["quiet_polls", "redact"] if name == "access" else ["redact"]}
                          for name, handler in LOGGING_CONFIG["handlers"].items()}
    # LOG_FORMAT, masking, and our loggers (billing, billing.access, apscheduler): billing.ops.logs.
    return logging_config(settings, config)


# How long requests in flight get after SIGTERM. A PayTR callback is answered within milliseconds
# of its group commit, so 3 s is plenty; with the lifespan's 5 s for the tick and the charge lane
# (billing.app.TICK_STOP_SECONDS) the process exits within 10 s, far inside systemd's TimeoutStopSec.
GRACEFUL_SHUTDOWN_SECONDS = 3


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    # Threads that wait on the disk (the callback commit, the mail sender) get the
    # interpreter back sooner after their I/O than with the default 5 ms.
    sys.setswitchinterval(0.0005)

    from billing.app import create_app

    if not settings.base_url_from_env:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        settings = settings.replace(base_url=f"http://{shown}:{port}")
    print(f"{settings.app_name} ({settings.env}) on {settings.base_url}  data: {settings.data_dir}", flush=True)
    _remember_served_url(settings)
    _hold_server_lock(settings)  # for the server's life: `restore` refuses while it runs
    # proxy_headers off: the app decides which proxies it trusts (TRUSTED_PROXIES).
    # SIGTERM (systemd stop, docker stop): uvicorn stops accepting, lets every request in flight be
    # answered (a callback answers once its batch is committed), then the lifespan lets the running
    # tick stop at a safe point and the charge lane's sent charges be answered. A client that keeps a
    # request open longer than this does not hold the exit.
    uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=False, log_config=_logging_config(settings),
                server_header=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


# Where the server last started, for commands run beside it without BASE_URL (`create-staff` prints
# a login link; with `--port 8123` the default http://127.0.0.1:8000 would be a dead link).
SERVED_URL_FILE = "served_url"


def _remember_served_url(settings: Settings) -> None:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / SERVED_URL_FILE).write_text(settings.base_url + "\n")
    except OSError:  # a read-only data dir serves all the same; only the CLI's link falls back
        pass


def public_url(settings: Settings, path: str) -> str:
    """A link to this app: the configured BASE_URL, else where the server last started on this data
    dir, else the default."""
    if not settings.base_url_from_env:
        try:
            served = (settings.data_dir / SERVED_URL_FILE).read_text().strip()
        except OSError:
            served = ""
        if served.startswith(("http://", "https://")):
            settings = settings.replace(base_url=served.rstrip("/"))
    return settings.url(path)


def _open(settings: Settings) -> tuple[Store, object]:
    """The database, migrated: every operation starts here. It holds the server lock (shared) until
    the process ends, so a restore refuses to replace the database under it."""
    _hold_server_lock(settings)
    store = Store(settings.database_path, settings=settings)
    db = store.db()
    with write(db):
        migrations.apply(db)
    return store, db


_lock_fd: int | None = None


def _hold_server_lock(settings: Settings) -> None:
    """Shared with every server and command on this data dir; exclusive only for a restore."""
    global _lock_fd
    if _lock_fd is None:
        from billing.ops import backup

        try:
            _lock_fd = backup.hold_server_lock(settings.data_dir)
        except backup.BackupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def backup_command(settings: Settings, dest: str, with_secret: bool) -> int:
    from pathlib import Path

    from billing.ops import backup

    try:
        made = backup.backup(settings.database_path, Path(dest), clock.utcnow(),
                             secret=str(settings.secret_key) if with_secret else None)
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = made.manifest
    print(f"backup {made.path} ({m['bytes']:,} bytes, schema {m['schema_version']}, {m['counts']['payments']} "
          f"payments, {m['counts']['invoices']} invoices, integrity ok); manifest {made.manifest_path.name}")
    if made.secret_path:
        print(f"the secret key is in {made.secret_path}: keep it as safe as the key itself")
    else:
        print("without the secret key (--with-secret adds it): staff two-factor secrets restore only where "
              "BILLING_SECRET_KEY is the same")
    return 0


def restore_command(settings: Settings, source: str, with_secret: bool) -> int:
    from pathlib import Path

    from billing.ops import backup

    try:
        if with_secret and settings.is_production:
            raise backup.BackupError("--with-secret writes data/secret_key, which production does not read; "
                                     "restore without it and set BILLING_SECRET_KEY to the backup's .secret_key")
        checked, kept = backup.restore(Path(source), settings.database_path, settings.data_dir, clock.utcnow(),
                                       migrations.names())
        if with_secret:
            if checked.secret_path is None:
                raise backup.BackupError(f"the database is restored, but {checked.path.name} was made without "
                                         "its secret key (no --with-secret); the current key stays")
            key_file = settings.data_dir / "secret_key"
            if key_file.exists():
                key_file.replace(key_file.with_name(f"secret_key.before-restore-{clock.utcnow():%Y%m%dT%H%M%SZ}"))
            backup._write_private(key_file, checked.secret_path.read_text())
    except backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = checked.manifest
    print(f"restored {checked.path.name} (made {m.get('created_at')}, schema {m.get('schema_version')}, "
          f"{m.get('counts', {}).get('payments')} payments) into {settings.database_path}")
    print(f"the previous database is kept as {kept}" if kept else "there was no database before")
    if with_secret:
        print("the secret key was restored too (the previous one kept beside it)")
    print("start the server now: it applies any newer migrations itself")
    return 0


def migrate(settings: Settings, dry_run: bool = False) -> int:
    if dry_run:
        return migrate_dry_run(settings)
    _hold_server_lock(settings)
    store = Store(settings.database_path)
    db = store.db()
    with write(db):
        applied = migrations.apply(db)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    store.close()
    return 0


def migrate_dry_run(settings: Settings) -> int:
    """What `migrate` would apply, read from a read-only connection: safe beside a running server,
    and creates nothing when the database does not exist yet."""
    import sqlite3

    from sqlite_utils import Database

    path = settings.database_path
    if not path.exists():
        print(f"{path} does not exist yet: migrate (or the first start) creates it with all "
              f"{len(migrations.names())} migrations")
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        pending = migrations.pending(Database(conn))
    finally:
        conn.close()
    if not pending:
        print(f"database is up to date ({migrations.names()[-1]}); nothing to apply")
        return 0
    print(f"{len(pending)} pending migration{'s' if len(pending) != 1 else ''} for {path} (nothing applied):")
    for name, summary in pending:
        print(f"  {name}" + (f"  {summary}" if summary else ""))
    return 0


def create_staff(settings: Settings, email: str, name: str | None) -> int:
    try:
        email = accounts.check_email(email, smtputf8=settings.smtp_smtputf8)
    except accounts.FormError as exc:
        print(f"error: {exc.errors['email']}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password for staff account: ")
        if getpass.getpass("Repeat password: ") != password:
            print("error: the passwords do not match", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        accounts.check_password(password, email)
    except accounts.FormError as exc:
        print(f"error: {exc.errors['password']}", file=sys.stderr)
        return 2
    store, db = _open(settings)
    try:
        accounts.create_staff(db, clock.utcnow(), email=email, name=name or email.split("@")[0],
                              password_hash=accounts.hash_password(password))
    except accounts.FormError:
        print(f"error: an account with the email {email} already exists", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"staff account {email} created; log in at {public_url(settings, '/auth/login')}")
    return 0


def send_mail(settings: Settings, retry_now: bool = False) -> int:
    store, db = _open(settings)
    now = clock.utcnow()
    if retry_now:
        mail.retry_now(db, now)
    counts = mail.deliver_due(db, now, settings)
    busy = mail.leased(db, now)
    store.close()
    print(f"sent {counts['sent']}, will retry {counts['retrying']}, failed for good {counts['failed']}")
    if busy:
        print(f"{busy} more are being sent by another process (the server?); their lease runs out within "
              f"{int(mail.LEASE.total_seconds() // 60)} minutes if it stopped")
    return 0


def paytr_emulator(settings: Settings, host: str, port: int, notification_url: str | None,
                   retry_base: float, retry_max: float) -> int:
    from billing.paytr.emulator import EmulatorConfig, run_standalone

    target = notification_url or settings.paytr_notification_url or settings.url("/billing/callback")
    print(f"PayTR emulator on http://{host}:{port}  merchant {settings.paytr_merchant_id}  "
          f"callbacks to {target}", flush=True)
    run_standalone(host, port, EmulatorConfig(
        merchant_id=settings.paytr_merchant_id, merchant_key=str(settings.paytr_merchant_key),
        merchant_salt=str(settings.paytr_merchant_salt), notification_url=target, retry_base=retry_base,
        retry_max=retry_max, app_url=settings.url("/"), app_name=settings.app_name))
    return 0


def jobs_run(settings: Settings, at: str | None) -> int:
    """One tick, as of `at` (or the app's clock, test clock included), like the scheduler's."""
    import asyncio

    import httpx

    from billing import jobs
    from billing.paytr.client import PaytrClient, timeouts

    try:
        fixed = clock.parse(at) if at else None
    except ValueError as exc:
        print(f"error: --at {exc}", file=sys.stderr)
        return 2
    store, _db = _open(settings)
    app_clock = clock.FixedClock(fixed) if fixed else _app_clock(settings, store)
    # The built-in emulator lives inside the running server: reach it over HTTP.
    base = settings.url("/paytr-emulator") if settings.uses_emulator else settings.paytr_api_base

    async def tick() -> dict:
        async with httpx.AsyncClient(base_url=base, timeout=timeouts(settings)) as http:
            context = jobs.Context(store=store, settings=settings, clock=app_clock, paytr=PaytrClient(settings, http))
            return await jobs.tick(context, mail_batches=None)  # no sender here: send everything due

    report = asyncio.run(tick())
    store.close()
    print(f"tick as of {report['at']}: {report['subscriptions']} subscriptions advanced, {report['charges']} card "
          f"charges sent, {report['reconciled']} payments reconciled, {report['emails_sent']} emails sent")
    return 0


def _app_clock(settings: Settings, store: Store) -> clock.Clock:
    if settings.is_production:
        return clock.Clock()
    return clock.Clock(lambda: clock.load_offset(store.db()))


def webhook_command(settings: Settings, action: str, url: str | None, events: str | None) -> int:
    """`webhook add URL` prints the signing secret alone on stdout (for a script to keep);
    everything else goes to stderr."""
    from billing.notify import delivery, webhooks

    store, db = _open(settings)
    try:
        now = _app_clock(settings, store).now()
        if action == "add":
            if not url:
                print("error: say where to send, e.g. `webhook add https://example.com/hooks/billing`", file=sys.stderr)
                return 2
            try:
                endpoint, secret = webhooks.add(db, now, settings, url, events, actor="cli")
            except webhooks.WebhookError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            types = ", ".join(json.loads(endpoint["event_types"])) if endpoint["event_types"] else "every event"
            print(f"endpoint {endpoint['id']} added: {endpoint['url']} receives {types}. Its signing secret "
                  "(shown once) is on stdout:", file=sys.stderr)
            print(secret)
            return 0
        if action == "list":
            found = webhooks.listing(db)
            if not found:
                print("no webhook endpoints; add one with `python main.py webhook add URL`", file=sys.stderr)
            for e in found:
                types = ",".join(json.loads(e["event_types"])) if e["event_types"] else "all"
                state = "enabled" if e["enabled"] else f"disabled ({e['disabled_reason']})"
                print(f"{e['id']}\t{e['url']}\t{types}\t{state}\tpending {e['pending']}\tfailed {e['failed']}"
                      f"\tlast delivered {e['last_delivered_at'] or 'never'}")
            return 0
        counts = delivery.deliver_due_once(store, settings, now)
        print(f"delivered {counts['delivered']}, failed {counts['failed']} (retried later)")
        return 0
    finally:
        store.close()


def clock_command(settings: Settings, action: str, amount: str | None) -> int:
    if settings.is_production:
        print("error: there is no test clock in production", file=sys.stderr)
        return 2
    store, db = _open(settings)
    offset = clock.load_offset(db)
    try:
        if action == "advance":
            if not amount:
                raise ValueError("say how far, e.g. `clock advance 8d`")
            offset += clock.parse_duration(amount)
            clock.save_offset(db, offset)
        elif action == "reset":
            offset = offset * 0
            clock.save_offset(db, offset)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        store.close()
        return 2
    store.close()
    print(f"app time {clock.iso(clock.utcnow() + offset)} ({offset} ahead of real time); "
          f"run `python main.py jobs run` or wait for the server's next tick")
    return 0


def revenue_command(settings: Settings) -> int:
    """Recompute the metrics' snapshot from the first event (after a fix, or to check it)."""
    from billing import revenue

    store, db = _open(settings)
    try:
        now = clock.utcnow() + clock.load_offset(db)  # the app's time, test clock included
        done = revenue.rebuild(db, now, settings)
    finally:
        store.close()
    print(f"revenue snapshot rebuilt: {done['months_closed']} closed months, {done['companies']} companies, "
          f"through event {done['cursor']}")
    return 0


def api_key_command(settings: Settings, action: str, value: str | None, scope: str | None) -> int:
    """`create` prints the key alone on stdout (for `KEY=$(python main.py api-key create …)`);
    everything else goes to stderr."""
    from billing.api import keys

    store, db = _open(settings)
    try:
        if action == "create":
            try:
                row, key = keys.create(db, clock.utcnow(), settings, value, scope or keys.DEFAULT_SCOPE, actor="cli")
            except accounts.FormError as exc:
                print(f"error: {'; '.join(exc.errors.values())}", file=sys.stderr)
                return 2
            print(key, flush=True)
            print(f"created {row['scope']} key {row['name']!r} ({row['prefix']}…); it is shown only this once",
                  file=sys.stderr)
            return 0
        if action == "list":
            found = keys.list_keys(db)
            for row in found:
                status = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
                print(f"{row['prefix']}…  {row['scope']:<5}  {row['name']}  created {row['created_at']}  "
                      f"last used {row['last_used_at'] or 'never'}  {status}")
            if not found:
                print("no API keys yet; create one with `python main.py api-key create NAME`", file=sys.stderr)
            return 0
        row = keys.by_prefix(db, value or "")
        if row is None:
            print(f"error: no API key with the prefix {value!r} (see `python main.py api-key list`)", file=sys.stderr)
            return 2
        if row["revoked_at"]:
            print(f"key {row['prefix']}… was already revoked at {row['revoked_at']}", file=sys.stderr)
            return 0
        keys.revoke(db, clock.utcnow(), row["id"], actor="cli")
        print(f"revoked {row['prefix']}… ({row['name']}); it stops working at once", file=sys.stderr)
        return 0
    finally:
        store.close()


def export_command(settings: Settings, month: str, fmt: str | None, out: str, lang: str) -> int:
    """The accountant's month: every input checked before the database is opened, and the file
    written aside and renamed, so a refusal or a failure writes nothing."""
    from pathlib import Path

    from billing import i18n
    from billing.documents import export

    fmt = fmt or Path(out).suffix.lstrip(".")  # `--out invoices-2026-12.xlsx` says which
    try:
        export.parse_month(month)
        fmt = export.check_format(fmt)
    except export.ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    locale = i18n.normalize(lang)
    if locale is None:
        print(f"error: --lang {lang!r}: choose tr or en", file=sys.stderr)
        return 2
    if not Path(out).parent.is_dir():
        print(f"error: there is no directory {str(Path(out).parent)!r} to write {out!r} in", file=sys.stderr)
        return 2
    store, db = _open(settings)
    try:
        count = export.write_file(out, db, settings, month, fmt, locale)
        summary = export.summary(db, settings, month)
    except OSError as exc:
        print(f"error: could not write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    totals = ", ".join(f"{c['currency']} {money.decimal_string(c['total'])}" for c in summary["currencies"])
    print(f"{out}: {count} documents ({summary['invoices']} invoices, {summary['credit_notes']} credit notes) "
          f"issued in {month} ({settings.timezone}); totals {totals or 'none'}")
    return 0


def customer_command(settings: Settings, action: str, company_id: str, reason: str | None, out: str | None,
                     yes: bool) -> int:
    """KVKK/GDPR requests from the shell: the shell account is the authentication, the operating
    system user is recorded in the audit log as `cli:<user>`, and a reason is required."""
    import asyncio

    import httpx

    from billing import audit
    from billing.ops import data_requests
    from billing.paytr.client import PaytrClient, PaytrError, timeouts

    staff = {"id": None, "email": f"cli:{getpass.getuser()}"}
    store, db = _open(settings)
    try:
        now = _app_clock(settings, store).now()
        if action == "export":
            try:
                document = data_requests.export(db, now, staff, company_id, reason=reason or "")
            except accounts.FormError as exc:
                print(f"error: --reason: {exc.errors['reason']}", file=sys.stderr)
                return 2
            text = data_requests.export_json(document)
            if out:
                # Written aside and renamed, readable by this user only: it is a person's data.
                temporary = f"{out}.part"
                with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                          encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(temporary, out)
                print(f"customer {company_id}: exported to {out}", file=sys.stderr)
            else:
                print(text)
            return 0
        try:
            reason = audit.check_reason(reason)
            company = data_requests.check(db, company_id)
        except accounts.FormError as exc:
            print(f"error: --reason: {exc.errors['reason']}", file=sys.stderr)
            return 2
        except data_requests.DataRequestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not yes:
            print(f"error: erasing {company['name']!r} (#{company['id']}) cannot be undone; add --yes to go ahead",
                  file=sys.stderr)
            return 2
        base = settings.url("/paytr-emulator") if settings.uses_emulator else settings.paytr_api_base

        async def delete_cards() -> int:
            async with httpx.AsyncClient(base_url=base, timeout=timeouts(settings)) as http:
                return await data_requests.delete_cards_at_paytr(PaytrClient(settings, http), company["paytr_utoken"])

        try:
            deleted = asyncio.run(delete_cards())
        except PaytrError as exc:
            print(f"error: PayTR did not delete the saved cards ({exc}); nothing was erased, try again",
                  file=sys.stderr)
            return 1
        try:
            done = data_requests.erase(db, now, staff, company_id, reason=reason, cards_deleted_at_paytr=deleted)
        except data_requests.DataRequestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"customer {company_id}: personal data erased ({done['users']} people, {done['emails']} emails, "
              f"{done['events']} events, {deleted} saved cards deleted at PayTR); invoices and credit notes kept")
        return 0
    except LookupError:
        print(f"error: no customer #{company_id}", file=sys.stderr)
        return 2
    finally:
        store.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python main.py", description="PayTR Billing: serve the app, or run an operation.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="serve the app (the default)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    g = sub.add_parser("migrate", help="apply database migrations")
    g.add_argument("--dry-run", action="store_true", help="list the pending migrations and change nothing")
    c = sub.add_parser("create-staff", help="create a staff (admin console) account")
    c.add_argument("email")
    c.add_argument("--name", help="display name (default: the part of the email before @)")
    m = sub.add_parser("send-mail", help="send the due emails in the outbox once")
    m.add_argument("--retry-now", action="store_true",
                   help="also send emails waiting out a back-off (after the mail server is fixed)")
    j = sub.add_parser("jobs", help="scheduled work")
    j.add_argument("action", choices=["run"], help="run: one tick of everything due")
    j.add_argument("--at", help="as of this instant, e.g. 2026-12-24T09:00:00Z (default: now)")
    w = sub.add_parser("webhook", help="webhook endpoints of the host product")
    w.add_argument("action", choices=["add", "list", "send"],
                   help="add URL: a new endpoint (prints its secret); list; send: deliver what is due once")
    w.add_argument("url", nargs="?")
    w.add_argument("--events", help="comma-separated event types (default: every type)")
    c = sub.add_parser("clock", help="the test clock (not in production)")
    c.add_argument("action", choices=["advance", "reset", "show"])
    c.add_argument("amount", nargs="?", help="with advance: 8d, 36h or 90m")
    k = sub.add_parser("api-key", help="API keys for the host product (create prints the key alone on stdout)")
    k.add_argument("action", choices=["create", "list", "revoke"])
    k.add_argument("value", nargs="?", metavar="NAME|PREFIX", help="create: the key's name; revoke: its prefix")
    k.add_argument("--scope", choices=["read", "write"], help="create: read (GET only) or write (default)")
    x = sub.add_parser("export", help="the accountant's month: every invoice and credit note as CSV or XLSX, "
                                      "or their PDFs as a ZIP")
    x.add_argument("--month", required=True, help="the month in local time, e.g. 2026-12")
    x.add_argument("--format", dest="fmt", help="csv, xlsx or zip (default: from the --out file's extension)")
    x.add_argument("--out", required=True, help="the file to write, e.g. invoices-2026-12.xlsx")
    x.add_argument("--lang", default="tr", help="tr (default: Fatura, İade Faturası, KDV) or en")
    b = sub.add_parser("backup", help="an online, checked copy of the database (while the server runs), "
                                      "with a manifest beside it")
    b.add_argument("dest", metavar="DEST", help="a directory (a time-named file is made in it) or a .sqlite3 file")
    b.add_argument("--with-secret", action="store_true",
                   help="also copy the secret key (it seals staff two-factor secrets); keep that file safe")
    rs = sub.add_parser("restore", help="replace the database with a verified backup (the server must be stopped)")
    rs.add_argument("source", metavar="SRC", help="the backup's .sqlite3 file (its manifest must be beside it)")
    rs.add_argument("--with-secret", action="store_true",
                    help="also restore the secret key saved with the backup (development's data/secret_key)")
    r = sub.add_parser("revenue", help="revenue metrics: rebuild the snapshot the metrics page reads, from every event")
    r.add_argument("action", choices=["rebuild"])
    u = sub.add_parser("customer", help="KVKK/GDPR requests: export a customer's data as JSON, or erase it")
    u.add_argument("action", choices=["export", "erase"])
    u.add_argument("company_id", metavar="ID", help="the customer's number (as in /admin/companies/ID)")
    u.add_argument("--reason", required=True, help="why (kept in the audit log), e.g. 'KVKK request of 2026-12-01'")
    u.add_argument("--out", help="export: write the JSON to this file (default: stdout)")
    u.add_argument("--yes", action="store_true", help="erase: go ahead (it cannot be undone)")
    d = sub.add_parser("doctor", help="check this installation: settings, data dir, disk, database, backups, SMTP, "
                                      "PayTR credentials, clock (exit code 1 when a check fails)")
    d.add_argument("--full", action="store_true", help="the complete integrity_check instead of quick_check")
    e = sub.add_parser("paytr-emulator", help="run the PayTR emulator on its own (development and tests)")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=8001)
    e.add_argument("--notification-url", help="where to POST callbacks (default: BASE_URL/billing/callback)")
    e.add_argument("--retry-base", type=float, default=1.0, help="seconds before the first callback retry (doubles)")
    e.add_argument("--retry-max", type=float, default=60.0, help="longest wait between retries (PayTR: about 60)")
    return p


def bind_refusal(settings: Settings, host: str) -> str | None:
    """Why this process must not listen on `host`, or None. Development mode serves the mail
    viewer, the PayTR emulator and the test clock to anyone who can connect; when nobody chose
    it (BILLING_ENV unset), only this machine may connect."""
    if settings.env_from_env or is_loopback_host(host):
        return None
    return (f"refusing to listen on {host}: BILLING_ENV is not set, so this is development mode, whose mail "
            "viewer, PayTR emulator and test clock must not be reachable from other machines. Listen on "
            "127.0.0.1, or set BILLING_ENV=production (or BILLING_ENV=development on a network you trust)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Whatever this process creates (database, captured mail, the emulator's saved cards) is ours alone.
    os.umask(0o077)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if args.command == "doctor":
        # Before the settings are enforced and the data directory tightened: the doctor reports
        # both as they are rather than refusing or fixing them.
        from billing.ops import doctor

        return doctor.main(full=args.full)
    try:
        settings = settings_module.load()
    except ConfigError as exc:
        print(f"error: refusing to start: {exc}", file=sys.stderr)
        return 2
    if settings.log_format == "json":  # the commands' own lines too (serve: uvicorn's config does it)
        from logging.config import dictConfig

        from billing.ops.logs import logging_config

        dictConfig(logging_config(settings))
    command = args.command or "serve"
    if command in ("serve", "paytr-emulator") and (refusal := bind_refusal(settings, args.host)):
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    make_private(settings.data_dir)  # files an older version (or a copy) left readable to others
    if command == "serve":
        serve(settings, args.host, args.port)
        return 0
    if command == "migrate":
        return migrate(settings, args.dry_run)
    if command == "create-staff":
        return create_staff(settings, args.email, args.name)
    if command == "send-mail":
        return send_mail(settings, args.retry_now)
    if command == "jobs":
        return jobs_run(settings, args.at)
    if command == "webhook":
        return webhook_command(settings, args.action, args.url, args.events)
    if command == "clock":
        return clock_command(settings, args.action, args.amount)
    if command == "api-key":
        if args.action in ("create", "revoke") and not args.value:
            print(f"error: api-key {args.action} needs a {'name' if args.action == 'create' else 'prefix'}",
                  file=sys.stderr)
            return 2
        return api_key_command(settings, args.action, args.value, args.scope)
    if command == "export":
        return export_command(settings, args.month, args.fmt, args.out, args.lang)
    if command == "revenue":
        return revenue_command(settings)
    if command == "customer":
        return customer_command(settings, args.action, args.company_id, args.reason, args.out, args.yes)
    if command == "backup":
        return backup_command(settings, args.dest, args.with_secret)
    if command == "restore":
        return restore_command(settings, args.source, args.with_secret)
    if command == "paytr-emulator":
        if settings.is_production:
            print("error: the PayTR emulator does not run in production", file=sys.stderr)
            return 2
        return paytr_emulator(settings, args.host, args.port, args.notification_url, args.retry_base,
                              args.retry_max)
    return 2
