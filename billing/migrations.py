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


@migrations()
def m004_payments_and_invoices(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE payments (
            id INTEGER PRIMARY KEY,
            company_id INTEGER NOT NULL REFERENCES companies(id),
            merchant_oid TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('subscribe', 'renewal', 'upgrade')),
            method TEXT NOT NULL DEFAULT 'iframe' CHECK (method IN ('iframe', 'direct', 'recurring')),
            plan TEXT NOT NULL,
            amount INTEGER NOT NULL CHECK (amount > 0),       -- what we asked for, minor units
            currency TEXT NOT NULL,
            test_mode INTEGER NOT NULL CHECK (test_mode IN (0, 1)),
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN
                ('pending', 'succeeded', 'failed', 'abandoned', 'superseded', 'needs_review')),
            -- the subscription's period end when this checkout began: a success applies
            -- only if nothing else has paid for that period since
            base_period_end TEXT,
            period_start TEXT,
            period_end TEXT,
            paid_amount INTEGER,                              -- total_amount PayTR reported
            failed_reason_code TEXT,
            failed_reason_msg TEXT,
            abandon_reason TEXT,
            flag TEXT,                                        -- why staff should look at it
            paytr_token TEXT,                                 -- the iframe token, to show the checkout again
            user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
            user_ip TEXT,
            email TEXT NOT NULL,
            reconcile_at TEXT,                                -- ask PayTR's status query if still pending
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            decided_at TEXT
        )""",
        "CREATE INDEX payments_company ON payments(company_id, id)",
        "CREATE INDEX payments_reconcile ON payments(reconcile_at) WHERE status IN ('pending', 'superseded')",
        """CREATE TABLE callbacks (
            id INTEGER PRIMARY KEY,
            received_at TEXT NOT NULL,
            merchant_oid TEXT NOT NULL,
            status TEXT NOT NULL,
            total_amount INTEGER NOT NULL,
            fields TEXT NOT NULL,                             -- everything PayTR sent, as JSON
            remote_addr TEXT,
            outcome TEXT NOT NULL
        )""",
        "CREATE INDEX callbacks_oid ON callbacks(merchant_oid)",
        # The raw callbacks are the audit record of what PayTR told us: append-only.
        """CREATE TRIGGER callbacks_append_only_update BEFORE UPDATE ON callbacks
           BEGIN SELECT RAISE(ABORT, 'callbacks are append-only'); END""",
        """CREATE TRIGGER callbacks_append_only_delete BEFORE DELETE ON callbacks
           BEGIN SELECT RAISE(ABORT, 'callbacks are append-only'); END""",
        """CREATE TABLE anomalies (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            merchant_oid TEXT,
            payment_id INTEGER REFERENCES payments(id),
            company_id INTEGER REFERENCES companies(id),
            callback_id INTEGER REFERENCES callbacks(id),
            detail TEXT NOT NULL,
            resolved_at TEXT,
            resolved_by TEXT,
            UNIQUE (kind, merchant_oid)
        )""",
        "CREATE INDEX anomalies_open ON anomalies(created_at) WHERE resolved_at IS NULL",
        """CREATE TABLE invoice_counters (
            year INTEGER PRIMARY KEY,
            last_number INTEGER NOT NULL
        )""",
        """CREATE TABLE invoices (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL UNIQUE,                      -- INV-2026-000001
            year INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            company_id INTEGER NOT NULL REFERENCES companies(id),
            payment_id INTEGER NOT NULL UNIQUE REFERENCES payments(id),
            issued_at TEXT NOT NULL,
            seller_name TEXT NOT NULL,
            seller_address TEXT NOT NULL,
            seller_tax_id TEXT NOT NULL,
            seller_tax_office TEXT NOT NULL,
            buyer_name TEXT NOT NULL,
            buyer_email TEXT NOT NULL,
            currency TEXT NOT NULL,
            net INTEGER NOT NULL,
            vat INTEGER NOT NULL,
            vat_rate TEXT NOT NULL,                           -- '20' (percent), as a decimal string
            total INTEGER NOT NULL,
            period_start TEXT,
            period_end TEXT,
            UNIQUE (year, sequence),
            CHECK (net + vat = total)
        )""",
        "CREATE INDEX invoices_company ON invoices(company_id, id)",
        """CREATE TABLE invoice_lines (
            id INTEGER PRIMARY KEY,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            description TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            unit_amount INTEGER NOT NULL,
            amount INTEGER NOT NULL
        )""",
        "CREATE INDEX invoice_lines_invoice ON invoice_lines(invoice_id)",
        # An issued invoice is a legal document: it is never changed or deleted.
        """CREATE TRIGGER invoices_immutable_update BEFORE UPDATE ON invoices
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END""",
        """CREATE TRIGGER invoices_immutable_delete BEFORE DELETE ON invoices
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END""",
        """CREATE TRIGGER invoice_lines_immutable_update BEFORE UPDATE ON invoice_lines
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END""",
        """CREATE TRIGGER invoice_lines_immutable_delete BEFORE DELETE ON invoice_lines
           BEGIN SELECT RAISE(ABORT, 'invoices are immutable'); END""",
    )


@migrations()
def m005_outbox_renders_at_send(db: Database) -> None:
    """Emails keep the context captured in the transaction and are rendered when sent,
    so the change that queues them (a payment callback, say) does not pay for templates."""
    _run(
        db,
        """CREATE TABLE outbox_new (
            id INTEGER PRIMARY KEY,
            dedupe_key TEXT NOT NULL UNIQUE,
            company_id INTEGER REFERENCES companies(id) ON DELETE SET NULL,
            template TEXT NOT NULL,
            to_addr TEXT NOT NULL,
            context TEXT NOT NULL DEFAULT '{}',               -- JSON snapshot taken with the change
            subject TEXT,                                     -- rendered at the first send attempt
            body_text TEXT,
            body_html TEXT,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )""",
        """INSERT INTO outbox_new (id, dedupe_key, company_id, template, to_addr, subject, body_text, body_html,
                                   status, attempts, next_attempt_at, claimed_until, last_error, created_at, sent_at)
           SELECT id, dedupe_key, company_id, template, to_addr, subject, body_text, body_html, status, attempts,
                  next_attempt_at, claimed_until, last_error, created_at, sent_at FROM outbox""",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_new RENAME TO outbox",
        "CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_company ON outbox(company_id, id)",
    )


@migrations()
def m006_autopilot(db: Database) -> None:
    """Saved cards for automatic renewal, and the bookkeeping of renewal charges."""
    _run(
        db,
        # PayTR's user token for the saved card, and the customer's IP when it was saved
        "ALTER TABLE companies ADD COLUMN paytr_utoken TEXT",
        "ALTER TABLE companies ADD COLUMN card_ip TEXT",
        # renewal charges of the saved card: attempt 0 at the period's end, then one per dunning day
        "ALTER TABLE payments ADD COLUMN attempt INTEGER",
        "ALTER TABLE payments ADD COLUMN charge_requested_at TEXT",
        # what the invoice line will say (a renewal, an upgrade's prorated days …)
        "ALTER TABLE payments ADD COLUMN description TEXT",
        # One charge per renewal step, whoever ticks: the database refuses a second.
        """CREATE UNIQUE INDEX payments_one_charge_per_step ON payments(company_id, base_period_end, attempt)
           WHERE method = 'recurring'""",
        "CREATE INDEX payments_to_charge ON payments(id) WHERE method = 'recurring' AND status = 'pending' "
        "AND charge_requested_at IS NULL",
    )


@migrations()
def m007_billing_details(db: Database) -> None:
    """Who invoices are made out to: the company's optional billing details, and the
    copy of them each invoice keeps (issued invoices never change)."""
    _run(
        db,
        "ALTER TABLE companies ADD COLUMN billing_legal_name TEXT",
        "ALTER TABLE companies ADD COLUMN billing_tax_office TEXT",
        "ALTER TABLE companies ADD COLUMN billing_tax_id TEXT",
        "ALTER TABLE companies ADD COLUMN billing_address TEXT",
        "ALTER TABLE companies ADD COLUMN billing_phone TEXT",
        "ALTER TABLE invoices ADD COLUMN buyer_address TEXT",
        "ALTER TABLE invoices ADD COLUMN buyer_tax_office TEXT",
        "ALTER TABLE invoices ADD COLUMN buyer_tax_id TEXT",
    )


@migrations()
def m008_refunds(db: Database) -> None:
    """Refunds that staff make through PayTR, and how an anomaly was settled."""
    _run(
        db,
        """CREATE TABLE refunds (
            id INTEGER PRIMARY KEY,
            payment_id INTEGER NOT NULL REFERENCES payments(id),
            company_id INTEGER REFERENCES companies(id),
            amount INTEGER NOT NULL CHECK (amount > 0),
            currency TEXT NOT NULL,
            reason TEXT NOT NULL,
            reference_no TEXT NOT NULL UNIQUE,  -- sent to PayTR, which does not deduplicate refunds
            request_key TEXT NOT NULL UNIQUE,  -- the staff form's one-time key: a double submit is one refund
            status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'unknown')),
            requested_by TEXT NOT NULL,
            message TEXT,
            check_at TEXT,  -- an unknown outcome: when to ask PayTR's status query
            created_at TEXT NOT NULL,
            decided_at TEXT
        )""",
        "CREATE INDEX refunds_payment ON refunds(payment_id)",
        "CREATE INDEX refunds_to_check ON refunds(check_at) WHERE check_at IS NOT NULL",
        "ALTER TABLE anomalies ADD COLUMN resolution TEXT",
    )



@migrations()
def m009_periods_and_quotes(db: Database) -> None:
    """Each renewal now records its period's start (a quote prorates over the current period
    only), the anchor is a local wall-clock time (DST), and an upgrade remembers the plan its
    quote was made from. Repairs the starts that renewals used to leave behind."""
    db.execute("ALTER TABLE subscriptions ADD COLUMN period_anchor_time TEXT")  # local HH:MM:SS periods renew at
    db.execute("ALTER TABLE payments ADD COLUMN base_plan TEXT")  # an upgrade applies only from this plan
    # When the renewal first failed: dunning retries count from it, so a late tick sends one email.
    db.execute("ALTER TABLE subscriptions ADD COLUMN past_due_at TEXT")
    repair_periods(db)


def repair_periods(db: Database) -> None:
    """Set each subscription's period start and anchor time from the payments that bought them."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    # The current period is the one the latest period payment bought (its end is the subscription's).
    db.execute("""UPDATE subscriptions SET current_period_start = (
                      SELECT p.period_start FROM payments p
                      WHERE p.company_id = subscriptions.company_id AND p.status = 'succeeded'
                        AND p.kind IN ('subscribe', 'renewal') AND p.period_end = subscriptions.current_period_end
                      ORDER BY p.id DESC LIMIT 1)
                  WHERE current_period_end IS NOT NULL AND EXISTS (
                      SELECT 1 FROM payments p WHERE p.company_id = subscriptions.company_id
                        AND p.status = 'succeeded' AND p.kind IN ('subscribe', 'renewal')
                        AND p.period_end = subscriptions.current_period_end)""")
    # The anchor time: the local start time of the latest subscription (renewals keep its anchor).
    for sub_id, start, tz in db.execute(
            """SELECT s.id, (SELECT p.period_start FROM payments p WHERE p.company_id = s.company_id
                             AND p.status = 'succeeded' AND p.kind = 'subscribe'
                             ORDER BY p.id DESC LIMIT 1), c.timezone
               FROM subscriptions s JOIN companies c ON c.id = s.company_id
               WHERE s.period_anchor_day IS NOT NULL""").fetchall():
        if start:
            local = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
            db.execute("UPDATE subscriptions SET period_anchor_time = ? WHERE id = ?",
                       [local.strftime("%H:%M:%S"), sub_id])


