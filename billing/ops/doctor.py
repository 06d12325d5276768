"""`python main.py doctor`: is this installation fit to run? One line per check: ok, warn or fail.

Each check explains what it found and, when it is not ok, what to do. The doctor reads and
asks; it changes nothing: the database is opened read-only (like any reader of a WAL database it
may leave empty -wal/-shm files beside it), the data directory's modes are
reported, not fixed (the server tightens them at start-up), and PayTR is asked about an order
that does not exist, which costs nothing and proves the credentials.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import secrets
import shutil
import smtplib
import sqlite3
import ssl
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import httpx
from starlette.config import Config

from billing import settings as settings_module
from billing.settings import ConfigError, Settings, is_loopback_host

OK, WARN, FAIL = "ok", "warn", "fail"
MiB, GiB = 1024 ** 2, 1024 ** 3

# The Checkpointer folds the WAL back every second; a WAL this big means something keeps a read
# transaction open (a stuck process, a replication tool), and every reader pays for it.
WAL_WARN_BYTES = 256 * MiB
# Daily backups: a day and a bit is fine, two days means one was missed, more means they stopped.
BACKUP_OK_HOURS, BACKUP_WARN_HOURS = 26, 50
# Staff 2FA codes change every 30 s and webhook receivers refuse timestamps minutes off; PayTR's
# Date header has whole seconds and the round trip adds its share, so a few seconds is noise.
CLOCK_WARN_SECONDS, CLOCK_FAIL_SECONDS = 5.0, 30.0
NETWORK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<10}  {self.detail}"


def run(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env", *,
        now: Callable[[], float] = time.time, full: bool = False) -> list[Check]:
    """Every check, in the order an operator fixes things. Settings that cannot be read at all
    stop the rest (nothing else can be located); a failed production check does not."""
    environ = os.environ if environ is None else environ
    try:
        settings = settings_module.load(environ, env_file, production_checks=False)
    except ConfigError as exc:
        return [Check("settings", FAIL, f"{exc}; nothing else can be checked until the settings can be read")]
    checks = [check_settings(settings), check_base_url(settings), check_data_dir(settings),
              check_disk(settings)]
    checks += check_database(settings, full=full)
    checks.append(check_backups(settings, _raw(environ, env_file)))
    checks.append(check_smtp(settings))
    checks += check_paytr(settings, now=now)
    return checks


def _raw(environ: Mapping[str, str], env_file: str | Path | None) -> Callable[[str], str]:
    """A setting read as the app reads it, for those this version's Settings may not have yet."""
    if env_file is not None and not Path(env_file).is_file():
        env_file = None
    config = Config(env_file, environ=environ)
    return lambda key: str(config(key, default="")).strip()


# --- the checks ---------------------------------------------------------------------------


def check_settings(settings: Settings) -> Check:
    if not settings.is_production:
        how = "BILLING_ENV=development" if settings.env_from_env else "BILLING_ENV is not set"
        return Check("settings", WARN, f"development mode ({how}): the emulator, captured mail and the test "
                                       "clock; set BILLING_ENV=production to go live")
    try:
        settings_module.check_production(settings)
    except ConfigError as exc:
        return Check("settings", FAIL, f"production: {exc}; the server refuses to start")
    mode = "PayTR TEST mode (ALLOW_TEST_MODE_IN_PRODUCTION=1)" if settings.paytr_test_mode else "PayTR live mode"
    return Check("settings", OK, f"production, every required setting present, {mode}")


