"""A console-sized database: 100,000 companies with two years of history, by bulk SQL.

    .venv/bin/python benchmarks/console_seed.py [--companies 100000] [--data DIR] [--fresh]

Used by benchmarks/console.py (and the revenue metrics' own checks): the history the app itself
would have written, copied in bulk rather than driven through the web (which would take hours).
Each company is simulated month by month from its sign-up (spread over the two years before
NOW): a 14-day trial, then either an ended trial, or a subscription that renews each period
(monthly, or yearly on the yearly plan), whose charges sometimes fail (past due, recovered by a
retry or canceled), that churns at about 2.5 % a period, sometimes moves up a plan, and now and
then gets a catalog price applied. It writes, at their historical times:

- companies (owner user each, some with a member; VKNs; a saved card with an expiry for those who
  renew by card), the subscription as it stands at NOW (price, currency; MRR and the period end
  kept by m021's triggers; the search index by its triggers, through fold());
- payments (subscribe / renewal / upgrade; succeeded, failed with PayTR reason codes), an invoice
  with gapless yearly numbers (in time order) and its line for each success, refunds for about
  1.5 % of them with gapless credit notes;
- the events the app records for those changes, with the data billing/subscriptions.py
  `transition` writes: company.registered; subscription.<status> {previous, previous_plan when the
  plan changed, plan, price, currency, current_period_start/end, ...}; payment.succeeded
  {merchant_oid, amount, paid, invoice}; payment.failed {merchant_oid, reason_code};
  subscription.price_changed {plan, previous_price, price, currency}; refund.succeeded.

The outbox is left empty: what the emails cost is issue 13's scale benchmark.
"""

from __future__ import annotations

import argparse
import calendar
import json
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import clock, credit_notes, migrations, money, settings as settings_module  # noqa: E402
from billing.db import Store, write  # noqa: E402

NOW = clock.parse("2026-11-27T09:00:00Z")
HISTORY_DAYS = 730
SEED_VERSION = "console-seed-1"
DEFAULT_DIR = ROOT / "data" / "bench" / "console"
VAT = Decimal("20")
CHUNK = 5000

# code, name_en, name_tr, price, currency, interval, share of sign-ups
EXTRA_PLANS = (("team-yearly", "Team yearly", "Team yıllık", 99000, "USD", "year"),
               ("baslangic-try", "Başlangıç (TL)", "Başlangıç (TL)", 99900, "TRY", "month"))
PLAN_SHARES = (("starter", 0.40), ("team", 0.28), ("enterprise", 0.08), ("team-yearly", 0.09),
               ("baslangic-try", 0.15))
REASONS = {"0": "Kartın bakiyesi yetersiz", "2": "3D doğrulama başarısız", "3": "Güvenlik kontrolü",
           "9": "Kart bu işlem için kullanılamaz", "10": "3D Secure gerekli"}

SURNAMES = ("Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Yıldırım", "Öztürk", "Aydın", "Özdemir",
            "Arslan", "Doğan", "Kılıç", "Aslan", "Çetin", "Kara", "Koç", "Kurt", "Özkan", "Şimşek", "Polat",
            "Öz", "Korkmaz", "Karakaya", "Ünal", "Işık", "Güneş", "Bulut", "Erdoğan", "Çakır", "Ağaoğlu", "Tekin")
SECTORS = ("Yazılım", "Lojistik", "Danışmanlık", "Tekstil", "Gıda", "İnşaat", "Turizm", "Medya", "Enerji",
           "Otomotiv", "Mimarlık", "Eğitim", "Sağlık", "Tarım", "Mobilya", "Kozmetik", "Bilişim", "Reklam")
SUFFIXES = ("A.Ş.", "Ltd. Şti.", "Ticaret A.Ş.", "Sanayi ve Ticaret Ltd. Şti.", "ŞİRKETİ", "Hizmetleri")
FIRST = ("ayse", "mehmet", "fatma", "mustafa", "emine", "ahmet", "hatice", "ali", "zeynep", "huseyin", "elif",
         "ibrahim", "merve", "can", "selin", "emre", "deniz", "burak", "irem", "ozan")
DOMAINS = ("example.com", "example.com.tr", "firma.example", "posta.example")


def add_months(at: datetime, months: int, anchor_day: int) -> datetime:
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    return at.replace(year=year, month=month, day=min(anchor_day, calendar.monthrange(year, month)[1]))