@migrations()
def m010_chosen_card(db: Database) -> None:
    """Which saved card renewals charge, and the cards already seen in PayTR's list, so that
    a card saved with a later payment can be told apart from the ones the company had."""
    _run(
        db,
        # PayTR's ctoken of the card renewals charge (NULL: none chosen, renewals go by pay link),
        # and how it was called, for when PayTR no longer lists it
        "ALTER TABLE companies ADD COLUMN paytr_ctoken TEXT",
        "ALTER TABLE companies ADD COLUMN paytr_card_label TEXT",
        # set by a payment that saved a card (its merchant_oid) until PayTR's list showed which card it was
        "ALTER TABLE companies ADD COLUMN card_saved_by TEXT",
        """CREATE TABLE paytr_cards (
            company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
            ctoken TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            PRIMARY KEY (company_id, ctoken)
        ) WITHOUT ROWID""",
        # Saved before this: renewals charged the first card PayTR listed; keep charging that one.
        "UPDATE companies SET card_saved_by = 'first-listed' WHERE paytr_utoken IS NOT NULL",
    )


@migrations()
def m011_attempt_kinds(db: Database) -> None:
    """Attempts that could tell whether an address has an account (signing up or inviting an
    address that has one) count against the client's address like failed logins; reset
    requests are recorded too, so a known and an unknown address cost the same work."""
    _run(
        db,
        "ALTER TABLE login_attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'login' "
        "CHECK (kind IN ('login', 'register', 'invite', 'reset'))",
    )



