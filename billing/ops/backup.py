"""Online backups of the database, with a manifest, and restoring one.

What must hold, and how:

- A backup is one consistent snapshot. SQLite's backup API copies every page in a single step,
  under one read transaction: a payment committed (and so answered OK to PayTR) before the backup
  began is in it, a transaction committed while it runs is wholly in or wholly out. In WAL mode
  that read transaction does not block the server's writers.
- A file under a backup's final name is complete and checked. It is written as `.partial`,
  checked with `PRAGMA integrity_check`, fsynced and only then renamed; the manifest (the last
  thing written) carries its sha256, so a copy damaged later is refused at restore.
- A restore never mixes files. The current database leaves together with its `-wal` file (a stale
  WAL replayed into another database would corrupt it, and without it the file kept aside would
  lose its last commits), and nothing is replaced while a process has the database open.
- A restore never brings back a schema this code does not know (a backup made by a newer version).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billing import clock

log = logging.getLogger("billing.backup")

NAME_FORMAT = "billing-%Y%m%dT%H%M%SZ.sqlite3"  # sorts by time; the scheduler prunes by it
NAME_PATTERN = re.compile(r"^billing-(\d{8}T\d{6}Z)\.sqlite3$")
SERVER_LOCK = "server.lock"  # in the data dir: servers hold it shared, a restore exclusively
SCHEDULE_LOCK = ".backup.lock"  # in BACKUP_DIR: one scheduled backup at a time, whichever process ticks
DAY = timedelta(days=1)
RETRY_AFTER_FAILURE = timedelta(hours=1)  # a full disk must not cost a failed full copy every minute
COUNTED_TABLES = ("payments", "invoices")
BUSY_TIMEOUT_S = 10
MANIFEST_VERSION = 1
FILE_SUFFIXES = (".sqlite3", ".sqlite", ".db")  # DEST with one of these is the file to write; else a directory


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest_path: Path
    manifest: dict
    secret_path: Path | None = None


def manifest_path_for(path: Path) -> Path:
    return path.with_suffix(".manifest.json")


def secret_path_for(path: Path) -> Path:
    return path.with_suffix(".secret_key")


# --- who holds the database ------------------------------------------------------------------


def hold_server_lock(data_dir: Path) -> int:
    """Held (shared) for a server's whole life and by every command that opens the database, so
    a restore can tell it is not alone. Returns the descriptor; the lock goes with the process,
    even on kill -9, so it is never stale."""
    fd = _open_lock(Path(data_dir) / SERVER_LOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError("a restore is replacing the database right now; start again once it has finished") \
            from None
    return fd


@contextlib.contextmanager
def _exclusive(data_dir: Path, database_path: Path) -> Iterator[None]:
    fd = _open_lock(Path(data_dir) / SERVER_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"a server (or another command) is using {database_path}; stop it first "
                              "(systemctl stop paytr-billing), then restore") from None
        if database_in_use(database_path):
            raise BackupError(f"another process has {database_path} open (Litestream, the sqlite3 shell, a server "
                              "not started by main.py?); stop it first, then restore")
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


# SQLite's unix VFS: every connection to a WAL database holds a shared POSIX lock on this byte of the
# -shm file while it is open (the "DMS" lock, UNIX_SHM_BASE 120 + 8 locks). Any process counts,
# whatever started it, Litestream included.
_SHM_DMS_BYTE = 128


def database_in_use(database_path: Path) -> bool:
    """Whether any process has the database open (in WAL mode, as this app always does)."""
    shm = Path(f"{database_path}-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False  # nobody has it open in WAL mode (the -shm exists while anyone does)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


# --- making a backup -----------------------------------------------------------------------------


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paytr-billing")
    except PackageNotFoundError:
        return "unknown"


def backup(database_path: Path, dest: Path, now: datetime, *, secret: str | None = None) -> Backup:
    """Copy the live database to `dest` (a file ending .sqlite3, or a directory: a time-named file in it),
    check the copy, and write its manifest beside it; with `secret`, also the secret key file."""
    database_path = Path(database_path)
    if not database_path.is_file():
        raise BackupError(f"there is no database at {database_path} to back up")
    dest = Path(dest).expanduser()
    if dest.is_dir() or dest.suffix not in FILE_SUFFIXES:  # a directory, made if missing
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        dest = dest / now.strftime(NAME_FORMAT)
    elif not dest.parent.is_dir():
        raise BackupError(f"there is no directory {dest.parent} to write {dest.name} in")
    manifest_path = manifest_path_for(dest)
    secret_path = secret_path_for(dest) if secret is not None else None
    for path in (dest, manifest_path, secret_path):
        if path is not None and path.exists():
            raise BackupError(f"{path} already exists; a backup never overwrites one")
    if secret is not None and not secret:
        raise BackupError("there is no secret key to include (BILLING_SECRET_KEY is empty)")

    partial = dest.with_name(dest.name + ".partial")
    try:
        _copy_online(database_path, partial)
        facts = inspect(partial)
        if facts["integrity"] != "ok":
            raise BackupError(f"the copy failed PRAGMA integrity_check ({facts['integrity']}); the database itself "
                              "may be damaged: run `python main.py doctor`")
        digest = sha256(partial)
        _fsync(partial)
        os.replace(partial, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    manifest = {
        "format": MANIFEST_VERSION,
        "file": dest.name,
        "created_at": clock.iso(now),
        "schema_version": facts["schema_version"],
        "app_version": app_version(),
        "counts": facts["counts"],
        "bytes": dest.stat().st_size,
        "sha256": digest,
        "integrity_check": "ok",
        "secret_key_file": secret_path.name if secret_path else None,
    }
    if secret_path is not None:
        _write_private(secret_path, secret + "\n")
    _write_private(manifest_path, json.dumps(manifest, indent=2) + "\n")
    _fsync_dir(dest.parent)
    return Backup(dest, manifest_path, manifest, secret_path)


def _copy_online(source: Path, target: Path) -> None:
    # mode=rw: never create an empty database where the real one should be.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                          isolation_level=None)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    dst = sqlite3.connect(str(target), isolation_level=None)
    try:
        src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        src.backup(dst)  # pages=-1: every page in one step, so one snapshot (no restart on writes)
        # One self-contained file: no -wal beside it to lose when the file is copied elsewhere.
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()


def inspect(path: Path) -> dict:
    """integrity_check, the applied migrations and the counted rows of a database file at rest,
    opened read-only and immutable (it may sit on read-only media; nothing is written beside it)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        try:
            integrity = "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()[:5])
        except sqlite3.DatabaseError as exc:  # too damaged even to check
            return {"integrity": str(exc), "applied": [], "schema_version": None, "counts": {}}
        try:
            applied = [row[0] for row in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = 'billing' ORDER BY rowid")]
        except sqlite3.DatabaseError:
            applied = []
        counts = {}
        for table in COUNTED_TABLES:
            try:
                counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.DatabaseError:
                counts[table] = None
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database ({exc})") from None
    finally:
        conn.close()
    return {"integrity": integrity, "applied": applied, "schema_version": applied[-1] if applied else None,
            "counts": counts}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- restoring ---------------------------------------------------------------------------------


def verify(source: Path, known_migrations: Iterable[str]) -> Backup:
    """Check a backup before anything is touched: its manifest, sha256, integrity and schema."""
    source = Path(source).expanduser()
    if source.name.endswith(".manifest.json"):
        source = source.with_name(source.name[:-len(".manifest.json")] + ".sqlite3")
    if not source.is_file():
        raise BackupError(f"there is no backup file {source}")
    manifest_path = manifest_path_for(source)
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} has no manifest ({manifest_path.name}) beside it; restore only backups made "
                          "by `python main.py backup`") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackupError(f"{manifest_path} is not a readable manifest") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise BackupError(f"{manifest_path} is not a backup manifest (no sha256)")
    digest = sha256(source)
    if digest != manifest["sha256"]:
        raise BackupError(f"{source.name} does not match its manifest (sha256 {digest[:12]}…, the manifest says "
                          f"{manifest['sha256'][:12]}…): the file was changed or damaged since the backup")
    facts = inspect(source)
    if facts["integrity"] != "ok":
        raise BackupError(f"{source.name} fails PRAGMA integrity_check: {facts['integrity']}")
    known = list(known_migrations)
    unknown = [name for name in facts["applied"] if name not in known]
    if unknown:
        raise BackupError(f"{source.name} was made by a newer version (schema {', '.join(unknown)} is unknown to "
                          "this code); install that version to restore it")
    if facts["schema_version"] != manifest.get("schema_version"):
        raise BackupError(f"{source.name} has schema {facts['schema_version']}, its manifest says "
                          f"{manifest.get('schema_version')}")
    secret = secret_path_for(source)
    return Backup(source, manifest_path, manifest, secret if secret.is_file() else None)