@dataclass
class World:
    """Everything generated before it is written: ids are assigned here, numbers after sorting."""
    companies: list = field(default_factory=list)
    users: list = field(default_factory=list)
    subscriptions: list = field(default_factory=list)
    payments: list = field(default_factory=list)  # dicts
    refunds: list = field(default_factory=list)
    events: list = field(default_factory=list)  # (created_at, company_id, actor, kind, message, data dict)


def iso(at: datetime) -> str:
    return clock.iso(at)


def simulate(count: int, rng: random.Random, prices: dict) -> World:
    world = World()
    start = NOW - timedelta(days=HISTORY_DAYS)
    signups = sorted(start + timedelta(seconds=rng.random() * HISTORY_DAYS * 86400) for _ in range(count))
    oid_serial = 0
    codes, weights = zip(*PLAN_SHARES)
    for cid, created in enumerate(signups, start=1):
        surname = rng.choice(SURNAMES)
        name = f"{surname} {rng.choice(SECTORS)} {rng.choice(SUFFIXES)}"
        first = rng.choice(FIRST)
        ascii_surname = surname.translate(str.maketrans("ışçöüğİŞÇÖÜĞ", "iscougISCOUG")).lower()
        email = f"{first}.{ascii_surname}{cid}@{rng.choice(DOMAINS)}"
        tax_id = str(1000000000 + cid * 7) if rng.random() < 0.7 else None
        plan = rng.choices(codes, weights)[0]
        price, currency, interval = prices[plan]
        months = 12 if interval == "year" else 1
        by_card = rng.random() < 0.55
        owner_id = len(world.users) + 1
        world.users.append((owner_id, cid, email, f"{first.title()} {surname}", "owner", iso(created)))
        if rng.random() < 0.1:
            world.users.append((len(world.users) + 1, cid, f"uye{cid}@{rng.choice(DOMAINS)}", "Ekip Üyesi", "member",
                                iso(created + timedelta(days=1))))
        card_expires = None
        if by_card:
            expiry = add_months(NOW, rng.randint(-3, 40), 1)
            card_expires = f"{expiry.year:04d}-{expiry.month:02d}"
        trial_end = created + timedelta(days=14)
        events = world.events
        events.append((iso(created), cid, f"user:{owner_id}", "company.registered",
                       f"{first.title()} registered {name}; trial started",
                       {"plan": plan, "trial_ends_at": iso(trial_end)}))
        sub = {"company_id": cid, "plan": plan, "status": "trialing", "trial_ends_at": iso(trial_end),
               "current_period_start": None, "current_period_end": None, "period_anchor_day": None,
               "past_due_since": None, "canceled_at": None, "ended_at": None, "price": price,
               "currency": currency, "created_at": iso(created)}
        paid_count = 0

        def payment(at, kind, status, amount, period_start=None, period_end=None, attempt=None, code=None,
                    method="iframe"):
            nonlocal oid_serial
            oid_serial += 1
            oid = f"PB{cid}T{at:%Y%m%d%H%M%S}{oid_serial:012X}"
            row = {"id": len(world.payments) + 1, "company_id": cid, "merchant_oid": oid, "kind": kind,
                   "method": method, "plan": sub["plan"], "amount": amount, "currency": sub["currency"],
                   "status": status, "base_period_end": sub["current_period_end"] or iso(trial_end),
                   "period_start": iso(period_start) if period_start else None,
                   "period_end": iso(period_end) if period_end else None,
                   "paid_amount": amount if status == "succeeded" else None,
                   "failed_reason_code": code, "failed_reason_msg": REASONS.get(code) if code else None,
                   "user_id": owner_id, "email": email, "created_at": iso(at), "decided_at": iso(at + timedelta(minutes=1)),
                   "attempt": attempt if method == "recurring" else None}
            world.payments.append(row)
            if status == "succeeded":
                events.append((row["decided_at"], cid, "paytr", "payment.succeeded", "Payment received",
                               {"merchant_oid": oid, "amount": amount, "paid": amount, "invoice": row}))
            else:
                events.append((row["decided_at"], cid, "paytr", "payment.failed", f"Payment failed: {REASONS[code]}",
                               {"merchant_oid": oid, "reason_code": code}))
            return row

        def transition(at, status, reason, **changes):
            data = {"previous": sub["status"]}
            if changes.get("plan", sub["plan"]) != sub["plan"]:
                data["previous_plan"] = sub["plan"]
            sub.update(status=status, **changes)
            data.update({k: (iso(v) if isinstance(v, datetime) else v) for k, v in changes.items()})
            events.append((iso(at), cid, "paytr" if status == "active" else "system", f"subscription.{status}",
                           reason, data))

        if trial_end > NOW:
            if rng.random() < 0.3:  # tried to pay during the trial, declined
                payment(created + timedelta(hours=2), "subscribe", "failed", price, code=rng.choice(list(REASONS)))
        elif rng.random() < 0.22:  # the trial ended unpaid
            payment(trial_end - timedelta(hours=5), "subscribe", "failed", price, code=rng.choice(list(REASONS)))
            transition(trial_end, "expired", "trial ended without payment")
        else:
            at, anchor = trial_end, trial_end.day
            first_period = True
            while at <= NOW and paid_count < 24:
                end = add_months(at, months, anchor)
                method = "recurring" if by_card and not first_period else ("direct" if by_card else "iframe")
                kind = "subscribe" if first_period else "renewal"
                if not first_period and rng.random() < 0.025:  # churn: canceled at the period's end
                    transition(at, "canceled", "canceled at period end", canceled_at=at, ended_at=at)
                    break
                if not first_period and rng.random() < 0.02 and sub["plan"] == "starter":  # moved up a plan
                    up_price, up_currency, _ = prices["team"]
                    transition(at, "active", "upgraded to Team", plan="team", price=up_price, currency=up_currency)
                if not first_period and rng.random() < 0.01:  # staff applied a catalog price change
                    new_price = sub["price"] + sub["price"] // 10
                    while not money.splits_exactly(new_price, VAT):  # a price whose invoice shows VAT exactly
                        new_price += 1
                    events.append((iso(at - timedelta(days=30)), cid, "staff:1", "subscription.price_changed",
                                   "New price applied with notice", {"plan": sub["plan"], "previous_price": sub["price"],
                                                                     "price": new_price, "currency": sub["currency"]}))
                    sub["price"] = new_price
                failed_first = rng.random() < 0.07
                if failed_first:
                    payment(at, kind, "failed", sub["price"], attempt=0, code=rng.choice(list(REASONS)), method=method)
                    paid_count += 1
                    if not first_period:
                        transition(at + timedelta(minutes=1), "past_due", "renewal charge failed", past_due_since=at)
                    retry = at + timedelta(days=rng.choice((1, 2, 3, 5)))
                    gives_up = rng.random() < 0.25
                    if retry > NOW or gives_up:
                        if not first_period and retry <= NOW and at + timedelta(days=7) <= NOW:
                            transition(at + timedelta(days=7), "canceled", "grace period ended unpaid",
                                       canceled_at=at + timedelta(days=7), ended_at=at + timedelta(days=7))
                        elif first_period:
                            transition(trial_end + timedelta(days=1), "expired", "trial ended without payment")
                        break
                    pay_at = retry
                else:
                    pay_at = at
                row = payment(pay_at, kind, "succeeded", sub["price"], at, end, attempt=1 if failed_first else 0,
                              method=method)
                paid_count += 1
                transition(pay_at + timedelta(minutes=1), "active", "payment received", plan=sub["plan"],
                           current_period_start=at, current_period_end=end, period_anchor_day=anchor,
                           past_due_since=None, price=sub["price"], currency=sub["currency"])
                if rng.random() < 0.015:  # refunded in part or in full
                    amount = row["amount"] if rng.random() < 0.5 else max(100, row["amount"] // 3)
                    world.refunds.append({"payment": row, "amount": amount,
                                          "at": clock.parse(row["decided_at"]) + timedelta(days=rng.randint(0, 9))})
                first_period = False
                at = end
        world.companies.append((cid, name, "Europe/Istanbul", iso(created), tax_id, card_expires, by_card))
        world.subscriptions.append(sub)
    return world


def number(world: World) -> None:
    """Invoice and credit-note numbers: gapless per (Istanbul) year, in the order they were issued."""
    succeeded = sorted((p for p in world.payments if p["status"] == "succeeded"),
                       key=lambda p: (p["decided_at"], p["id"]))
    counters: dict[int, int] = {}
    for invoice_id, p in enumerate(succeeded, start=1):
        year = (clock.parse(p["decided_at"]) + timedelta(hours=3)).year
        counters[year] = counters.get(year, 0) + 1
        p["invoice_id"], p["invoice_year"], p["invoice_seq"] = invoice_id, year, counters[year]
        p["invoice_number"] = f"INV-{year}-{counters[year]:06d}"
    notes: dict[int, int] = {}
    for refund_id, r in enumerate(sorted(world.refunds, key=lambda r: (r["at"], r["payment"]["id"])), start=1):
        year = (r["at"] + timedelta(hours=3)).year
        notes[year] = notes.get(year, 0) + 1
        r["id"], r["year"], r["seq"] = refund_id, year, notes[year]
        r["number"] = f"CN-{year}-{notes[year]:06d}"


def write_all(db, world: World, settings) -> None:
    conn = db.conn
    seller = (settings.seller_name, settings.seller_address, settings.seller_tax_id, settings.seller_tax_office)
    names = {c[0]: c[1] for c in world.companies}
    owners = {u[1]: u[2] for u in world.users if u[4] == "owner"}

    def chunks(items):
        for i in range(0, len(items), CHUNK):
            yield items[i:i + CHUNK]

    def batch(sql, items):
        for part in chunks(items):
            with write(db):
                conn.executemany(sql, part)

    batch("""INSERT INTO companies (id, name, timezone, created_at, billing_tax_id, card_expires, paytr_utoken,
                                    paytr_ctoken, paytr_card_label)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
          [(cid, name, tz, created, tax, exp, f"ut{cid}" if card else None, f"ct{cid}" if card else None,
            "Visa ending 4358" if card else None) for cid, name, tz, created, tax, exp, card in world.companies])
    batch("""INSERT INTO users (id, company_id, email, name, password_hash, role, created_at, password_changed_at)
             VALUES (?, ?, ?, ?, 'bench-no-login', ?, ?, ?)""",
          [(uid, cid, email, name, role, at, at) for uid, cid, email, name, role, at in world.users])
    batch("""INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, current_period_start,
                 current_period_end, period_anchor_day, past_due_since, canceled_at, ended_at, price, currency,
                 created_at, updated_at)
             VALUES (:company_id, :plan, :status, :trial_ends_at, :current_period_start, :current_period_end,
                     :period_anchor_day, :past_due_since, :canceled_at, :ended_at, :price, :currency, :created_at,
                     :created_at)""",
          [{k: iso(v) if isinstance(v, datetime) else v for k, v in s.items()} for s in world.subscriptions])
    batch("""INSERT INTO payments (id, company_id, merchant_oid, kind, method, plan, amount, currency, test_mode, status,
                 base_period_end, period_start, period_end, paid_amount, failed_reason_code, failed_reason_msg,
                 user_id, email, created_at, updated_at, decided_at, attempt)
             VALUES (:id, :company_id, :merchant_oid, :kind, :method, :plan, :amount, :currency, 0, :status,
                     :base_period_end, :period_start, :period_end, :paid_amount, :failed_reason_code,
                     :failed_reason_msg, :user_id, :email, :created_at, :decided_at, :decided_at, :attempt)""",
          world.payments)
    invoices, lines = [], []
    for p in world.payments:
        if p["status"] != "succeeded":
            continue
        net, vat = money.split_gross(p["amount"], VAT)
        invoices.append((p["invoice_id"], p["invoice_number"], p["invoice_year"], p["invoice_seq"], p["company_id"],
                         p["id"], p["decided_at"], *seller, names[p["company_id"]], p["email"], p["currency"], net,
                         vat, "20", p["amount"], p["period_start"], p["period_end"]))
        lines.append((p["invoice_id"], f"{p['plan']} subscription", 1, p["amount"], p["amount"]))
    batch("""INSERT INTO invoices (id, number, year, sequence, company_id, payment_id, issued_at, seller_name,
                 seller_address, seller_tax_id, seller_tax_office, buyer_name, buyer_email, currency, net, vat,
                 vat_rate, total, period_start, period_end)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", invoices)
    batch("INSERT INTO invoice_lines (invoice_id, description, quantity, unit_amount, amount) VALUES (?, ?, ?, ?, ?)",
          lines)
    for year in sorted({i[2] for i in invoices}):
        with write(db):
            conn.execute("INSERT OR REPLACE INTO invoice_counters (year, last_number) VALUES (?, ?)",
                         [year, max(i[3] for i in invoices if i[2] == year)])
    refunds, notes = [], []
    for r in world.refunds:
        p, at = r["payment"], iso(r["at"])
        refunds.append((r["id"], p["id"], p["company_id"], r["amount"], p["currency"], "Müşteri talebi",
                        f"bench-ref-{r['id']}", f"bench-key-{r['id']}", "succeeded", "staff:1", at, at))
        inv_net, inv_vat = money.split_gross(p["amount"], VAT)
        net, vat = credit_notes.split(r["amount"], VAT, inv_net, inv_vat)  # the app's rule for a partial note
        notes.append((r["number"], r["year"], r["seq"], p["invoice_id"], r["id"], p["company_id"], at, *seller,
                      names[p["company_id"]], p["email"], p["currency"], net, vat, "20", r["amount"],
                      "Müşteri talebi", int(r["amount"] == p["amount"])))
        world.events.append((at, p["company_id"], "staff:1", "refund.succeeded", "Refund made",
                             {"merchant_oid": p["merchant_oid"], "amount": r["amount"], "credit_note": r["number"]}))
    batch("""INSERT INTO refunds (id, payment_id, company_id, amount, currency, reason, reference_no, request_key,
                 status, requested_by, created_at, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", refunds)
    batch("""INSERT INTO credit_notes (number, year, sequence, invoice_id, refund_id, company_id, issued_at, seller_name,
                 seller_address, seller_tax_id, seller_tax_office, buyer_name, buyer_email, currency, net, vat, vat_rate,
                 total, reason, full_credit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", notes)
    for year in sorted({n[1] for n in notes}):
        with write(db):
            conn.execute("INSERT OR REPLACE INTO credit_note_counters (year, last_number) VALUES (?, ?)",
                         [year, max(n[2] for n in notes if n[1] == year)])

    def event_row(event):
        at, cid, actor, kind, message, data = event
        if kind == "payment.succeeded":
            data = {**data, "invoice": data["invoice"]["invoice_number"]}
        return (at, cid, actor, kind, message, json.dumps(data, sort_keys=True))

    world.events.sort(key=lambda e: e[0])
    batch("INSERT INTO events (created_at, company_id, actor, kind, message, data) VALUES (?, ?, ?, ?, ?, ?)",
          [event_row(e) for e in world.events])
    del owners


def build(data_dir: Path, companies: int, fresh: bool = False, quiet: bool = False, *,
          marker_key: str = "bench_console_seed", marker: str | None = None, extra=None) -> Path:
    """The database at `data_dir` (built once; `fresh` rebuilds). Returns its path.

    benchmarks/scale_seed.py builds on this one: its own cache `marker` under its own
    `marker_key`, and `extra(db, world, settings, say)` writing more history (the emails, the
    webhook deliveries) after the rest, before the marker is set."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    settings = settings_module.load({"BILLING_DATA_DIR": str(data_dir), "BASE_URL": "http://bench.local",
                                     "BILLING_SCHEDULER": "0"}, env_file=None)
    path = settings.database_path
    marker = marker or f"{SEED_VERSION}:{companies}"
    if path.exists() and not fresh:
        store = Store(path)
        try:
            row = store.db().conn.execute("SELECT value FROM app_state WHERE key = ?", [marker_key]).fetchone()
        except Exception:
            row = None
        store.close()
        if row and row[0] == marker:
            say(f"database: {path} (cached; --fresh or --rebuild builds it again)")
            return path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    store = Store(path)
    db = store.db()
    with write(db):
        migrations.apply(db)
        for code, name_en, name_tr, price, currency, interval in EXTRA_PLANS:
            db.conn.execute("""INSERT OR IGNORE INTO plans (code, name_en, name_tr, price, currency, interval,
                                   storage_gb, sort_order, created_at, updated_at)
                               VALUES (?, ?, ?, ?, ?, ?, 50, 50, ?, ?)""",
                            [code, name_en, name_tr, price, currency, interval, iso(NOW), iso(NOW)])
    prices = {row[0]: (row[1], row[2], row[3]) for row in
              db.conn.execute("SELECT code, price, currency, interval FROM plans")}
    db.conn.execute("PRAGMA synchronous=OFF")  # a benchmark's scratch database: rebuilt if a crash spoils it
    world = simulate(companies, random.Random(11), prices)
    number(world)
    say(f"simulated {companies:,} companies, {len(world.payments):,} payments, {len(world.events):,} events "
        f"in {time.perf_counter() - started:.0f} s; writing ...")
    write_all(db, world, settings)
    if extra is not None:
        extra(db, world, settings, say)
    with write(db):
        db.conn.execute("INSERT OR REPLACE INTO app_state (key, value) VALUES (?, ?)", [marker_key, marker])
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    say(f"database: {path} built in {time.perf_counter() - started:.0f} s "
        f"({path.stat().st_size / 2**20:.0f} MiB)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    build(args.data, args.companies, args.fresh)


if __name__ == "__main__":
    main()