@migrations()
def m012_host_integration(db: Database) -> None:
    """The host product's own id for a customer (unique when set), and what the customer
    uses now as the host last reported it (the JSON API's usage)."""
    _run(
        db,
        "ALTER TABLE companies ADD COLUMN external_id TEXT",
        "CREATE UNIQUE INDEX companies_external_id ON companies (external_id) WHERE external_id IS NOT NULL",
        "ALTER TABLE companies ADD COLUMN usage_workspaces INTEGER CHECK (usage_workspaces >= 0)",
        "ALTER TABLE companies ADD COLUMN usage_storage_bytes INTEGER CHECK (usage_storage_bytes >= 0)",
        "ALTER TABLE companies ADD COLUMN usage_reported_at TEXT",
    )


@migrations()
def m013_portal_sessions(db: Database) -> None:
    """Portal links the host hands its users: single-use, short-lived, stored as a hash."""
    _run(
        db,
        """CREATE TABLE portal_sessions (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
            return_url TEXT NOT NULL,
            flow TEXT NOT NULL DEFAULT 'billing' CHECK (flow IN ('billing', 'subscribe')),
            plan TEXT,
            created_by TEXT NOT NULL,             -- the API key's name (prefix), for the audit trail
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        )""",
    )


@migrations()
def m014_api(db: Database) -> None:
    """API keys (only a hash of each; a visible prefix for lists), the answers to creates sent
    with an Idempotency-Key (replayed for 24 h), and each user's language."""
    _run(
        db,
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
            prefix TEXT NOT NULL UNIQUE,          -- bk_test_Ab12Cd34Ef: shown in lists, names the key in the audit trail
            key_hash TEXT NOT NULL UNIQUE,        -- sha256 of the whole key
            scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""",
        """CREATE TABLE api_idempotency (
            idempotency_key TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,            -- sha256 of method, path and body: a reuse with another body is refused
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX api_idempotency_created ON api_idempotency (created_at)",
        "ALTER TABLE users ADD COLUMN locale TEXT CHECK (locale IN ('tr', 'en'))",
    )


@migrations()
def m015_webhooks(db: Database) -> None:
    """Webhook endpoints, the events the host is told about (each body written once, in the
    change's transaction), one outbox message per event and endpoint, and every attempt."""
    _run(
        db,
        """CREATE TABLE webhook_endpoints (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
            event_types TEXT,                     -- JSON list of types; NULL: every type
            secret TEXT NOT NULL,                 -- whsec_…, needed in clear to sign
            previous_secret TEXT,                 -- still signs (beside the new one) until:
            previous_secret_until TEXT,
            enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
            disabled_reason TEXT,
            failing_since TEXT,                   -- first failure since the last delivery
            last_attempt_at TEXT,
            last_status INTEGER,
            last_delivered_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE webhook_events (
            id INTEGER PRIMARY KEY,
            public_id TEXT NOT NULL UNIQUE,       -- evt_…: the webhook-id header and the body's id
            type TEXT NOT NULL,
            company_id INTEGER REFERENCES companies(id) ON DELETE SET NULL,
            sequence INTEGER,                     -- per customer, increasing
            body TEXT NOT NULL,
            dedupe_key TEXT UNIQUE,
            created_at TEXT NOT NULL
        )""",
        """CREATE TABLE webhook_messages (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
            endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,
            expires_at TEXT NOT NULL,             -- retried until then (3 days; "send again" restarts it)
            last_error TEXT,
            sent_at TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (event_id, endpoint_id)
        )""",
        "CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, next_attempt_at) "
        "WHERE status = 'pending'",
        "CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, id)",
        """CREATE TABLE webhook_attempts (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES webhook_messages(id) ON DELETE CASCADE,
            endpoint_id INTEGER NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
            attempted_at TEXT NOT NULL,
            status_code INTEGER,
            duration_ms INTEGER NOT NULL,
            response TEXT,                        -- the answer's first KiB
            error TEXT
        )""",
        "CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id)",
        "CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id)",
        """CREATE TABLE webhook_customers (
            company_id INTEGER PRIMARY KEY REFERENCES companies(id) ON DELETE CASCADE,
            sequence INTEGER NOT NULL,
            entitlements TEXT                     -- plan, status, access, limits as last sent
        )""",
    )



@migrations()
def m016_languages(db: Database) -> None:
    """Each email is rendered in its recipient's language, chosen when it is queued."""
    _run(db, "ALTER TABLE outbox ADD COLUMN locale TEXT CHECK (locale IN ('en', 'tr'))")


@migrations()
def m017_documents(db: Database) -> None:
    """Invoices as documents: the seller's further legal details copied at issue, how the payment
    was made; credit notes for refunds, with their own gapless yearly numbers, immutable like
    invoices; and the indexes a month's export reads by."""
    _run(
        db,
        "ALTER TABLE invoices ADD COLUMN seller_mersis TEXT",
        "ALTER TABLE invoices ADD COLUMN seller_email TEXT",
        "ALTER TABLE invoices ADD COLUMN seller_website TEXT",
        "ALTER TABLE invoices ADD COLUMN paid_with TEXT",  # "Visa ending 4358", when known
        "CREATE INDEX IF NOT EXISTS invoices_issued ON invoices (issued_at)",
        """CREATE TABLE credit_note_counters (
            year INTEGER PRIMARY KEY,
            last_number INTEGER NOT NULL
        )""",
        """CREATE TABLE credit_notes (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL UNIQUE,                      -- CN-2026-000001
            year INTEGER NOT NULL,
            sequence INTEGER NOT NULL,
            invoice_id INTEGER NOT NULL REFERENCES invoices(id),
            refund_id INTEGER NOT NULL UNIQUE REFERENCES refunds(id),
            company_id INTEGER NOT NULL REFERENCES companies(id),
            issued_at TEXT NOT NULL,
            seller_name TEXT NOT NULL,
            seller_address TEXT NOT NULL,
            seller_tax_id TEXT NOT NULL,
            seller_tax_office TEXT NOT NULL,
            seller_mersis TEXT,
            seller_email TEXT,
            seller_website TEXT,
            buyer_name TEXT NOT NULL,
            buyer_email TEXT NOT NULL,
            buyer_address TEXT,
            buyer_tax_office TEXT,
            buyer_tax_id TEXT,
            currency TEXT NOT NULL,
            net INTEGER NOT NULL,
            vat INTEGER NOT NULL,
            vat_rate TEXT NOT NULL,                           -- the invoice's rate
            total INTEGER NOT NULL CHECK (total > 0),
            reason TEXT NOT NULL,
            full_credit INTEGER NOT NULL DEFAULT 0 CHECK (full_credit IN (0, 1)),  -- the invoice is fully credited
            UNIQUE (year, sequence),
            CHECK (net + vat = total)
        )""",
        "CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id)",
        "CREATE INDEX credit_notes_issued ON credit_notes (issued_at)",
        """CREATE TRIGGER credit_notes_immutable_update BEFORE UPDATE ON credit_notes
           BEGIN SELECT RAISE(ABORT, 'credit notes are immutable'); END""",
        """CREATE TRIGGER credit_notes_immutable_delete BEFORE DELETE ON credit_notes
           BEGIN SELECT RAISE(ABORT, 'credit notes are immutable'); END""",
    )


# The seed's catalog, as the operator first finds it (m018). Later changes are the operator's, in the table.
SEED_PLANS = (
    # code, name_en, name_tr, description_en, description_tr, price, workspaces, storage_gb, sort_order
    ("starter", "Starter", "Starter", "For small teams getting started.", "Yeni başlayan küçük ekipler için.",
     2900, 5, 10, 10),
    ("team", "Team", "Team", "For growing teams that collaborate daily.",
     "Her gün birlikte çalışan, büyüyen ekipler için.", 9900, 20, 50, 20),
    ("enterprise", "Enterprise", "Enterprise", "For organisations that need room to grow.",
     "Büyümek için alana ihtiyaç duyan kuruluşlar için.", 29900, None, 250, 30),
)


@migrations()
def m018_console(db: Database) -> None:
    """The operator's console: plans move from code into the catalog table (the seed's three
    created here); each subscription keeps the price it renews at; staff have roles and can be
    deactivated; sessions remember when the person last proved who they are; every staff action
    goes to the audit log."""
    _run(
        db,
        """CREATE TABLE plans (
            code TEXT PRIMARY KEY CHECK (length(code) BETWEEN 1 AND 40 AND code NOT GLOB '*[^a-z0-9_-]*'),
            name_en TEXT NOT NULL CHECK (length(name_en) BETWEEN 1 AND 60),
            name_tr TEXT NOT NULL CHECK (length(name_tr) BETWEEN 1 AND 60),
            description_en TEXT NOT NULL DEFAULT '',
            description_tr TEXT NOT NULL DEFAULT '',
            price INTEGER NOT NULL CHECK (price > 0),                 -- minor units, VAT included
            currency TEXT NOT NULL CHECK (currency IN ('TRY', 'USD', 'EUR')),
            interval TEXT NOT NULL DEFAULT 'month' CHECK (interval IN ('month', 'year')),
            workspaces INTEGER CHECK (workspaces >= 0),               -- NULL: unlimited
            storage_gb INTEGER NOT NULL CHECK (storage_gb >= 0),
            trial_days INTEGER NOT NULL DEFAULT 14 CHECK (trial_days BETWEEN 0 AND 365),
            sort_order INTEGER NOT NULL DEFAULT 0,
            public INTEGER NOT NULL DEFAULT 1 CHECK (public IN (0, 1)),  -- 0: only staff can move a customer to it
            archived_at TEXT,                                         -- no new subscriptions; existing keep it
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        # The price and currency a subscription renews at: a catalog price change reaches existing
        # subscribers only when staff apply it, with notice.
        "ALTER TABLE subscriptions ADD COLUMN price INTEGER CHECK (price > 0)",
        "ALTER TABLE subscriptions ADD COLUMN currency TEXT",
        "ALTER TABLE users ADD COLUMN staff_role TEXT CHECK (staff_role IN ('admin', 'finance', 'support'))",
        "ALTER TABLE users ADD COLUMN deactivated_at TEXT",
        "ALTER TABLE sessions ADD COLUMN authenticated_at TEXT",  # password or second factor last given
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            staff_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
            staff_email TEXT NOT NULL,                    -- kept when the staff account goes
            action TEXT NOT NULL,                         -- 'subscription.cancel_now', 'plan.price_change', ...
            company_id INTEGER REFERENCES companies(id) ON DELETE SET NULL,
            target TEXT,                                  -- what was acted on: 'plan:team', 'payment:12', 'staff:4'
            before TEXT NOT NULL DEFAULT '{}',            -- JSON
            after TEXT NOT NULL DEFAULT '{}',             -- JSON
            reason TEXT NOT NULL CHECK (length(trim(reason)) > 0),
            ip TEXT
        )""",
        "CREATE INDEX audit_log_company ON audit_log (company_id, id)",
        "CREATE INDEX audit_log_staff ON audit_log (staff_id, id)",
        "CREATE INDEX audit_log_action ON audit_log (action, id)",
        "CREATE INDEX audit_log_created ON audit_log (created_at)",
        """CREATE TRIGGER audit_log_immutable_update BEFORE UPDATE OF created_at, action, before, after, reason
           ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
        """CREATE TRIGGER audit_log_immutable_delete BEFORE DELETE ON audit_log
           BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    )
    now = db.execute("SELECT strftime('%Y-%m-%dT%H:%M:%SZ', 'now')").fetchone()[0]
    for code, name_en, name_tr, desc_en, desc_tr, price, workspaces, storage, order in SEED_PLANS:
        db.execute(
            """INSERT INTO plans (code, name_en, name_tr, description_en, description_tr, price, currency, interval,
                                  workspaces, storage_gb, trial_days, sort_order, public, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, 'USD', 'month', ?, ?, 14, ?, 1, ?, ?)""",
            [code, name_en, name_tr, desc_en, desc_tr, price, workspaces, storage, order, now, now])
    db.execute("""UPDATE subscriptions SET price = (SELECT price FROM plans WHERE code = subscriptions.plan),
                                          currency = (SELECT currency FROM plans WHERE code = subscriptions.plan)""")
    db.execute("UPDATE users SET staff_role = 'admin' WHERE role = 'staff'")
    db.execute("UPDATE sessions SET authenticated_at = created_at")


@migrations()
def m019_price_changes(db: Database) -> None:
    """A catalog price change reaches existing subscribers only when staff apply it, with notice:
    the subscription keeps renewing at `price` until the first period starting on or after
    `next_price_from`, which renews at `next_price`. `featured` highlights a plan on the pricing page."""
    _run(
        db,
        "ALTER TABLE subscriptions ADD COLUMN next_price INTEGER CHECK (next_price > 0)",
        "ALTER TABLE subscriptions ADD COLUMN next_price_from TEXT",
        "ALTER TABLE subscriptions ADD COLUMN price_notice_at TEXT",  # when the customer was told
        "CREATE INDEX subscriptions_plan_status ON subscriptions (plan, status)",
        "ALTER TABLE plans ADD COLUMN featured INTEGER NOT NULL DEFAULT 0 CHECK (featured IN (0, 1))",
        "UPDATE plans SET featured = 1 WHERE code = 'team'",
    )


@migrations()
def m020_two_factor(db: Database) -> None:
    """Account security: TOTP two-factor (the secret sealed with a key derived from SECRET_KEY,
    the last accepted time step so a code works once), one-time recovery codes (only their
    SHA-256), invitations for staff, the browsers each account has logged in from (only a hash
    of the long-lived `device` cookie), and the undo links of email changes. Login attempts
    gain a 'two_factor' kind, counted apart from passwords so a right password cannot reset
    the count of wrong codes."""
    _run(
        db,
        "ALTER TABLE users ADD COLUMN totp_secret TEXT",         # sealed (two_factor.seal); NULL: none
        "ALTER TABLE users ADD COLUMN totp_enabled_at TEXT",     # NULL while enrolment is unconfirmed
        "ALTER TABLE users ADD COLUMN totp_last_step INTEGER",   # the newest 30-second step accepted
        """CREATE TABLE recovery_codes (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            code_hash TEXT NOT NULL,              -- sha256 of an 80-bit random code
            created_at TEXT NOT NULL,
            used_at TEXT,
            UNIQUE (user_id, code_hash)
        )""",
        """CREATE TABLE staff_invites (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,      -- sha256 of the token in the emailed link
            email TEXT NOT NULL,
            staff_role TEXT NOT NULL CHECK (staff_role IN ('admin', 'finance', 'support')),
            invited_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            accepted_at TEXT,
            revoked_at TEXT
        )""",
        "CREATE INDEX staff_invites_email ON staff_invites (email)",
        """CREATE TABLE known_browsers (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            fingerprint TEXT NOT NULL,            -- sha256 of the browser's `device` cookie
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            ip TEXT,
            user_agent TEXT,
            UNIQUE (user_id, fingerprint)
        )""",
        """CREATE TABLE email_changes (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,      -- sha256 of the undo link's token (sent to the old address)
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            old_email TEXT NOT NULL,
            new_email TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT
        )""",
        "CREATE INDEX email_changes_user ON email_changes (user_id)",
        # SQLite cannot change a CHECK in place: the (short-lived) attempts table is rebuilt.
        """CREATE TABLE login_attempts_new (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,
            ip TEXT NOT NULL,
            succeeded INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'login'
                CHECK (kind IN ('login', 'register', 'invite', 'reset', 'two_factor'))
        )""",
        "INSERT INTO login_attempts_new (id, email, ip, succeeded, created_at, kind) "
        "SELECT id, email, ip, succeeded, created_at, kind FROM login_attempts",
        "DROP TABLE login_attempts",
        "ALTER TABLE login_attempts_new RENAME TO login_attempts",
        "CREATE INDEX login_attempts_email ON login_attempts(email, created_at)",
        "CREATE INDEX login_attempts_ip ON login_attempts(ip, created_at)",
    )


@migrations()
def m021_search(db: Database) -> None:
    """The customer list at 100,000 customers: every filter, search and sort reads an index.

    - `subscriptions.mrr` (monthly amount in the subscription's own currency: its price, a yearly
      one divided by 12 and rounded half up, while active or past due; else 0) and
      `subscriptions.ends_at` (the trial's end while trialing, else the paid period's end; '' when
      neither) are sort keys, kept by triggers, so no code path can forget them and no list has to
      compute them per row. A plan's interval is looked up when the subscription changes; should
      an interval ever change, a trigger on plans recomputes its subscribers.
    - `customer_index`: per company, its name, its owner's email and the other members' emails,
      folded the way staff search (billing.i18n.search_fold, SQLite function fold()), kept by
      triggers on companies and users; `customer_fts` is an FTS5 trigram index over it (substring
      search of 3+ characters), the B-tree indexes serve prefixes of shorter queries.
    - `companies.card_expires`: the renewal card's expiry month (YYYY-MM) from PayTR's card list.
    - Exact identifiers (VKN/TCKN, merchant_oid, INV-…, CN-…) use unique or plain indexes.
    - payments by date (the payments report), failed emails (the staff home's count)."""
    interval = "(SELECT p.interval FROM plans p WHERE p.code = NEW.plan)"
    mrr = (f"CASE WHEN NEW.status IN ('active', 'past_due') AND NEW.price IS NOT NULL THEN "
           f"CASE WHEN {interval} = 'year' THEN (NEW.price + 6) / 12 ELSE NEW.price END ELSE 0 END")
    ends = ("coalesce(CASE WHEN NEW.status = 'trialing' THEN NEW.trial_ends_at "
            "ELSE coalesce(NEW.current_period_end, NEW.trial_ends_at) END, '')")
    refresh_members = """UPDATE customer_index SET
            owner_email = coalesce((SELECT fold(u.email) FROM users u WHERE u.company_id = {id} AND u.role = 'owner'
                                    ORDER BY u.id LIMIT 1), ''),
            member_emails = coalesce((SELECT group_concat(fold(u.email), ' ') FROM users u
                                      WHERE u.company_id = {id} AND u.role != 'owner'), '')
        WHERE company_id = {id};"""
    _run(
        db,
        "ALTER TABLE subscriptions ADD COLUMN mrr INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE subscriptions ADD COLUMN ends_at TEXT NOT NULL DEFAULT ''",
        f"""CREATE TRIGGER subscriptions_sort_keys_insert AFTER INSERT ON subscriptions BEGIN
            UPDATE subscriptions SET mrr = {mrr}, ends_at = {ends} WHERE id = NEW.id; END""",
        f"""CREATE TRIGGER subscriptions_sort_keys_update
            AFTER UPDATE OF status, plan, price, trial_ends_at, current_period_end ON subscriptions BEGIN
            UPDATE subscriptions SET mrr = {mrr}, ends_at = {ends} WHERE id = NEW.id; END""",
        """CREATE TRIGGER plans_interval_changed AFTER UPDATE OF interval ON plans
           WHEN NEW.interval IS NOT OLD.interval BEGIN
           UPDATE subscriptions SET mrr = CASE WHEN status IN ('active', 'past_due') AND price IS NOT NULL THEN
               CASE WHEN NEW.interval = 'year' THEN (price + 6) / 12 ELSE price END ELSE 0 END
           WHERE plan = NEW.code; END""",
        """UPDATE subscriptions SET
               mrr = CASE WHEN status IN ('active', 'past_due') AND price IS NOT NULL THEN
                   CASE WHEN (SELECT p.interval FROM plans p WHERE p.code = subscriptions.plan) = 'year'
                        THEN (price + 6) / 12 ELSE price END ELSE 0 END,
               ends_at = coalesce(CASE WHEN status = 'trialing' THEN trial_ends_at
                                  ELSE coalesce(current_period_end, trial_ends_at) END, '')""",
        # Each filter with each sort (newest = company id, MRR, period end), keyset-paged by company id.
        "CREATE INDEX subscriptions_by_mrr ON subscriptions (mrr, company_id)",
        "CREATE INDEX subscriptions_by_ends ON subscriptions (ends_at, company_id)",
        *(f"CREATE INDEX subscriptions_{column}_{name} ON subscriptions ({column}, {key}company_id)"
          for column in ("status", "plan", "currency")
          for name, key in (("created", ""), ("mrr", "mrr, "), ("ends", "ends_at, "))),
        """CREATE TABLE customer_index (
            company_id INTEGER PRIMARY KEY REFERENCES companies(id) ON DELETE CASCADE,
            name TEXT NOT NULL,                   -- fold(companies.name)
            owner_email TEXT NOT NULL DEFAULT '', -- fold() of the owner's email
            member_emails TEXT NOT NULL DEFAULT '' -- the other members' emails, folded, space-separated
        )""",
        "CREATE INDEX customer_index_name ON customer_index (name)",
        "CREATE INDEX customer_index_owner_email ON customer_index (owner_email)",
        """CREATE VIRTUAL TABLE customer_fts USING fts5(
            name, owner_email, member_emails, content='customer_index', content_rowid='company_id',
            tokenize='trigram')""",
        """CREATE TRIGGER customer_index_ai AFTER INSERT ON customer_index BEGIN
           INSERT INTO customer_fts (rowid, name, owner_email, member_emails)
           VALUES (NEW.company_id, NEW.name, NEW.owner_email, NEW.member_emails); END""",
        """CREATE TRIGGER customer_index_ad AFTER DELETE ON customer_index BEGIN
           INSERT INTO customer_fts (customer_fts, rowid, name, owner_email, member_emails)
           VALUES ('delete', OLD.company_id, OLD.name, OLD.owner_email, OLD.member_emails); END""",
        """CREATE TRIGGER customer_index_au AFTER UPDATE ON customer_index BEGIN
           INSERT INTO customer_fts (customer_fts, rowid, name, owner_email, member_emails)
           VALUES ('delete', OLD.company_id, OLD.name, OLD.owner_email, OLD.member_emails);
           INSERT INTO customer_fts (rowid, name, owner_email, member_emails)
           VALUES (NEW.company_id, NEW.name, NEW.owner_email, NEW.member_emails); END""",
        """CREATE TRIGGER companies_search_ai AFTER INSERT ON companies BEGIN
           INSERT INTO customer_index (company_id, name) VALUES (NEW.id, fold(NEW.name)); END""",
        """CREATE TRIGGER companies_search_au AFTER UPDATE OF name ON companies BEGIN
           UPDATE customer_index SET name = fold(NEW.name) WHERE company_id = NEW.id; END""",
        """CREATE TRIGGER companies_search_ad AFTER DELETE ON companies BEGIN
           DELETE FROM customer_index WHERE company_id = OLD.id; END""",
        f"""CREATE TRIGGER users_search_ai AFTER INSERT ON users WHEN NEW.company_id IS NOT NULL BEGIN
           {refresh_members.format(id="NEW.company_id")} END""",
        f"""CREATE TRIGGER users_search_ad AFTER DELETE ON users WHEN OLD.company_id IS NOT NULL BEGIN
           {refresh_members.format(id="OLD.company_id")} END""",
        f"""CREATE TRIGGER users_search_au AFTER UPDATE OF email, role, company_id ON users BEGIN
           {refresh_members.format(id="OLD.company_id")}
           {refresh_members.format(id="NEW.company_id")} END""",
        "INSERT INTO customer_index (company_id, name) SELECT id, fold(name) FROM companies",
        """UPDATE customer_index SET
            owner_email = coalesce((SELECT fold(u.email) FROM users u WHERE u.company_id = customer_index.company_id
                                    AND u.role = 'owner' ORDER BY u.id LIMIT 1), ''),
            member_emails = coalesce((SELECT group_concat(fold(u.email), ' ') FROM users u
                                      WHERE u.company_id = customer_index.company_id AND u.role != 'owner'), '')""",
        "ALTER TABLE companies ADD COLUMN card_expires TEXT",  # '2027-03': the renewal card's expiry month
        "CREATE INDEX companies_card_expires ON companies (card_expires) WHERE card_expires IS NOT NULL",
        "CREATE INDEX companies_tax_id ON companies (billing_tax_id) WHERE billing_tax_id IS NOT NULL",
        "CREATE INDEX payments_created ON payments (created_at, id)",
        # The report's totals per currency and status read this index alone, never the rows.
        "CREATE INDEX payments_report ON payments (created_at, status, kind, plan, currency, amount)",
        "CREATE INDEX outbox_failed ON outbox (id) WHERE status = 'failed'",
    )


@migrations()
def m022_revenue(db: Database) -> None:
    """Revenue metrics (billing/revenue.py): a snapshot of the figures folded from the events, so
    the metrics page reads a dozen rows instead of two years of history. `revenue_months` holds
    each closed month's figures per currency (and the open month's as of the last refresh);
    `revenue_companies` each company's MRR-relevant state (now, and at the open month's start).
    Both are rebuilt from the events by `revenue.rebuild` at any time. The partial indexes let a
    month's failed payments and refunds be summed without reading every payment."""
    _run(
        db,
        """CREATE TABLE revenue_months (
            month TEXT NOT NULL,                  -- '2026-11', in the operator's time zone
            currency TEXT NOT NULL,
            closed INTEGER NOT NULL CHECK (closed IN (0, 1)),  -- 0: the open month, as of the last refresh
            figures TEXT NOT NULL,                -- JSON: integer minor units and counts (revenue.FIELDS)
            PRIMARY KEY (month, currency)
        )""",
        """CREATE TABLE revenue_companies (
            company_id INTEGER PRIMARY KEY,
            state TEXT NOT NULL                   -- JSON: status, plan, price, currency, start of the open month
        )""",
        "CREATE INDEX payments_failed_decided ON payments (decided_at) WHERE status = 'failed'",
        "CREATE INDEX refunds_succeeded_decided ON refunds (decided_at) WHERE status = 'succeeded'",
    )


@migrations()
def m024_card_details(db: Database) -> None:
    """Saved cards' details kept, so no page view asks PayTR (billing/cards.py). `paytr_cards` gains
    what the card box shows (brand, last four, expiry month, bank) and PayTR's order; companies gain
    `cards_listed_at` (the last time PayTR's list was recorded; NULL: details unknown, e.g. a card
    just saved or every company before this migration) and `cards_tried_at` (the tick's lease on a
    refresh, so a failing PayTR is asked again an hour later, not every tick). The partial index finds
    the companies whose details are unknown, those with a card just saved first; the other finds
    active subscriptions renewing in the next few days, whose card lists the tick refreshes daily."""
    _run(
        db,
        "ALTER TABLE paytr_cards ADD COLUMN brand TEXT",
        "ALTER TABLE paytr_cards ADD COLUMN last4 TEXT",
        "ALTER TABLE paytr_cards ADD COLUMN expires TEXT",  # '2027-03', as companies.card_expires
        "ALTER TABLE paytr_cards ADD COLUMN bank TEXT",
        "ALTER TABLE paytr_cards ADD COLUMN position INTEGER",  # PayTR lists cards in the order they were saved
        "ALTER TABLE companies ADD COLUMN cards_listed_at TEXT",
        "ALTER TABLE companies ADD COLUMN cards_tried_at TEXT",
        "CREATE INDEX companies_cards_unlisted ON companies (card_saved_by IS NULL, id)"
        " WHERE paytr_utoken IS NOT NULL AND cards_listed_at IS NULL",
        # The period's end alone (cards._RENEWING filters status with a unary +): a partial index
        # WHERE status = 'active' lost to subscriptions_status_ends (status = ?), which reads every
        # active subscription (50,000 at 100,000 customers) each tick, and a (status, end) index
        # would be taken by the console's status filters instead of their sort indexes.
        "CREATE INDEX subscriptions_renewing ON subscriptions (current_period_end)",
    )


def pending(db: Database) -> list[tuple[str, str]]:
    """The migrations not yet applied, as (name, first line of its docstring), without writing:
    what `migrate --dry-run` shows before an upgrade."""
    return [(m.name, (m.fn.__doc__ or "").strip().splitlines()[0] if m.fn.__doc__ else "")
            for m in migrations.pending(db)]


def names() -> list[str]:
    """Every migration, in the order they apply."""
    return [m.name for m in migrations._migrations]


def apply(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    pending = [m.name for m in migrations.pending(db)]
    if pending:
        migrations.apply(db)
    return pending


@migrations()
def m023_outbox_retention(db: Database) -> None:
    """Sent emails and delivered webhook events lose their bodies after MAIL_BODY_RETENTION_DAYS; lookups use indexes.

    billing/mail.py `prune_bodies` and billing/notify/webhooks.py `prune_payloads` do the pruning; `pruned_at` marks a row whose rendered body, context or payload was dropped, so pages can
    say so. The partial indexes let the tick find what is left to prune without reading the outbox, and let the
    console, /metrics and the senders count and look up without a scan: webhook messages by status, refunds by
    company (the staff customer page), staff accounts (the alert addresses)."""
    _run(
        db,
        "ALTER TABLE outbox ADD COLUMN pruned_at TEXT",
        "ALTER TABLE webhook_events ADD COLUMN pruned_at TEXT",
        # Only sent, not yet pruned rows: the entry leaves the index as the row is pruned.
        "CREATE INDEX outbox_to_prune ON outbox (sent_at) WHERE status = 'sent' AND pruned_at IS NULL",
        "CREATE INDEX webhook_events_to_prune ON webhook_events (created_at) WHERE pruned_at IS NULL",
        "CREATE INDEX webhook_attempts_to_prune ON webhook_attempts (attempted_at) WHERE response IS NOT NULL",
        "CREATE INDEX webhook_messages_failed ON webhook_messages (endpoint_id) WHERE status = 'failed'",
        "CREATE INDEX refunds_company ON refunds (company_id, id)",
        "CREATE INDEX users_staff ON users (id) WHERE role = 'staff'",
        "CREATE INDEX users_staff_email ON users (email) WHERE role = 'staff'",
    )


@migrations()
def m025_counts(db: Database) -> None:
    """How many companies there are, kept by triggers: the staff home shows it on every list page, and
    `count(*)` reads an index of 100,000 entries each time (a fifth of a list page's CPU at that size)."""
    _run(
        db,
        """CREATE TABLE counts (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""",
        "INSERT INTO counts (name, value) SELECT 'companies', count(*) FROM companies",
        """CREATE TRIGGER companies_counted_in AFTER INSERT ON companies
           BEGIN UPDATE counts SET value = value + 1 WHERE name = 'companies'; END""",
        """CREATE TRIGGER companies_counted_out AFTER DELETE ON companies
           BEGIN UPDATE counts SET value = value - 1 WHERE name = 'companies'; END""",
    )


@migrations()
def m026_company_indexes(db: Database) -> None:
    """Indexes for reads every customer page makes and that read whole tables: a company's credit notes
    (the dashboard and the staff customer page list them under their invoices) and the open anomalies,
    newest first, everywhere and for one company (resolved ones pile up over the years)."""
    _run(
        db,
        "CREATE INDEX credit_notes_company ON credit_notes (company_id, id)",
        "CREATE INDEX anomalies_open_newest ON anomalies (id) WHERE resolved_at IS NULL",
        "CREATE INDEX anomalies_company_open ON anomalies (company_id, id) WHERE resolved_at IS NULL",
    )