def check_base_url(settings: Settings) -> Check:
    if settings.https:
        return Check("base_url", OK, f"{settings.base_url} is https://; PayTR's Bildirim URL is "
                                     f"{settings.url('/billing/callback')}")
    status = FAIL if settings.is_production else WARN
    return Check("base_url", status, f"{settings.base_url} is not https://: session cookies are not marked Secure "
                                     "and PayTR's callback would travel in clear text (fine on this machine for "
                                     "development)")


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_dir.resolve()
    if not path.exists():
        return Check("data_dir", FAIL, f"{path} does not exist; create it (owned by the service user, mode 0700) "
                                       "or fix BILLING_DATA_DIR")
    if not path.is_dir():
        return Check("data_dir", FAIL, f"{path} is not a directory")
    info = path.stat()
    if info.st_uid != os.geteuid():
        return Check("data_dir", FAIL, f"{path} belongs to uid {info.st_uid}, not to the user running this "
                                       f"(uid {os.geteuid()}); run the doctor as the service user")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check("data_dir", FAIL, f"{path} is not writable by this user")
    loose = [p for p in (path, *(Path(f"{settings.database_path}{s}") for s in ("", "-wal", "-shm")),
                         path / "secret_key") if p.exists() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    if loose:
        names = ", ".join(f"{p.name} {stat.S_IMODE(p.stat().st_mode):04o}" for p in loose)
        return Check("data_dir", WARN, f"readable by others: {names}; the server makes them private (0700/0600) "
                                       "at start-up, or run `chmod -R go= " + str(path) + "`")
    return Check("data_dir", OK, f"{path} is ours, writable and private (0700, files 0600)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_disk(settings: Settings) -> Check:
    if not settings.data_dir.is_dir():
        return Check("disk", FAIL, "no data directory to measure")
    usage = shutil.disk_usage(settings.data_dir)
    database = _size(settings.database_path) + _size(Path(f"{settings.database_path}-wal"))
    text = f"{_human(usage.free)} free of {_human(usage.total)}; the database takes {_human(database)}"
    # A backup (VACUUM INTO or the backup API) writes a whole copy, and a full disk stops every
    # write, callbacks included: PayTR would get no "OK" until there is room again.
    if usage.free < max(2 * database, 256 * MiB):
        return Check("disk", FAIL, f"{text}: too little for a backup copy and growth; free space now")
    if usage.free < max(5 * database, usage.total // 10):
        return Check("disk", WARN, f"{text}: less than a tenth of the disk or five database copies")
    return Check("disk", OK, text)


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def check_database(settings: Settings, full: bool = False) -> list[Check]:
    from billing.migrations import migrations

    path = settings.database_path
    if not path.exists():
        return [Check("database", FAIL, f"{path} does not exist; run `python main.py migrate` (or start the server) "
                                        "to create it"),
                Check("migrations", FAIL, "no database to check")]
    checks = []
    try:
        conn = _read_only(path)
    except sqlite3.Error as exc:
        return [Check("database", FAIL, f"cannot open {path}: {exc}"), Check("migrations", FAIL, "no database")]
    try:
        pragma = "integrity_check" if full else "quick_check"
        started = time.perf_counter()
        try:
            found = [row[0] for row in conn.execute(f"PRAGMA {pragma}")]
        except sqlite3.DatabaseError as exc:
            found = [str(exc)]
        took = time.perf_counter() - started
        wal = _size(Path(f"{path}-wal"))
        size = f"{_human(_size(path))}, WAL {_human(wal)}"
        if found != ["ok"]:
            checks.append(Check("database", FAIL, f"{pragma} found {len(found)} problem(s), first: {found[0]}; "
                                                  "stop the server and restore the last good backup"))
        elif wal > WAL_WARN_BYTES:
            checks.append(Check("database", WARN, f"{pragma} ok ({size}): the WAL is not being checkpointed; "
                                                  "a process is holding a read transaction open"))
        else:
            more = "" if full else "; `doctor --full` runs the complete integrity_check"
            checks.append(Check("database", OK, f"{pragma} ok in {took:.1f} s ({size}){more}"))
        try:
            applied = {row[0] for row in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [migrations.name])}
        except sqlite3.OperationalError:
            applied = set()
    finally:
        conn.close()
    known = [m.name for m in migrations._migrations]
    pending = [name for name in known if name not in applied]
    unknown = sorted(applied - set(known))
    if unknown:
        checks.append(Check("migrations", FAIL, f"the database has {', '.join(unknown)}, which this code does not "
                                                "know: a newer version wrote it; install that version or restore a "
                                                "backup made by this one"))
    elif pending:
        checks.append(Check("migrations", WARN, f"{len(pending)} pending ({', '.join(pending)}); the server applies "
                                                "them at start-up, or run `python main.py migrate` (after a backup)"))
    else:
        checks.append(Check("migrations", OK, f"current ({known[-1]}, {len(known)} applied)"))
    return checks


def check_backups(settings: Settings, raw: Callable[[str], str]) -> Check:
    # BACKUP_DIR arrives with scheduled backups (issue 12 §1); until Settings carries it, read it
    # from the environment and .env as the app would.
    configured = getattr(settings, "backup_dir", None) or raw("BACKUP_DIR")
    if not configured:
        status = WARN if settings.is_production else OK
        return Check("backups", status, "no scheduled backups (BACKUP_DIR is not set): set it, or run "
                                        "`python main.py backup DEST` from cron, and keep a copy off this machine")
    directory = Path(configured).expanduser()
    if not directory.is_dir():
        return Check("backups", FAIL, f"BACKUP_DIR {directory} does not exist or is not a directory")
    newest = max((p.stat().st_mtime for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")),
                 default=None)
    if newest is None:
        return Check("backups", FAIL, f"no backup in {directory} yet; the first is made within a day by the "
                                      "scheduler, or run `python main.py backup` now")
    hours = (time.time() - newest) / 3600
    when = f"the newest in {directory} is {hours:.0f} hours old"
    if hours <= BACKUP_OK_HOURS:
        return Check("backups", OK, when)
    if hours <= BACKUP_WARN_HOURS:
        return Check("backups", WARN, f"{when}: yesterday's backup is missing; check the server's log")
    return Check("backups", FAIL, f"{when}: backups have stopped; check the server's log and the disk")


def check_smtp(settings: Settings) -> Check:
    s = settings
    if not s.smtp_host:
        return Check("smtp", OK, f"no SMTP_HOST: mail is captured to {s.mail_capture_dir} (development)")
    where = f"{s.smtp_host}:{s.smtp_port}"
    steps = []
    conn: smtplib.SMTP | None = None
    try:
        context = ssl.create_default_context()
        if s.smtp_tls == "ssl":
            conn = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=NETWORK_TIMEOUT, context=context)
            steps.append(f"TLS ({conn.sock.version()})")
        else:
            conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=NETWORK_TIMEOUT)
            conn.ehlo()
            if s.smtp_tls == "starttls":
                if not conn.has_extn("starttls"):
                    return Check("smtp", FAIL, f"{where} does not offer STARTTLS; use SMTP_TLS=ssl (port 465) or a "
                                               "server that encrypts")
                conn.starttls(context=context)
                conn.ehlo()
                steps.append(f"STARTTLS ({conn.sock.version()})")
        if s.smtp_username:
            conn.login(s.smtp_username, str(s.smtp_password))
            steps.append(f"logged in as {s.smtp_username}")
        else:
            steps.append("no login (SMTP_USERNAME is empty)")
        if s.smtp_smtputf8 and not conn.has_extn("smtputf8"):
            return Check("smtp", WARN, f"{where}: " + ", ".join(steps) + "; SMTP_SMTPUTF8=1 but the server does not "
                                       "offer SMTPUTF8, so mail to addresses like ayşe@… would fail")
    except smtplib.SMTPAuthenticationError as exc:
        return Check("smtp", FAIL, f"{where} refused the login for {s.smtp_username} ({exc.smtp_code}); check "
                                   "SMTP_USERNAME and SMTP_PASSWORD")
    except smtplib.SMTPNotSupportedError:
        return Check("smtp", FAIL, f"{where} does not offer AUTH" + (" before STARTTLS" if s.smtp_tls == "none" else "")
                     + "; check SMTP_TLS and SMTP_USERNAME")
    except ssl.SSLError as exc:
        return Check("smtp", FAIL, f"TLS with {where} failed: {exc.reason or exc}; check SMTP_TLS and SMTP_PORT")
    except (smtplib.SMTPException, OSError) as exc:
        return Check("smtp", FAIL, f"cannot talk to {where}: {type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
    if s.smtp_tls == "none":
        status = OK if is_loopback_host(s.smtp_host) else WARN
        return Check("smtp", status, f"{where}: connected, " + ", ".join(steps) + ", without TLS (this machine only)")
    return Check("smtp", OK, f"{where}: connected, " + ", ".join(steps))


def check_paytr(settings: Settings, now: Callable[[], float] = time.time) -> list[Check]:
    """A status query for an order that cannot exist. PayTR checks the token (merchant id, key and
    salt) before it looks for the order, so "not found" proves the credentials; a token error
    names them wrong. The answer's Date header tells how far our clock is from PayTR's."""
    from billing.paytr import protocol

    base = settings.url("/paytr-emulator") if settings.uses_emulator else settings.paytr_api_base
    merchant_oid = "DOCTOR" + secrets.token_hex(8).upper()  # alphanumeric, like our own order ids
    fields = protocol.status_request(merchant_id=settings.paytr_merchant_id, merchant_oid=merchant_oid,
                                     key=str(settings.paytr_merchant_key), salt=str(settings.paytr_merchant_salt))

    async def ask() -> tuple[httpx.Response, float, float]:
        async with httpx.AsyncClient(base_url=base, timeout=NETWORK_TIMEOUT) as http:
            sent = now()
            response = await http.post(protocol.API_PATHS["status"], data=fields)
            return response, sent, now()

    try:
        response, sent, received = asyncio.run(ask())
    except (httpx.HTTPError, OSError) as exc:
        hint = (" (the built-in emulator answers only while the server runs)" if settings.uses_emulator else "")
        status = WARN if settings.uses_emulator else FAIL
        return [Check("paytr", status, f"no answer from {base}: {type(exc).__name__}{hint}"),
                Check("clock", WARN, "not checked: no answer from PayTR")]
    checks = [_paytr_answer(settings, base, response)]
    checks.append(_clock(response, (sent + received) / 2))
    return checks


def _paytr_answer(settings: Settings, base: str, response: httpx.Response) -> Check:
    who = f"merchant {settings.paytr_merchant_id} at {base}"
    if response.status_code >= 400:
        return Check("paytr", FAIL, f"{base} answered HTTP {response.status_code}; check PAYTR_API_BASE")
    try:
        answer = response.json()
    except ValueError:
        return Check("paytr", FAIL, f"{base} answered something that is not JSON; check PAYTR_API_BASE")
    if not isinstance(answer, dict):
        return Check("paytr", FAIL, f"{base} answered an unexpected {type(answer).__name__}")
    message = str(answer.get("err_msg") or answer.get("reason") or "")
    folded = message.casefold()
    if answer.get("status") == "error" and ("bulunamad" in folded or "not found" in folded):
        mode = "test" if settings.paytr_test_mode else "live"
        return Check("paytr", OK, f"{who} accepted the credentials (a made-up order is \"{message}\"); {mode} mode")
    if "token" in folded or "merchant_id" in folded or "mağaza" in folded:
        return Check("paytr", FAIL, f"{who} refused the credentials: \"{message}\"; copy PAYTR_MERCHANT_ID, "
                                    "PAYTR_MERCHANT_KEY and PAYTR_MERCHANT_SALT again from the panel's "
                                    "Bilgi sayfası")
    return Check("paytr", WARN, f"{who} answered {answer.get('status')!r} \"{message}\" for a made-up order; "
                                "expected \"not found\"")


def _clock(response: httpx.Response, ours: float) -> Check:
    header = response.headers.get("date")
    if not header:
        return Check("clock", WARN, "PayTR's answer has no Date header; check that NTP runs (timedatectl)")
    try:
        # Date is truncated to the second: PayTR's instant lies somewhere in the half-open second
        # after it, so compare with its middle.
        theirs = email.utils.parsedate_to_datetime(header).astimezone(UTC).timestamp() + 0.5
    except (TypeError, ValueError):
        return Check("clock", WARN, f"PayTR's Date header {header!r} could not be read")
    offset = ours - theirs
    text = f"{abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'} PayTR's clock"
    if abs(offset) >= CLOCK_FAIL_SECONDS:
        return Check("clock", FAIL, f"{text}: staff 2FA codes and webhook timestamps stop matching; "
                                    "run NTP (timedatectl set-ntp true)")
    if abs(offset) >= CLOCK_WARN_SECONDS:
        return Check("clock", WARN, f"{text}; check that NTP runs (timedatectl)")
    return Check("clock", OK, f"{text} (Date has whole seconds)")


def main(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env", *, full: bool = False,
         out=None) -> int:
    import sys

    import logging

    out = out or sys.stdout
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the one request is reported by its check
    checks = run(environ, env_file, full=full)
    for check in checks:
        print(check.line(), file=out, flush=True)
    failed = [c.name for c in checks if c.status == FAIL]
    warned = [c.name for c in checks if c.status == WARN]
    summary = (f"{len(failed)} failed ({', '.join(failed)})" if failed else "nothing failed") + \
        (f", {len(warned)} to look at ({', '.join(warned)})" if warned else "")
    print(summary, file=out, flush=True)
    return 1 if failed else 0

