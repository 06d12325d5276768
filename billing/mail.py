"""The email outbox: enqueue in the caller's transaction, render and send with retries.

An email is a row written in the same transaction as the change that causes it,
keyed by a dedupe key, so a rolled-back change sends nothing and a repeated one
sends once. The row holds a JSON snapshot of the template's context taken in
that transaction; the sender renders it (HTML and text, templates/emails/) when
it sends, so a payment callback never waits for Jinja. The sender claims due
rows with a lease (billing/notify/outbox.py, shared with the webhooks: two senders
never send the same row at once), sends over
SMTP or into the development capture directory, and on failure retries with
growing back-off until `MAIL_MAX_ATTEMPTS`, after which the row is marked
failed for staff to see. Each row's outcome is written right after its send:
one message that fails never holds up the rest, and a crash re-sends at most
the message in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.headerregistry
import email.policy
import functools
import hashlib
import json
import logging
import re
import smtplib
import ssl
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, format_datetime, parseaddr
from pathlib import Path
from typing import NamedTuple

import anyio.to_thread
import jinja2
from email_validator import EmailNotValidError, validate_email
from sqlite_utils import Database

from billing import clock, i18n, plans
from billing.db import on_commit, one, rows, write
from billing.notify import wording
from billing.notify.outbox import Outbox
from billing.settings import Settings

log = logging.getLogger("billing.mail")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LEASE = timedelta(minutes=5)
BATCH = 50
OUTBOX = Outbox("outbox", LEASE, "outbox_due")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from billing.web.templating import register_filters  # one set of filters for pages and mail

    register_filters(env)
    wording.install(env)  # "A.Ş." never "A.Ş..": every translated sentence joins its periods
    env.globals["failure_reason"] = _failure_reason
    return env


def _failure_reason(code) -> str | None:
    """Our own sentence, in the email's language, for PayTR's failed_reason_code (PayTR's raw
    words stay a labelled detail, never part of our sentence)."""
    from billing import payments

    explain = getattr(payments, "failure_reason", None)  # billing/payments.py, the customer pages' side
    return str(explain(code)) if explain and code else None


_environment: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    global _environment
    if _environment is None:
        _environment = _env()
    return _environment


def render(template: str, settings: Settings, context: dict, locale: str | None = None,
           to: str | None = None) -> tuple[str, str, str]:
    """-> (subject, text, html) in `locale` (default: DEFAULT_LOCALE). The text template sets `subject`.
    `greeting` is who "Hello …," names (wording.greeting_name): the `name` the context carries (the
    recipient's, added when queued), else its `company`, else the address `to`."""
    env = environment()
    locale = i18n.normalize(locale) or settings.default_locale
    # A plan stored in the context comes back as a Plan, so it is named in the reader's language.
    context = {key: plans.from_context(value) if isinstance(value, dict) and value.get("__plan__") else value
               for key, value in context.items()}
    ctx = {"app_name": settings.app_name, "base_url": settings.base_url, "tz": settings.timezone,
           "locale": locale, **context, "greeting": wording.greeting_name(context, to)}
    with i18n.using(locale):
        text_module = env.get_template(f"emails/{template}.txt").make_module(ctx)
        subject = str(getattr(text_module, "subject", "")).strip()
        if not subject:
            raise ValueError(f"emails/{template}.txt must set a subject")
        html = env.get_template(f"emails/{template}.html").render(ctx, subject=subject)
    return subject, str(text_module).strip() + "\n", html


def _json_default(value):
    if isinstance(value, datetime):
        return clock.iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "to_context"):
        return value.to_context()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot put {type(value).__name__} in an email context")