def restore(source: Path, database_path: Path, data_dir: Path, now: datetime,
            known_migrations: Iterable[str]) -> tuple[Backup, Path | None]:
    """Put a verified backup in place of the database; return it and where the old file was kept
    (None when there was no database)."""
    checked = verify(source, known_migrations)
    database_path = Path(database_path)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    aside = database_path.with_name(f"{database_path.name}.before-restore-{stamp}")
    incoming = database_path.with_name(f"{database_path.name}.restoring")
    with _exclusive(data_dir, database_path):
        try:
            _copy_private(checked.path, incoming)
            if sha256(incoming) != checked.manifest["sha256"]:  # what we copied is what we checked
                raise BackupError(f"copying {checked.path} to {incoming} changed it; check the disk")
            kept = None
            if database_path.exists():
                if aside.exists():
                    raise BackupError(f"{aside} already exists; wait a second and try again")
                # The -wal goes with its database (SQLite finds it by name, so the file kept aside still
                # opens with its last commits); the -shm is only an index and SQLite rebuilds it.
                for suffix in ("-wal", "-shm", ""):
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(f"{database_path}{suffix}", f"{aside}{suffix}")
                kept = aside
            os.replace(incoming, database_path)
            _fsync_dir(database_path.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                incoming.unlink()
    return checked, kept


def _copy_private(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


# --- the daily backup ------------------------------------------------------------------------------

_next_due: dict[Path, datetime] = {}  # BACKUP_DIR -> the earliest next attempt: an idle tick reads no disk


def backups_in(directory: Path) -> list[tuple[datetime, Path]]:
    """The backups named by NAME_FORMAT in a directory, oldest first (other files are not ours)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            match = NAME_PATTERN.match(entry.name)
            if match and entry.is_file():
                found.append((datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC), Path(entry.path)))
    return sorted(found)


def scheduled(database_path: Path, directory: Path, keep: int, now: datetime) -> Backup | None:
    """One backup a day into `directory`, keeping the newest `keep`. Returns the backup made, or None
    when none was due (or another process is making it)."""
    directory = Path(directory)
    due = _next_due.get(directory)
    if due is not None and now < due:
        return None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = _open_lock(directory / SCHEDULE_LOCK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another process is making today's
        existing = backups_in(directory)
        if existing and now - existing[-1][0] < DAY:
            _next_due[directory] = existing[-1][0] + DAY
            return None
        try:
            made = backup(database_path, directory, now)
        except Exception:
            _next_due[directory] = now + RETRY_AFTER_FAILURE
            raise
        _next_due[directory] = now + DAY
        prune(directory, keep)
        return made
    finally:
        os.close(fd)


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest backups beyond `keep`, each with its manifest and secret key file."""
    removed = []
    for _when, path in backups_in(directory)[:-keep] if keep > 0 else []:
        for item in (manifest_path_for(path), secret_path_for(path), path):  # the file itself last
            with contextlib.suppress(FileNotFoundError):
                item.unlink()
        removed.append(path)
    if removed:
        log.info("pruned %d old backups in %s (keeping %d)", len(removed), directory, keep)
    return removed


# --- files ---------------------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
