import sqlite3

import pytest

from billing import migrations
from billing.db import Store, on_commit, rows, scalar, write


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "t.sqlite3")
    yield s
    s.close()


def schema(db):
    return rows(db, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")


def test_migrations_build_the_schema_on_an_empty_database(store):
    db = store.db()
    with write(db):
        applied = migrations.apply(db)
    assert applied == [m.name for m in migrations.migrations._migrations]
    tables = {r["name"] for r in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"companies", "users", "subscriptions", "events", "outbox", "sessions", "password_resets",
            "invites", "login_attempts"} <= tables


def test_running_migrations_twice_changes_nothing(store):
    db = store.db()
    with write(db):
        migrations.apply(db)
    before = schema(db)
    with write(db):
        assert migrations.apply(db) == []
    assert schema(db) == before
    assert scalar(db, "SELECT count(*) FROM _sqlite_migrations") == len(migrations.migrations._migrations)


def test_connections_are_durable_and_strict(store):
    db = store.db()
    assert scalar(db, "PRAGMA journal_mode") == "wal"
    assert scalar(db, "PRAGMA synchronous") == 2  # FULL
    assert scalar(db, "PRAGMA foreign_keys") == 1
    assert scalar(db, "PRAGMA busy_timeout") >= 5000


def test_write_rolls_back_everything_on_error(store):
    db = store.db()
    with write(db):
        migrations.apply(db)
    with pytest.raises(RuntimeError):
        with write(db):
            db.execute("INSERT INTO app_state (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")
    assert scalar(db, "SELECT count(*) FROM app_state") == 0


def test_write_takes_the_lock_up_front(store, tmp_path):
    db = store.db()
    with write(db):
        migrations.apply(db)
    other = sqlite3.connect(tmp_path / "t.sqlite3", timeout=0, isolation_level=None)
    with write(db):
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.close()


def test_nested_write_is_a_savepoint(store):
    db = store.db()
    with write(db):
        migrations.apply(db)
    with write(db):
        db.execute("INSERT INTO app_state (key, value) VALUES ('outer', '1')")
        with pytest.raises(ValueError):
            with write(db):
                db.execute("INSERT INTO app_state (key, value) VALUES ('inner', '1')")
                raise ValueError
    assert [r["key"] for r in rows(db, "SELECT key FROM app_state")] == ["outer"]


def test_after_commit_hooks_run_only_after_commit(store):
    db = store.db()
    with write(db):
        migrations.apply(db)
    calls = []
    with write(db):
        on_commit(db, lambda: calls.append("committed"))
        assert calls == []
    assert calls == ["committed"]
    with pytest.raises(KeyError):
        with write(db):
            on_commit(db, lambda: calls.append("rolled back"))
            raise KeyError
    assert calls == ["committed"]


def test_each_thread_gets_its_own_connection(store):
    import threading

    # Two threads alive at once never share one; once one has ended, its connection is reused.
    both, hold = [], threading.Event()
    first = threading.Thread(target=lambda: (both.append(store.db()), hold.wait()))
    first.start()
    second = threading.Thread(target=lambda: both.append(store.db()))
    second.start()
    second.join()
    hold.set()
    first.join()
    assert both[0] is not both[1]
    later = []
    third = threading.Thread(target=lambda: later.append(store.db()))
    third.start()
    third.join()
    assert later[0] in both