def enqueue(
    db: Database,
    now: datetime,
    settings: Settings | None,
    *,
    template: str,
    to: str,
    dedupe_key: str,
    context: dict,
    company_id: int | None = None,
    locale: str | None = None,
) -> bool:
    """Queue an email in the current transaction. False if the key was already used.

    `context` is stored as a JSON snapshot (datetimes as UTC strings, dataclasses
    as dicts): the email says what was true when the change committed. Settings are
    not needed to queue (the sender renders with its own, `base_url` included), so a
    domain function without them, like `usage.record`, may pass None.
    """
    if locale is None or "name" not in context:
        # The recipient's own language when they have an account; else the sender's choice or the default.
        # Their name too, for the greeting, when the caller did not give one (a receipt, a refund).
        locale, context = for_reader(db, to, context, locale)
    cursor = db.conn.execute(
        """INSERT INTO outbox (dedupe_key, company_id, template, to_addr, context, next_attempt_at, created_at,
                               locale)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (dedupe_key) DO NOTHING""",
        [dedupe_key, company_id, template, to, json.dumps(context, default=_json_default, ensure_ascii=False),
         clock.iso(now), clock.iso(now), i18n.normalize(locale)],
    )
    if cursor.rowcount:
        store = getattr(db, "store", None)
        if store is not None:
            on_commit(db, store.wake_mailer)
    return bool(cursor.rowcount)


def for_reader(db: Database, to: str, context: dict, locale: str | None = None) -> tuple[str | None, dict]:
    """-> (locale, context) for an email to `to`: the recipient's language when they have an account and
    none was chosen, and their name in the context for the greeting when the caller gave none. The
    outbox and the staff's preview of an email both read through here, so the preview greets alike."""
    known = one(db, "SELECT locale, name FROM users WHERE email = ?", [to])
    if locale is None:
        locale = known["locale"] if known else None
    if known and known["name"] and not context.get("name"):
        context = {**context, "name": known["name"]}
    return locale, context


def rendered(row: dict, settings: Settings) -> dict:
    """The row with subject and bodies, rendering them from its context if not yet done. A pruned
    row is returned as it is (subject kept, bodies gone): its context went with them."""
    if row.get("body_html") is None and not row.get("pruned_at"):
        subject, text, html = render(row["template"], settings, json.loads(row["context"] or "{}"), row.get("locale"),
                                     row.get("to_addr"))
        row = {**row, "subject": subject, "body_text": text, "body_html": html}
    return row


def alert_staff(db: Database, now: datetime, settings: Settings, *, dedupe_key: str, title: str,
                body: str, company_id: int | None = None) -> None:
    """Email the operator's staff about something that needs a human (an anomaly). Titles and bodies
    are written in English by their callers: staff read the default language, DEFAULT_LOCALE."""
    recipients = [settings.staff_alert_email] if settings.staff_alert_email else [
        r["email"] for r in rows(db, "SELECT email FROM users WHERE role = 'staff' AND deactivated_at IS NULL ORDER BY id")
    ]
    for address in recipients:
        enqueue(db, now, settings, template="staff_alert", to=address,
                dedupe_key=f"{dedupe_key}:{address}", company_id=company_id, locale=settings.default_locale,
                context={"title": title, "body": body})


# --- retention ---------------------------------------------------------------

PRUNE_BATCH = 2000  # rows per transaction: the write lock is held for milliseconds, callbacks never wait long


def prune_bodies(db: Database, now: datetime, retention_days: int, *, batch: int = PRUNE_BATCH,
                 max_batches: int | None = 1) -> int:
    """Drop the rendered bodies and context of emails sent more than `retention_days` ago; keep what an
    audit needs (recipient, subject, template, dedupe key, status, attempts, times, company, language; the
    Message-ID is made from the id and dedupe key, so it stays too) and mark the row `pruned_at`. Pending
    and failed rows are never touched: they may still be sent. At most `max_batches` transactions of
    `batch` rows (None: until done). -> rows pruned. The partial index outbox_to_prune holds only sent,
    unpruned rows, so a tick with nothing old enough reads one index entry."""
    cutoff = clock.iso(now - timedelta(days=retention_days))
    pruned = batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        with write(db):
            # Deleted and written back without the bodies, not UPDATEd: an update leaves each old row
            # alone in a mostly empty page that new emails (appended at the end) never reuse, while a
            # delete merges the emptied pages and frees the rest to SQLite's free list, where new emails
            # go. So a retained outbox stops growing the file (measured: README, "Emails are kept").
            # Nothing references outbox rows, and the row keeps its id, so its Message-ID is unchanged.
            kept = db.conn.execute(
                """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = 'sent' AND pruned_at IS NULL
                                                   AND sent_at < ? ORDER BY sent_at LIMIT ?) RETURNING *""",
                [cutoff, batch])
            columns = [c[0] for c in kept.description]
            pruned_rows = [{**dict(zip(columns, row)), "body_text": None, "body_html": None, "context": "{}",
                            "pruned_at": clock.iso(now)} for row in kept.fetchall()]
            if pruned_rows:
                db.conn.executemany(f"INSERT INTO outbox ({', '.join(columns)}) VALUES "
                                    f"({', '.join(':' + c for c in columns)})", pruned_rows)
            done = len(pruned_rows)
        pruned += done
        if done < batch:
            break
    if pruned:
        log.info("pruned the bodies of %s emails sent before %s", pruned, cutoff)
    return pruned


