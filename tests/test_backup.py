"""Backups and restores as an operator runs them (`python main.py backup|restore`), and the daily
backup the tick makes. What must hold: a backup holds every payment PayTR was told OK before it
began; a restore puts back exactly the checked file, keeps the old one (with its WAL) aside, and
refuses damaged or foreign files and a database someone still has open."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from billing import jobs
from billing.clock import FixedClock, parse
from billing.db import Store, write
from billing.ops import backup
from conftest import make_company, make_settings
from reliability.support import AppServer, encode, seed_orders, success_form

ROOT = Path(__file__).resolve().parents[1]
NOW = parse("2026-12-24T09:00:00Z")


def cli(data_dir: Path, *args: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data_dir),
                **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=120)


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def companies(path: Path) -> set[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM companies")}
    finally:
        conn.close()


@pytest.fixture
def populated(tmp_path, password_hash):
    """A data dir with a migrated database holding two companies and three pending payments."""
    settings = make_settings(tmp_path, BILLING_ENV="development")
    seed_orders(settings, 3, password_hash, tag="b")
    return settings


def test_backup_writes_a_checked_copy_and_its_manifest(populated, tmp_path):
    done = cli(populated.data_dir, "backup", str(tmp_path / "backups"))
    assert done.returncode == 0, done.stderr
    made = list((tmp_path / "backups").iterdir())
    files = sorted(p.name for p in made)
    assert len(files) == 2 and files[0].endswith(".manifest.json") and files[1].endswith(".sqlite3"), files
    copy = next(p for p in made if p.suffix == ".sqlite3")
    manifest = json.loads(copy.with_suffix(".manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert manifest["schema_version"] == "m022_revenue" or manifest["schema_version"].startswith("m0")
    assert manifest["counts"] == {"payments": 3, "invoices": 0}
    assert manifest["integrity_check"] == "ok" and manifest["app_version"] and manifest["created_at"].endswith("Z")
    assert manifest["secret_key_file"] is None
    assert companies(copy) == {"Firma b0 A.Ş.", "Firma b1 A.Ş.", "Firma b2 A.Ş."}
    # Private, like the data dir; and one self-contained file (no -wal left beside it).
    assert all(p.stat().st_mode & 0o077 == 0 for p in made)
    assert "payments" in done.stdout and "integrity ok" in done.stdout
    assert "--with-secret" in done.stdout  # says what was left out


def test_the_secret_key_only_with_with_secret(populated, tmp_path):
    assert cli(populated.data_dir, "backup", str(tmp_path / "plain.sqlite3")).returncode == 0
    assert not (tmp_path / "plain.secret_key").exists()
    assert str(populated.secret_key) not in (tmp_path / "plain.manifest.json").read_text()
    done = cli(populated.data_dir, "backup", str(tmp_path / "full.sqlite3"), "--with-secret")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "full.secret_key").read_text().strip() == str(populated.secret_key)
    assert (tmp_path / "full.secret_key").stat().st_mode & 0o077 == 0
    assert str(populated.secret_key) not in done.stdout + done.stderr


def test_a_backup_never_overwrites_and_never_invents_a_database(populated, tmp_path):
    target = tmp_path / "b.sqlite3"
    assert cli(populated.data_dir, "backup", str(target)).returncode == 0
    before = target.read_bytes()
    again = cli(populated.data_dir, "backup", str(target))
    assert again.returncode == 1 and "already exists" in again.stderr and target.read_bytes() == before
    empty = tmp_path / "nothing-here"
    missing = cli(empty, "backup", str(tmp_path / "c.sqlite3"))
    assert missing.returncode == 1 and "no database" in missing.stderr
    assert not (empty / "billing.sqlite3").exists() and not (tmp_path / "c.sqlite3").exists()


def _crash_after_writing(database: Path, name: str) -> None:
    """A process that commits a company's rename and dies without closing: the change is only in the WAL."""
    code = ("import os, sys; from billing.db import connect; c = connect(sys.argv[1], autocheckpoint=False).conn; "
            "c.execute('UPDATE companies SET name = ? WHERE id = (SELECT min(id) FROM companies)', (sys.argv[2],)); "
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(database), name], check=True, timeout=30, cwd=ROOT)
    assert Path(f"{database}-wal").stat().st_size > 0


