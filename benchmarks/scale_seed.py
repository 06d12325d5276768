"""The scale benchmark's database: console_seed's two years of history, plus what it leaves out.

    .venv/bin/python benchmarks/scale_seed.py [--companies 100000] [--data DIR] [--rebuild]

benchmarks/console_seed.py simulates 100,000 companies over two years (mixed states, payments,
invoices with gapless numbers, refunds with credit notes, events) and copies that history in bulk.
This module reuses it whole and adds, at their historical times, what issue 13 says weighs on a
database of that size:

- the outbox: every email those changes queued (a welcome per sign-up, a receipt or a failure
  notice per payment, a refund email per refund), sent, with the context snapshot, subject and
  both bodies as the sender stores them. Bodies are rendered by the app's own templates
  (billing/mail.render) once per template and language with real values, then the company,
  recipient and document numbers are put into each copy: same size and shape as the real ones,
  without paying ~2 ms of Jinja per email for 800,000 emails. A few are left failed, as a live
  system has, so the console's failed list has something to show;
- webhook deliveries: one endpoint (all event types), and for each payment the event the app
  writes (billing/notify/webhooks.py: payment.succeeded + invoice.issued, payment.failed) with
  the body billing/snapshots.py makes, each delivered once;
- usage as the host last reported it (workspaces, storage);
- the company with the longest history is named in app_state (`bench_scale_heavy`): its owner
  is who the customer pages are measured as.

Cached under data/bench/scale/: the key holds SEED_VERSION, the company count and a hash of the
migration names, so a new migration rebuilds it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import secrets
import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import console_seed  # noqa: E402
from benchmarks.console_seed import NOW, iso  # noqa: E402
from billing import clock, mail, migrations, plans, snapshots  # noqa: E402
from billing.db import write  # noqa: E402

SEED_VERSION = "scale-seed-1"
DEFAULT_DIR = ROOT / "data" / "bench" / "scale"
MARKER_KEY = "bench_scale_seed"
CHUNK = 5000
FAILED_SHARE = 0.002  # emails that never went out (bounced address, SMTP refusal)
WEBHOOK_URL = "https://hooks.example.com/paytr-billing"
# Placeholders rendered into the pooled bodies, replaced per email (plain words: HTML escaping keeps them).
P_COMPANY, P_NAME, P_NUMBER, P_EMAIL = "QQCOMPANYQQ", "QQNAMEQQ", "QQNUMBERQQ", "QQEMAILQQ"


def schema_key() -> str:
    return hashlib.sha256(",".join(migrations.names()).encode()).hexdigest()[:12]


def marker(companies: int) -> str:
    return f"{SEED_VERSION}:{companies}:{schema_key()}"


class Bodies:
    """Subject, text and HTML per (template, locale, variant), rendered once by the app's templates."""

    def __init__(self, settings, db):
        self.settings = settings
        self.db = db
        self.cache: dict[tuple, tuple[str, str, str]] = {}

    def get(self, template: str, locale: str, variant, context: dict) -> tuple[str, str, str]:
        key = (template, locale, variant)
        if key not in self.cache:
            self.cache[key] = mail.render(template, self.settings, context, locale)
        return self.cache[key]


def fill(parts: tuple[str, str, str], values: dict[str, str]) -> tuple[str, str, str]:
    out = []
    for part in parts:
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
        out.append(part)
    return tuple(out)