def for_company(db: Database, company_id: int, outbox_id: int) -> dict | None:
    """One of a company's emails as its page shows it: what is kept for ever, and the text body while it is."""
    return one(db, """SELECT id, company_id, template, to_addr, subject, status, attempts, created_at, sent_at,
                             pruned_at, body_text FROM outbox WHERE id = ? AND company_id = ?""", [outbox_id, company_id])


def prune_expired(db: Database, now: datetime, settings: Settings) -> int:
    """The tick's share of retention: one batch of emails and one of webhook payloads (a backlog after an
    upgrade goes at PRUNE_BATCH rows a tick, without holding the write lock). Never raises: a failure here
    must not stop the rest of the tick. -> rows pruned."""
    from billing.notify import webhooks  # the channels sit beside each other; imported here to avoid a cycle

    try:
        days = settings.mail_body_retention_days
        return prune_bodies(db, now, days) + sum(webhooks.prune_payloads(db, now, days).values())
    except Exception:
        log.exception("pruning old email and webhook bodies failed; the next tick tries again")
        return 0


# --- sending ---------------------------------------------------------------


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes after each failed try, at most an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def claim(db: Database, now: datetime, limit: int = BATCH) -> list[dict]:
    """Lease due rows to this sender; a row leased elsewhere is skipped."""
    return OUTBOX.claim(db, now, limit)


def record_sent(db: Database, now: datetime, row: dict) -> None:
    """Written as soon as the server has taken the message, before the next is sent: a crash
    later in the batch cannot send this one again (at most the one in flight goes twice)."""
    with write(db):
        OUTBOX.sent(db, now, row["id"], subject=row["subject"], body_text=row["body_text"],
                    body_html=row["body_html"])


def record_failed(db: Database, now: datetime, failed: list[dict], error: str, max_attempts: int) -> int:
    """These rows back off and are tried again, until `max_attempts`. -> how many failed for good."""
    final_count = 0
    with write(db):
        for row in failed:
            final = row["attempts"] >= max_attempts
            final_count += final
            OUTBOX.failed(db, row["id"], error, next_at=now + backoff(row["attempts"]), final=final)
    for row in failed:
        if row["attempts"] >= max_attempts:
            log.error("email %s to %s failed for good after %s tries: %s", row["id"], row["to_addr"],
                      row["attempts"], error)
        else:
            log.warning("email %s to %s failed (try %s), will retry: %s", row["id"], row["to_addr"],
                        row["attempts"], error)
    return final_count


class Address(NamedTuple):
    address: str  # as the envelope and the header carry it
    domain: str  # ASCII, for the Message-ID
    smtputf8: bool  # only a server offering SMTPUTF8 can take it


# One plain ASCII address: no space or control character, no comma (a second recipient), no
# quotes or brackets. Local names like billing@localhost stay allowed for MAIL_FROM and staff alerts.
_ASCII_ADDRESS = re.compile(r'[^\x00-\x20\x7f@,;:<>()\[\]"\\]+@[^\x00-\x20\x7f@,;:<>()\[\]"\\]+')