def test_restore_puts_the_backup_back_and_keeps_the_current_database_aside(populated, tmp_path, password_hash):
    data = populated.data_dir
    copy = tmp_path / "monday.sqlite3"
    assert cli(data, "backup", str(copy)).returncode == 0
    seed_orders(populated, 2, password_hash, tag="later")  # made after the backup
    _crash_after_writing(populated.database_path, "Renamed after the backup")
    names_before_restore = {"Renamed after the backup", "Firma b1 A.Ş.", "Firma b2 A.Ş.", "Firma later0 A.Ş.",
                            "Firma later1 A.Ş."}

    done = cli(data, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    assert companies(populated.database_path) == {"Firma b0 A.Ş.", "Firma b1 A.Ş.", "Firma b2 A.Ş."}
    assert hashlib.sha256(populated.database_path.read_bytes()).hexdigest() == \
        json.loads((tmp_path / "monday.manifest.json").read_text())["sha256"]
    assert not Path(f"{populated.database_path}-wal").exists()  # the old WAL must never meet the restored file
    aside = [p for p in data.iterdir() if p.name.startswith("billing.sqlite3.before-restore-") and "-" not in
             p.name.rsplit("before-restore-", 1)[1]]
    assert len(aside) == 1, sorted(p.name for p in data.iterdir())
    # The file kept aside still has what was only in its WAL when it was moved.
    assert companies(aside[0]) == names_before_restore
    assert str(aside[0]) in done.stdout

    # The server starts on the restored file.
    settings = make_settings(tmp_path, BILLING_ENV="development")
    store = Store(settings.database_path)
    assert store.db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def _rewrite_manifest(path: Path, **changes) -> None:
    manifest_file = path.with_suffix(".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(changes)
    manifest["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_file.write_text(json.dumps(manifest))


def test_restore_refuses_damaged_unlisted_and_newer_backups(populated, tmp_path):
    data = populated.data_dir
    original = populated.database_path.read_bytes()

    def refused(path: Path, reason: str) -> None:
        done = cli(data, "restore", str(path))
        assert done.returncode == 1 and reason in done.stderr, (done.stdout, done.stderr)
        assert populated.database_path.read_bytes() == original  # nothing changed
        assert not [p for p in data.iterdir() if "before-restore" in p.name or p.name.endswith(".restoring")]

    changed = tmp_path / "changed.sqlite3"
    assert cli(data, "backup", str(changed)).returncode == 0
    with open(changed, "r+b") as f:  # one byte flipped after the backup
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused(changed, "does not match its manifest")

    corrupt = tmp_path / "corrupt.sqlite3"
    assert cli(data, "backup", str(corrupt)).returncode == 0
    size = corrupt.stat().st_size
    with open(corrupt, "r+b") as f:  # a page of an index overwritten, the manifest made to agree
        f.seek(size - 4096 * 3)
        f.write(b"\x0d" + b"\xff" * 4095)
    _rewrite_manifest(corrupt)
    refused(corrupt, "integrity_check")

    newer = tmp_path / "newer.sqlite3"
    assert cli(data, "backup", str(newer)).returncode == 0
    conn = sqlite3.connect(newer)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('billing', 'm999_from_the_future', '2030-01-01')")
    conn.commit()
    conn.close()
    _rewrite_manifest(newer, schema_version="m999_from_the_future")
    refused(newer, "newer version")

    lonely = tmp_path / "lonely.sqlite3"
    assert cli(data, "backup", str(lonely)).returncode == 0
    lonely.with_suffix(".manifest.json").unlink()
    refused(lonely, "no manifest")


def test_restore_refuses_while_the_server_runs(populated, tmp_path):
    copy = tmp_path / "copy.sqlite3"
    assert cli(populated.data_dir, "backup", str(copy)).returncode == 0
    app = AppServer(tmp_path)
    assert app.data_dir == populated.data_dir
    app.start()
    try:
        done = app.cli("restore", str(copy))
        assert done.returncode == 1 and "stop it first" in done.stderr, (done.stdout, done.stderr)
        assert httpx.get(app.url + "/healthz").status_code == 200
    finally:
        app.stop()
    assert not [p for p in populated.data_dir.iterdir() if "before-restore" in p.name]
    # Stopped: the same command goes through.
    done = cli(populated.data_dir, "restore", str(copy))
    assert done.returncode == 0, done.stderr


def test_restore_refuses_while_any_other_process_has_the_database_open(populated, tmp_path):
    """Litestream or the sqlite3 shell take no lock of ours; SQLite's own lock on the -shm file shows them."""
    copy = tmp_path / "copy.sqlite3"
    assert cli(populated.data_dir, "backup", str(copy)).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL'); "
        "c.execute('SELECT count(*) FROM companies').fetchone(); print('open', flush=True); time.sleep(60)"),
        str(populated.database_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        done = cli(populated.data_dir, "restore", str(copy))
        assert done.returncode == 1 and "another process has" in done.stderr, (done.stdout, done.stderr)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert cli(populated.data_dir, "restore", str(copy)).returncode == 0


def test_the_server_will_not_start_during_a_restore(populated, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"),
        str(populated.data_dir / backup.SERVER_LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = cli(populated.data_dir, "jobs", "run")
        assert done.returncode == 2 and "a restore is replacing the database" in done.stderr, done.stderr
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_restore_with_secret_brings_the_key_back(populated, tmp_path):
    copy = tmp_path / "full.sqlite3"
    assert cli(populated.data_dir, "backup", str(copy), "--with-secret").returncode == 0
    key_file = populated.data_dir / "secret_key"
    old_key = key_file.read_text().strip()
    key_file.write_text("a-different-key-made-after-the-backup")
    done = cli(populated.data_dir, "restore", str(copy), "--with-secret")
    assert done.returncode == 0, done.stderr
    assert key_file.read_text().strip() == old_key
    kept = [p for p in populated.data_dir.iterdir() if p.name.startswith("secret_key.before-restore-")]
    assert [p.read_text() for p in kept] == ["a-different-key-made-after-the-backup"]


# --- the daily backup -----------------------------------------------------------------------------


def test_one_backup_a_day_and_the_oldest_pruned(populated, tmp_path):
    directory = tmp_path / "daily"
    directory.mkdir()
    (directory / "notes.txt").write_text("the operator's own file")
    backup._next_due.clear()
    db_path = populated.database_path
    made = [backup.scheduled(db_path, directory, 2, NOW)]
    assert made[0] is not None
    assert backup.scheduled(db_path, directory, 2, NOW + timedelta(hours=1)) is None  # not due
    backup._next_due.clear()  # a restarted process reads the directory instead
    assert backup.scheduled(db_path, directory, 2, NOW + timedelta(hours=23)) is None
    made.append(backup.scheduled(db_path, directory, 2, NOW + timedelta(days=1)))
    made.append(backup.scheduled(db_path, directory, 2, NOW + timedelta(days=2, minutes=5)))
    assert all(made)
    names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    assert names == sorted(["notes.txt", made[1].path.name, made[1].manifest_path.name, made[2].path.name,
                            made[2].manifest_path.name])
    assert made[2].path.name == "billing-20261226T090500Z.sqlite3"


def test_the_tick_makes_the_daily_backup(tmp_path, password_hash):
    settings = make_settings(tmp_path, BACKUP_DIR=str(tmp_path / "daily"), BACKUP_KEEP=3)
    assert settings.backup_dir == tmp_path / "daily" and settings.backup_keep == 3
    store = Store(settings.database_path, settings=settings)
    try:
        db = store.db()
        from billing import migrations

        with write(db):
            migrations.apply(db)
        make_company(db, settings, NOW, password_hash, n=7)
        backup._next_due.clear()
        ctx = jobs.Context(store=store, settings=settings, clock=FixedClock(NOW), paytr=None)
        # Each tick in a thread of its own: a browser test earlier on this xdist worker can leave an
        # event loop running in the main thread, where anyio.run refuses to start another.
        def tick():
            with ThreadPoolExecutor(1) as pool:
                return pool.submit(anyio.run, jobs.tick, ctx).result()

        first = tick()
        assert first["backup"] and first["backup"].startswith("billing-")
        assert tick()["backup"] is None  # one a day
        copy = tmp_path / "daily" / first["backup"]
        assert companies(copy) == {"Firma 7"}
        assert json.loads(copy.with_suffix(".manifest.json").read_text())["integrity_check"] == "ok"
    finally:
        store.close()


def test_backup_settings_are_checked(tmp_path):
    from billing.settings import ConfigError

    assert make_settings(tmp_path).backup_dir is None
    with pytest.raises(ConfigError, match="BACKUP_KEEP"):
        make_settings(tmp_path, BACKUP_KEEP=0)


# --- a backup during a callback storm ------------------------------------------------------------------


ORDERS = 240
SENDERS = 6
PACE = 0.05  # seconds between a sender's callbacks: the storm lasts about ORDERS / SENDERS * PACE = 2 s+


def test_a_backup_during_a_callback_storm_holds_every_payment_answered_ok_before_it_began(tmp_path, password_hash):
    app = AppServer(tmp_path)
    orders = seed_orders(app.settings, ORDERS, password_hash, tag="storm")
    app.start()
    acked: dict[str, float] = {}  # merchant_oid -> when PayTR heard OK (monotonic)
    errors: list[str] = []
    lock = threading.Lock()

    def send(part):
        with httpx.Client(timeout=30) as client:
            for order in part:
                answer = client.post(app.callback_url, content=encode(success_form(app.settings, order.payment)),
                                     headers={"content-type": "application/x-www-form-urlencoded"})
                if answer.status_code == 200 and answer.text == "OK":
                    with lock:
                        acked[order.oid] = time.monotonic()
                else:
                    errors.append(f"{order.oid}: {answer.status_code} {answer.text[:80]}")
                time.sleep(PACE)

    senders = [threading.Thread(target=send, args=(orders[i::SENDERS],)) for i in range(SENDERS)]
    try:
        for thread in senders:
            thread.start()
        while len(acked) < ORDERS // 5:
            time.sleep(0.01)
        began = time.monotonic()
        with lock:
            before = {oid for oid, at in acked.items() if at < began}
        done = app.cli("backup", str(tmp_path / "backups"))
        finished = time.monotonic()
        assert done.returncode == 0, done.stderr + app.tail()
        for thread in senders:
            thread.join(timeout=60)
    finally:
        app.stop()
    assert not errors, errors[:5]
    after = {oid for oid, at in acked.items() if at > finished}
    assert before and after, "the backup must run while callbacks stream"
    copy = next((tmp_path / "backups").glob("billing-*.sqlite3"))

    # Restored into a new data dir, as on a replacement machine.
    new_data = tmp_path / "restored"
    done = cli(new_data, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    restored = new_data / "billing.sqlite3"
    conn = sqlite3.connect(f"{restored.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        paid = {row[0] for row in conn.execute("SELECT merchant_oid FROM payments WHERE status = 'succeeded'")}
        invoiced = {row[0] for row in conn.execute(
            "SELECT p.merchant_oid FROM invoices i JOIN payments p ON p.id = i.payment_id")}
    finally:
        conn.close()
    assert before <= paid, f"{len(before - paid)} payments answered OK before the backup are missing"
    assert before <= invoiced
    assert not (after & paid), "a backup is a snapshot: nothing answered after it finished is in it"
    manifest = json.loads(copy.with_suffix(".manifest.json").read_text())
    assert manifest["counts"]["payments"] == ORDERS and manifest["counts"]["invoices"] == len(invoiced)
