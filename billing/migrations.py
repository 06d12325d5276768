"""The schema, as small named sqlite-utils migrations applied in order.

Never edit a migration that has shipped; add a new one. Instants are UTC
ISO-8601 text (`2026-11-27T09:00:00Z`), money is integer minor units.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("billing")


def _run(db: Database, *statements: str) -> None:
    for sql in statements:
        db.execute(sql)


@migrations()
def m001_accounts(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE companies (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            timezone TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            company_id INTEGER REFERENCES companies(id) ON DELETE CASCADE,
            email TEXT NOT NULL UNIQUE CHECK (email = lower(trim(email))),
            name TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('owner', 'member', 'staff')),
            created_at TEXT NOT NULL,
            password_changed_at TEXT NOT NULL,
            -- staff are the operator's admins, never members of a company
            CHECK ((role = 'staff') = (company_id IS NULL))
        )""",
        "CREATE INDEX users_company ON users(company_id)",
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,                 -- sha256 of the token in the cookie
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            ip TEXT,
            user_agent TEXT
        )""",
        "CREATE INDEX sessions_user ON sessions(user_id)",
        """CREATE TABLE password_resets (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        )""",
        "CREATE INDEX password_resets_user ON password_resets(user_id)",
        """CREATE TABLE invites (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
            email TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
            invited_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            accepted_at TEXT,
            revoked_at TEXT
        )""",
        "CREATE INDEX invites_company ON invites(company_id)",
        """CREATE TABLE login_attempts (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,
            ip TEXT NOT NULL,
            succeeded INTEGER NOT NULL,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX login_attempts_email ON login_attempts(email, created_at)",
        "CREATE INDEX login_attempts_ip ON login_attempts(ip, created_at)",
    )


@migrations()
def m002_subscriptions(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE subscriptions (
            id INTEGER PRIMARY KEY,
            company_id INTEGER NOT NULL UNIQUE REFERENCES companies(id) ON DELETE CASCADE,
            plan TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('trialing', 'active', 'past_due', 'canceled', 'expired')),
            trial_ends_at TEXT,
            current_period_start TEXT,
            current_period_end TEXT,
            period_anchor_day INTEGER,            -- day of month periods renew on
            cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
            scheduled_plan TEXT,                  -- a downgrade that starts next period
            past_due_since TEXT,
            canceled_at TEXT,
            ended_at TEXT,
            next_action_at TEXT,                  -- when the scheduler must look again
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX subscriptions_next_action ON subscriptions(next_action_at)"
        " WHERE next_action_at IS NOT NULL",
    )


@migrations()
def m003_events_and_outbox(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            company_id INTEGER REFERENCES companies(id) ON DELETE CASCADE,
            actor TEXT NOT NULL,                  -- 'user:3', 'staff:1', 'system', 'paytr'
            kind TEXT NOT NULL,                   -- 'company.registered', 'payment.succeeded', ...
            message TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX events_company ON events(company_id, id)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            dedupe_key TEXT NOT NULL UNIQUE,
            company_id INTEGER REFERENCES companies(id) ON DELETE SET NULL,
            template TEXT NOT NULL,
            to_addr TEXT NOT NULL,
            subject TEXT NOT NULL,
            body_text TEXT NOT NULL,
            body_html TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )""",
        "CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_company ON outbox(company_id, id)",
        """CREATE TABLE app_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
    )


def apply(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    pending = [m.name for m in migrations.pending(db)]
    if pending:
        migrations.apply(db)
    return pending