def wire_address(address: str) -> Address:
    """How an address travels. An internationalised domain (örnek.com.tr) goes as its IDNA
    form (xn--rnek-4qa.com.tr), which any server takes; only a part before the @ that is not
    ASCII needs SMTPUTF8. ValueError for anything that is not exactly one address."""
    if address.isascii():
        if not _ASCII_ADDRESS.fullmatch(address):
            raise ValueError(f"{address!r} is not a single plain email address")
        return Address(address, address.rpartition("@")[2], False)
    try:
        parsed = validate_email(address, check_deliverability=False, allow_smtputf8=True,
                                globally_deliverable=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not a valid email address: {exc}") from None
    if parsed.ascii_email:
        return Address(parsed.ascii_email, parsed.ascii_domain, False)
    return Address(parsed.normalized, parsed.ascii_domain, True)


@functools.lru_cache(maxsize=8)
def _sender(mail_from: str) -> tuple[str, Address]:
    name, address = parseaddr(mail_from)
    try:
        return name, wire_address(address)
    except ValueError as exc:
        raise ValueError(f"MAIL_FROM: {exc}") from None


def build_message(row: dict, settings: Settings) -> MIMEMultipart:
    """multipart/alternative: the text first, the HTML preferred by clients that can show it.
    Built with the classic email.mime classes: the modern EmailMessage API parses every
    header it sets and costs several times more per email in a batch of a thousand. Only an
    address that needs SMTPUTF8 takes that path, since its headers must be written as UTF-8
    (RFC 6532), which the classic policy cannot do."""
    name, sender = _sender(settings.mail_from)
    to = wire_address(row["to_addr"])
    if sender.smtputf8 or to.smtputf8:
        msg = MIMEMultipart("alternative", policy=email.policy.SMTPUTF8)
        msg["From"] = str(email.headerregistry.Address(display_name=name, addr_spec=sender.address))
        msg["Subject"] = row["subject"]
    else:
        msg = MIMEMultipart("alternative")
        msg["From"] = formataddr((str(Header(name, "utf-8")) if name else "", sender.address))
        msg["Subject"] = Header(row["subject"], "utf-8")
    msg["To"] = to.address
    msg["Date"] = format_datetime(clock.parse(row["created_at"]))
    digest = hashlib.sha256(row["dedupe_key"].encode()).hexdigest()[:16]
    # Stable per row, so a resend after a crash is recognisable as the same message.
    msg["Message-ID"] = f"<{row['id']}.{digest}@{sender.domain}>"
    msg["X-Billing-Template"] = row["template"]
    msg["Content-Language"] = i18n.normalize(row.get("locale")) or settings.default_locale
    body = msg
    if row.get("attachments"):
        # multipart/mixed: the text-or-HTML alternative first, then each file.
        body = MIMEMultipart("alternative", policy=msg.policy)
        msg.set_type("multipart/mixed")
        msg.attach(body)
    body.attach(MIMEText(row["body_text"], "plain", "utf-8"))
    body.attach(MIMEText(row["body_html"], "html", "utf-8"))
    for name, content, subtype in row.get("attachments") or ():
        part = MIMEApplication(content, subtype)
        part.add_header("Content-Disposition", "attachment", filename=name)
        msg.attach(part)
    return msg


# Outbox context keys naming a document the sender attaches as a PDF: the key, and how to make it
# (db, settings, number, locale) -> bytes or None. Credit notes add theirs the same way.
def _invoice_attachment(db: Database, settings: Settings, number: str, locale: str) -> tuple[str, bytes] | None:
    from billing.documents import invoice_pdf  # WeasyPrint loads only when a document is attached

    document = invoice_pdf.invoice_pdf(db, settings, number, locale)
    return None if document is None else (invoice_pdf.filename(number), document)


def _credit_note_attachment(db: Database, settings: Settings, number: str, locale: str) -> tuple[str, bytes] | None:
    from billing.documents import credit_note_pdf

    document = credit_note_pdf.credit_note_pdf(db, settings, number, locale)
    return None if document is None else (credit_note_pdf.filename(number), document)


ATTACHMENTS = {"attach_invoice": _invoice_attachment, "credit_note": _credit_note_attachment}


def with_attachments(db: Database, row: dict, settings: Settings) -> dict:
    """The row with `attachments` [(filename, bytes, subtype)], rendered now, in the email's language,
    for each document its context names. A document that is missing raises: the email waits
    (and is retried) instead of leaving without what it promises."""
    context = row["context"] or ""
    if not any(f'"{key}"' in context for key in ATTACHMENTS):  # most emails: no JSON parsed again
        return row
    values = json.loads(context)
    locale = i18n.normalize(row.get("locale")) or settings.default_locale
    attachments = []
    for key, make in ATTACHMENTS.items():
        if values.get(key):
            made = make(db, settings, values[key], locale)
            if made is None:
                raise LookupError(f"{key}: no document {values[key]!r} to attach")
            attachments.append((*made, "pdf"))
    return {**row, "attachments": attachments}


class CaptureTransport:
    """Development: each email becomes an .eml file in data/mail/, readable at /dev/mail."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def __enter__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return False

    def send(self, msg: MIMEMultipart, row: dict) -> None:
        path = self.directory / f"{row['id']:08d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msg.as_bytes())
        tmp.replace(path)


class SmtpTransport:
    """A real mail server; one connection per batch, always with a timeout."""

    def __init__(self, settings: Settings, timeout: float = 15.0):
        self.settings = settings
        self.timeout = timeout
        self.conn: smtplib.SMTP | None = None

    def __enter__(self):
        self._connect()
        return self

    def _connect(self) -> None:
        s = self.settings
        if s.smtp_tls == "ssl":
            self.conn = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=self.timeout,
                                         context=ssl.create_default_context())
        else:
            self.conn = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout)
            if s.smtp_tls == "starttls":
                self.conn.starttls(context=ssl.create_default_context())
        if s.smtp_username:
            self.conn.login(s.smtp_username, str(s.smtp_password))

    def __exit__(self, *exc):
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                self.conn.close()
            self.conn = None
        return False

    def send(self, msg: MIMEMultipart, row: dict) -> None:
        if self.conn is None:
            self._connect()  # the previous message left the session unusable
        try:
            self.conn.send_message(msg)
        except smtplib.SMTPServerDisconnected:
            raise
        except Exception:
            # A failure partway (a TypeError after MAIL FROM, say) leaves the server inside a
            # mail transaction: reset it, or reconnect, so the next message starts clean.
            try:
                self.conn.rset()
            except (smtplib.SMTPException, OSError):
                self.conn.close()
                self.conn = None
            raise


def transport_for(settings: Settings):
    if settings.smtp_host:
        return SmtpTransport(settings)
    return CaptureTransport(settings.mail_capture_dir)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _connection_lost(exc: Exception) -> bool:
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return True
    # Every SMTPException is an OSError too, but a refused message leaves the connection usable.
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def deliver_due(db: Database, now: datetime, settings: Settings, transport=None,
                max_batches: int | None = None) -> dict:
    """Send what is due (at most `max_batches` claims of BATCH). Never raises for mail trouble: it
    is recorded and retried.

    Each message's outcome is written as soon as it is known. A message that cannot be
    rendered, addressed or sent (whatever the exception) fails alone and the rest go; a
    crash re-sends at most the message in flight; a lost connection leaves the rest of the
    batch for the retry instead of trying each message against a dead server.
    """
    counts = {"sent": 0, "retrying": 0, "failed": 0}

    def failed(failed_rows: list[dict], error: str) -> None:
        final = record_failed(db, now, failed_rows, error, settings.mail_max_attempts)
        counts["failed"] += final
        counts["retrying"] += len(failed_rows) - final

    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        batch = claim(db, now)
        if not batch:
            return counts
        ready: list[tuple[dict, MIMEMultipart]] = []
        for row in batch:
            try:
                row = with_attachments(db, rendered(row, settings), settings)
            except Exception as exc:  # a template bug: retried, so a fix and restart still sends it
                failed([row], f"could not render: {_describe(exc)}")
                continue
            try:
                ready.append((row, build_message(row, settings)))
            except Exception as exc:  # a bad address: this one waits, the others go
                failed([row], _describe(exc))
        if not ready:
            continue
        transport_ = transport if transport is not None else transport_for(settings)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(transport_)
            except Exception as exc:  # the server is down; don't spin through the rest now
                failed([row for row, _ in ready], _describe(exc))
                return counts
            for index, (row, msg) in enumerate(ready):
                try:
                    transport_.send(msg, row)
                except Exception as exc:
                    if _connection_lost(exc):
                        failed([r for r, _ in ready[index:]], _describe(exc))
                        return counts
                    failed([row], _describe(exc))  # this message refused, the next may pass
                else:
                    record_sent(db, now, row)
                    counts["sent"] += 1
    return counts  # the rest is left for the sender (or the next call)


def retry_now(db: Database, now: datetime) -> int:
    """Make every pending email due now (its back-off is cut short)."""
    return OUTBOX.retry_now(db, now)


def next_due(db: Database) -> datetime | None:
    """When the next pending email may be sent: its back-off over and no one else's lease on it."""
    return OUTBOX.next_due(db)


def leased(db: Database, now: datetime) -> int:
    """Pending emails another sender is working on right now (their lease has not run out)."""
    return OUTBOX.leased(db, now)


class Sender:
    """Drains the outbox in the background of the web process.

    Woken right after a commit that queued an email (so a reset link leaves
    within seconds), and otherwise when the next retry is due, at least every
    minute. The scheduler's tick also drains, catching anything missed.
    """

    IDLE_SECONDS = 60.0
    # While PayTR callbacks are streaming in, they get the CPU; mail waits at most this long.
    YIELD_MAX_SECONDS = 30.0

    def __init__(self, store, settings: Settings):
        self.store = store
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.busy = lambda: False  # set by the app: are payment callbacks arriving right now?

    def start(self, clock) -> None:
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.stopping = False
        self.store.wake_mailer = self.wake
        self.task = asyncio.create_task(self._run(), name="mail-sender")

    def wake(self) -> None:
        """Thread-safe: called by whichever thread committed the email."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(self.event.set)

    def drain_once(self) -> datetime | None:
        # One batch per turn: between batches the sender yields to callbacks and can be stopped
        # (a batch of receipts renders up to 50 invoice PDFs); what is left is due at once.
        deliver_due(self.store.db(), self.clock.now(), self.settings, max_batches=1)
        return next_due(self.store.db())

    async def _run(self) -> None:
        while not self.stopping:
            self.event.clear()
            await self._yield_to_callbacks()
            due = None
            try:
                due = await anyio.to_thread.run_sync(self.drain_once)
            except Exception:  # never let the sender die; the next wake-up tries again
                log.exception("mail sender failed; will try again")
            if self.stopping:
                break
            timeout = self.IDLE_SECONDS
            if due is not None:
                timeout = max(0.05, min(timeout, (due - self.clock.now()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)

    async def _yield_to_callbacks(self) -> None:
        waited = time.monotonic()
        while self.busy() and not self.stopping and time.monotonic() - waited < self.YIELD_MAX_SECONDS:
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        """Let a send in progress finish (its thread holds a connection), then end."""
        self.store.wake_mailer = lambda: None
        self.stopping = True
        if self.task is not None:
            self.event.set()
            await self.task
            self.task = None


# --- the development capture, read back for /dev/mail -------------------------


def captured(directory: Path) -> list[dict]:
    from email import policy
    from email.parser import BytesParser

    messages = []
    for path in sorted(Path(directory).glob("*.eml"), reverse=True):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        messages.append({
            "id": path.stem,
            "to": msg["To"],
            "subject": msg["Subject"],
            "date": msg["Date"],
            "template": msg["X-Billing-Template"],
            "text": text.get_content() if text else "",
            "html": html.get_content() if html else "",
        })
    return messages