def write_extra(db, world, settings, say) -> None:
    conn = db.conn
    rng = random.Random(13)
    bodies = Bodies(settings, db)
    plan_of = {code: plans.get(db, code) for (code,) in conn.execute("SELECT code FROM plans")}
    names = {c[0]: c[1] for c in world.companies}
    owners = {u[1]: u for u in world.users if u[4] == "owner"}
    locales = {cid: ("tr" if rng.random() < 0.7 else "en") for cid in names}
    with write(db):
        conn.executemany("UPDATE users SET locale = ? WHERE company_id = ?", [(loc, cid) for cid, loc in locales.items()])

    outbox: list[tuple] = []

    def queue(at: str, cid: int, template: str, to: str, key: str, context: dict, variant, values: dict) -> None:
        locale = locales[cid]
        placeholder_ctx = {**context, "company": P_COMPANY, "name": P_NAME}
        if "invoice_number" in context:
            placeholder_ctx["invoice_number"] = P_NUMBER
            placeholder_ctx["invoice_url"] = settings.url(f"/billing/invoices/{P_NUMBER}")
        if "credit_note" in context:
            placeholder_ctx["credit_note"] = P_NUMBER
        subject, text, html = fill(bodies.get(template, locale, variant, placeholder_ctx), values)
        sent_at = clock.parse(at) + timedelta(seconds=rng.randint(2, 90))
        failed = rng.random() < FAILED_SHARE
        outbox.append((key, cid, template, to, json.dumps(context, default=mail._json_default, ensure_ascii=False),
                       subject, text, html, "failed" if failed else "sent", 8 if failed else 1,
                       iso(sent_at), "550 5.1.1 mailbox unavailable" if failed else None, at,
                       None if failed else iso(sent_at), locale))

    for uid, cid, email, name, role, at in world.users:
        if role != "owner":
            continue
        plan = plan_of[world.subscriptions[cid - 1]["plan"]]
        trial_ends = iso(clock.parse(at) + timedelta(days=14))
        context = {"name": name, "company": names[cid], "plan": plan, "trial_days": plan.trial_days,
                   "trial_ends_at": trial_ends, "dashboard_url": settings.url("/billing/"), "set_password_url": None}
        queue(at, cid, "welcome", email, f"welcome:{uid}", context, plan.code,
              {P_COMPANY: names[cid], P_NAME: name})
    for p in world.payments:
        cid, plan = p["company_id"], plan_of[p["plan"]]
        name = owners[cid][3]
        if p["status"] == "succeeded":
            context = {"company": names[cid], "plan_name": plan.name, "amount": p["amount"], "currency": p["currency"],
                       "period_start": p["period_start"], "period_end": p["period_end"],
                       "invoice_number": p["invoice_number"], "tz": "Europe/Istanbul",
                       "renewal": p["kind"] == "renewal", "automatic": p["method"] == "recurring",
                       "previous_plan_name": None, "invoice_url": settings.url(f"/billing/invoices/{p['invoice_number']}"),
                       "attach_invoice": p["invoice_number"], "name": name}
            queue(p["decided_at"], cid, "payment_succeeded", p["email"], f"payment-succeeded:{p['merchant_oid']}",
                  context, (p["plan"], p["kind"], p["method"]),
                  {P_COMPANY: names[cid], P_NAME: name, P_NUMBER: p["invoice_number"]})
        else:
            context = {"company": names[cid], "plan_name": plan.name, "amount": p["amount"], "currency": p["currency"],
                       "reason": p["failed_reason_msg"], "reason_code": p["failed_reason_code"],
                       "retry_url": settings.url(f"/billing/payment/fail?oid={p['merchant_oid']}"), "name": name}
            queue(p["decided_at"], cid, "payment_failed", p["email"], f"payment-failed:{p['merchant_oid']}", context,
                  (p["plan"], p["failed_reason_code"]), {P_COMPANY: names[cid], P_NAME: name})
    for r in world.refunds:
        p = r["payment"]
        cid = p["company_id"]
        context = {"company": names[cid], "amount": r["amount"], "currency": p["currency"], "paid": p["paid_amount"],
                   "paid_at": p["decided_at"], "description": "", "reason": "Müşteri talebi", "tz": "Europe/Istanbul",
                   "credit_note": r["number"], "name": owners[cid][3]}
        queue(iso(r["at"]), cid, "refund_issued", p["email"], f"refund:{r['id']}", context, p["currency"],
              {P_COMPANY: names[cid], P_NAME: owners[cid][3], P_NUMBER: r["number"]})
    outbox.sort(key=lambda row: row[12])
    say(f"  {len(outbox):,} emails ({len(outbox) / len(names):.1f} a company, {len(bodies.cache)} renderings "
        f"reused), writing ...")
    for i in range(0, len(outbox), CHUNK):
        with write(db):
            conn.executemany("""INSERT INTO outbox (dedupe_key, company_id, template, to_addr, context, subject,
                                    body_text, body_html, status, attempts, next_attempt_at, last_error, created_at,
                                    sent_at, locale)
                                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", outbox[i:i + CHUNK])
    del outbox

    # Webhooks: one endpoint taking every type, each payment's events delivered once.
    start = iso(NOW - timedelta(days=console_seed.HISTORY_DAYS + 1))
    with write(db):
        endpoint = conn.execute("""INSERT INTO webhook_endpoints (url, secret, last_attempt_at, last_status,
                                       last_delivered_at, created_at, updated_at)
                                   VALUES (?, ?, ?, 200, ?, ?, ?)""",
                                [WEBHOOK_URL, "whsec_" + secrets.token_hex(24), iso(NOW), iso(NOW), start,
                                 start]).lastrowid
    sequences: dict[int, int] = {}
    events, serial = [], 0
    for p in sorted(world.payments, key=lambda p: p["decided_at"]):
        row = {**p, "test_mode": 0}
        data = snapshots.payment(db, row)
        kinds = [("payment.succeeded", data)] if p["status"] == "succeeded" else [("payment.failed", data)]
        if p["status"] == "succeeded":
            kinds.append(("invoice.issued", {"number": p["invoice_number"], "customer": data["customer"],
                                             "payment": data["id"], "amount": p["amount"], "currency": p["currency"],
                                             "issued_at": p["decided_at"], "period_start": p["period_start"],
                                             "period_end": p["period_end"],
                                             "url": settings.url(f"/billing/invoices/{p['invoice_number']}")}))
        for event_type, body_data in kinds:
            serial += 1
            cid = p["company_id"]
            sequences[cid] = sequences.get(cid, 0) + 1
            public_id = f"evt_{serial:024x}"
            body = json.dumps({"id": public_id, "type": event_type, "created_at": p["decided_at"], "data": body_data,
                               "sequence": sequences[cid]}, ensure_ascii=False, separators=(",", ":"))
            events.append((serial, public_id, event_type, cid, sequences[cid], body, p["decided_at"]))
    say(f"  {len(events):,} webhook events, writing ...")
    for i in range(0, len(events), CHUNK):
        part = events[i:i + CHUNK]
        with write(db):
            conn.executemany("""INSERT INTO webhook_events (id, public_id, type, company_id, sequence, body, created_at)
                                VALUES (?, ?, ?, ?, ?, ?, ?)""", part)
            conn.executemany("""INSERT INTO webhook_messages (event_id, endpoint_id, status, attempts, next_attempt_at,
                                    expires_at, sent_at, created_at) VALUES (?, ?, 'sent', 1, ?, ?, ?, ?)""",
                             [(e[0], endpoint, e[6], iso(clock.parse(e[6]) + timedelta(days=3)), e[6], e[6])
                              for e in part])
    with write(db):
        conn.executemany("INSERT INTO webhook_customers (company_id, sequence) VALUES (?, ?)", list(sequences.items()))
        # Usage as the host last reported it.
        conn.executemany("""UPDATE companies SET usage_workspaces = ?, usage_storage_bytes = ?, usage_reported_at = ?
                            WHERE id = ?""",
                         [(rng.randint(1, 40), rng.randint(0, 60 * 2**30), iso(NOW - timedelta(hours=rng.randint(1, 48))),
                           cid) for cid in names])
        counts: dict[int, int] = {}
        for p in world.payments:
            if p["status"] == "succeeded" and p["method"] in ("recurring", "direct") and p["plan"] != "team-yearly":
                counts[p["company_id"]] = counts.get(p["company_id"], 0) + 1
        heavy = max(counts, key=lambda cid: (counts[cid], -cid)) if counts else 1
        conn.execute("INSERT OR REPLACE INTO app_state (key, value) VALUES ('bench_scale_heavy', ?)", [str(heavy)])
    say(f"  company {heavy} carries the longest history ({counts.get(heavy, 0)} monthly card payments)")


def build(data_dir: Path = DEFAULT_DIR, companies: int = 100_000, rebuild: bool = False, quiet: bool = False) -> Path:
    return console_seed.build(data_dir, companies, rebuild, quiet, marker_key=MARKER_KEY, marker=marker(companies),
                              extra=write_extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    build(args.data, args.companies, args.rebuild)


if __name__ == "__main__":
    main()
