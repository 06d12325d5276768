"""Issue 13's scale benchmark: 100,000 companies with two years of history, in one run.

    .venv/bin/python benchmarks/scale.py [--only pages|rss|callbacks|storm] [--rebuild]
                                         [--companies 100000] [--requests 320] [--clients 16]

Builds (once, cached under data/bench/scale/; the key holds the schema's migration names, so a
new migration rebuilds; `--rebuild` forces it) the database of benchmarks/scale_seed.py, then:

- pages: the real server (main.py, uvicorn, LOG_FORMAT=json; pinned to CPU 0, the load on CPU 1
  as in benchmarks/callbacks.py) on that database, driven by 16 keep-alive clients
  (benchmarks/loadgen.py) per page: the customer's dashboard, timeline and an invoice (as the
  owner of the company with the longest history), the entitlements API, the staff home, each staff
  filter and search (name, "ŞİRKETİ" and "şirketi", which must list the same companies, owner
  email, VKN, merchant_oid, invoice number), the staff customer page, /admin/metrics and
  /metrics. SERVER time is each request's `duration_ms` in the app's own access log (from the
  request entering the app to its last byte); the clients' latency, which adds the queue of 16,
  is printed beside it;
- rss: the server's peak resident memory (VmHWM) after 16 clients, half staff and half customer,
  mix every page above (with --only pages it is the peak over the page runs);
- callbacks: PayTR callbacks per second, by benchmarks/callbacks.py's own seeding and load;
- storm: 10,000 saved-card renewals due at one instant, run by the app itself (create_app's
  lifespan: its scheduler, and whatever charging lane it has) against the built-in emulator,
  with trial reminders falling due every half tick through the storm; each reminder's delay is
  when it appeared in the outbox minus when it fell due. If the emulator has an `api_latency`
  fault it is run at 0.3 s (and --latency); otherwise at zero latency, and it says so.

Targets (issue 13): p50 < 50 ms and p99 < 200 ms at 16 concurrent; RSS < 500 MB; callbacks
>= 2,050/s; no reminder delayed by more than one tick interval. Printed PASS/FAIL; nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import callbacks as callbacks_bench, console, loadgen, scale_seed  # noqa: E402
from billing import accounts, clock, settings as settings_module  # noqa: E402
from billing.api import keys as api_keys  # noqa: E402
from billing.db import Store, write  # noqa: E402

P50_MS, P99_MS, RSS_MB, CALLBACKS_PER_S = 50.0, 200.0, 500.0, 2050.0
STAFF_EMAIL, PASSWORD = "bench-admin@example.com", "benchmark staff password"
METRICS_TOKEN = "scale-benchmark-metrics-token-0123456789"
SERVER_CPU, LOAD_CPU = callbacks_bench.SERVER_CPU, callbacks_bench.LOAD_CPU


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def pct(values: list[float], share: float) -> float:
    return console.percentile(values, share) if values else float("nan")


# --- preparing the database ---------------------------------------------------------------------


@dataclasses.dataclass
class Fixture:
    heavy: int
    owner_email: str
    invoices: list[str]
    api_key: str
    values: dict[str, list[str]]
    folded: tuple[str, str]  # the same name in capitals and in small letters
    counts: dict[str, int]


def prepare(path: Path, settings, samples: int) -> Fixture:
    """A staff login, a password for the heavy company's owner, an API key, values to search for."""
    store = Store(path)
    db = store.db()
    now = datetime.now(UTC)
    if db.conn.execute("SELECT 1 FROM users WHERE email = ?", [STAFF_EMAIL]).fetchone() is None:
        accounts.create_staff(db, now, email=STAFF_EMAIL, name="Bench Admin",
                              password_hash=accounts.hash_password(PASSWORD))
    heavy = int(db.conn.execute("SELECT value FROM app_state WHERE key = 'bench_scale_heavy'").fetchone()[0])
    owner = db.conn.execute("SELECT id, email FROM users WHERE company_id = ? AND role = 'owner'", [heavy]).fetchone()
    with write(db):
        db.conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", [accounts.hash_password(PASSWORD), owner[0]])
    invoices = [r[0] for r in db.conn.execute("SELECT number FROM invoices WHERE company_id = ? ORDER BY id", [heavy])]
    _row, key = api_keys.create(db, now, settings, "scale benchmark")
    values = console.samples(db, random.Random(7), samples)
    # "<Surname> <Sector> ŞİRKETİ": the sector and the suffix, in Turkish capitals and in small letters.
    suffixed = db.conn.execute("SELECT name FROM companies WHERE name LIKE '% ŞİRKETİ' ORDER BY id % 7, id LIMIT 1"
                               ).fetchone()
    phrase = " ".join(suffixed[0].split()[-2:]) if suffixed else "Yazılım ŞİRKETİ"
    upper = phrase.replace("i", "İ").replace("ı", "I").upper()  # str.upper() knows no dotted İ
    lower = phrase.replace("I", "ı").replace("İ", "i").lower()
    counts = {name: db.conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
              for name in ("companies", "payments", "invoices", "events", "outbox", "webhook_messages")}
    store.close()
    return Fixture(heavy, owner[1], invoices or ["INV-0000-000000"], key, values,
                   (upper, lower), counts)


# --- the server -----------------------------------------------------------------------------------


class Server:
    """main.py on the data directory, pinned to one CPU, its JSON access log in a file."""

    def __init__(self, data_dir: Path, workdir: Path, extra_env: dict | None = None, cpu: int = SERVER_CPU):
        self.port, self.cpu = callbacks_bench.free_port(), cpu
        self.log = workdir / f"server-{self.port}.log"
        self.env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data_dir),
                    "BASE_URL": f"http://127.0.0.1:{self.port}", "BILLING_SCHEDULER": "0", "LOG_FORMAT": "json",
                    "METRICS_TOKEN": METRICS_TOKEN,
                    # One API key polls at 16 concurrent here; the per-key limit (50/s by default) would
                    # answer 429 and time the limiter, not the entitlements read.
                    "API_RATE_PER_SECOND": "100000", "API_RATE_BURST": "100000", **(extra_env or {})}
        self.process = callbacks_bench.start_server([sys.executable, "main.py", "--port", str(self.port)], self.env,
                                                    self.port, self.log, cpu=cpu)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> int:
        return self.log.stat().st_size

    def durations(self, since: int) -> list[float]:
        """The access log's duration_ms of every request logged after `since`."""
        found = []
        with open(self.log, "rb") as file:
            file.seek(since)
            for line in file:
                if b"duration_ms" not in line:
                    continue
                try:
                    found.append(float(json.loads(line)["duration_ms"]))
                except (ValueError, KeyError):
                    continue
        return found

    def rss_mb(self) -> tuple[float, float]:
        """(now, peak) resident MiB of the server process."""
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        callbacks_bench.stop(self.process)


class Servers:
    """One server process per CPU, as docs/scaling.md (b) runs them on one host: the same database
    and secret key, only the first ticking (here none does: BILLING_SCHEDULER=0), the clients'
    connections shared among them in turn as nginx's upstream shares them. Times are merged from
    every access log; memory is the sum of the processes'."""

    def __init__(self, data_dir: Path, workdir: Path, processes: int):
        cpus = sorted(os.sched_getaffinity(0))
        self.members = [Server(data_dir, workdir, cpu=cpus[(SERVER_CPU + i) % len(cpus)]) for i in range(processes)]
        self.port = self.members[0].port
        self.ports = [member.port for member in self.members]

    @property
    def base(self) -> str:
        return self.members[0].base

    def mark(self) -> list[int]:
        return [member.mark() for member in self.members]

    def durations(self, since: list[int]) -> list[float]:
        return [d for member, at in zip(self.members, since) for d in member.durations(at)]

    def rss_mb(self) -> tuple[float, float]:
        figures = [member.rss_mb() for member in self.members]
        return sum(now for now, _ in figures), sum(peak for _, peak in figures)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def login(base: str, email: str) -> str:
    """The Cookie header of a logged-in session."""
    with httpx.Client(base_url=base, timeout=60) as client:
        page = client.get("/auth/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        answer = client.post("/auth/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
        if answer.status_code != 303:
            raise SystemExit(f"login as {email} failed: {answer.status_code} {answer.text[:200]}")
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def listed_ids(base: str, cookie: str, query: str) -> list[str]:
    answer = httpx.get(f"{base}/admin/?{urlencode({'q': query})}", headers={"Cookie": cookie, "HX-Request": "true"},
                       timeout=60)
    return sorted(set(re.findall(r"/admin/companies/(\d+)", answer.text)))


@dataclasses.dataclass
class Measured:
    label: str
    server: list[float]
    client: list[float]
    statuses: dict[int, int]
    seconds: float

    @property
    def ok(self) -> bool:
        return pct(self.server, .5) < P50_MS and pct(self.server, .99) < P99_MS and set(self.statuses) == {200}


def drive(server: Servers, paths: list[tuple[str, dict]], requests: int, clients: int, seconds: float) -> Measured:
    """`requests` GETs cycling through `paths` over `clients` connections (at most `seconds` plus the
    slowest answer); -> server and client times."""
    wanted = [loadgen.build_get("127.0.0.1", server.port, path, headers) for path, headers in paths]
    batch = (wanted[i % len(wanted)] for i in range(requests))
    since = server.mark()
    result = asyncio.run(loadgen.run("127.0.0.1", server.ports, batch, clients, seconds, ok_body=None))
    durations = server.durations(since)
    for _ in range(20):  # the access log line is written as the response ends: let the last ones land
        if len(durations) >= result.count:
            break
        time.sleep(0.02)
        durations = server.durations(since)
    return Measured("", durations, [s * 1000 for s in result.latencies], result.statuses, result.seconds)


def pages(args, path: Path, settings, workdir: Path, mixed: bool, each: bool) -> tuple[list[Measured], float | None]:
    fx = prepare(path, settings, max(8, args.samples))
    print(f"{path} ({path.stat().st_size / 2**30:.2f} GiB): "
          + ", ".join(f"{v:,} {k}" for k, v in fx.counts.items()), flush=True)
    # One process: the server on CPU 0 and the clients on CPU 1. Two (one per core, the way to use
    # this machine's second core): the clients go where the kernel puts them.
    os.sched_setaffinity(0, {LOAD_CPU} if args.processes == 1 else set(range(os.cpu_count())))
    server = Servers(path.parent, workdir, args.processes)
    print(f"{args.processes} server process{'es' if args.processes > 1 else ''} on CPU "
          + ", ".join(str(m.cpu) for m in server.members), flush=True)
    results: list[Measured] = []
    peak = None
    try:
        staff = {"Cookie": login(server.base, STAFF_EMAIL)}
        owner = {"Cookie": login(server.base, fx.owner_email)}
        hx = {**staff, "HX-Request": "true"}
        api = {"Authorization": f"Bearer {fx.api_key}"}
        values = fx.values
        customer_ids = values["company_id"] or [str(fx.heavy)]
        groups: list[tuple[str, list[tuple[str, dict]]]] = [
            (f"dashboard /billing/ (company {fx.heavy})", [("/billing/", owner)]),
            ("timeline /billing/timeline", [("/billing/timeline", owner)]),
            (f"invoice page ({len(fx.invoices)} invoices)", [(f"/billing/invoices/{n}", owner) for n in fx.invoices]),
            ("entitlements API", [(f"/api/v1/customers/cus_{c}/entitlements", api) for c in customer_ids]),
            ("staff home /admin/", [("/admin/", staff)]),
        ]
        for status in ("trialing", "active", "past_due", "canceled", "expired"):
            groups.append((f"staff filter status={status}", [(f"/admin/?status={status}", staff)]))
        for plan in ("starter", "team-yearly", "baslangic-try"):
            groups.append((f"staff filter plan={plan}", [(f"/admin/?plan={plan}", staff)]))
        groups.append(("staff filter currency=TRY", [("/admin/?currency=TRY", staff)]))
        for preset in ("past_due", "trial_ending", "card_expiring"):
            groups.append((f"staff filter preset={preset}", [(f"/admin/?preset={preset}", staff)]))
        groups.append(("staff order=mrr-desc", [("/admin/?order=mrr-desc", staff)]))

        def searches(kind):
            return [("/admin/?" + urlencode({"q": v}), hx) for v in values[kind]]

        upper, lower = fx.folded
        groups += [
            ("search name (FTS5 trigram)", searches("name")),
            (f"search '{upper}'", [("/admin/?" + urlencode({"q": upper}), hx)]),
            (f"search '{lower}'", [("/admin/?" + urlencode({"q": lower}), hx)]),
            ("search owner email", searches("email")),
            ("search VKN", searches("tax_id")),
            ("search merchant_oid", searches("merchant_oid")),
            ("search invoice number", searches("invoice")),
            ("staff customer page", [(f"/admin/companies/{c}", staff) for c in customer_ids]),
            ("/admin/metrics", [("/admin/metrics", staff)]),
            ("/metrics", [("/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})]),
        ]
        same = listed_ids(server.base, staff["Cookie"], upper) == listed_ids(server.base, staff["Cookie"], lower)
        found = len(listed_ids(server.base, staff["Cookie"], lower))
        print(f"Turkish folding: '{upper}' and '{lower}' list the same {found} companies on the first page: "
              f"{verdict(same and found > 0)}", flush=True)
        if each:
            print(f"\nserver time at {args.clients} concurrent clients, {args.requests} requests a page "
                  f"(client latency, which adds the queue, in brackets)")
            print(f"  {'page':<46} {'p50':>8} {'p99':>8}   {'client p50/p99':>17}  result")
            for label, paths_ in groups:
                if not paths_:
                    print(f"  {label:<46} (no values in this database)")
                    continue
                if args.requests >= 8:  # warm every process: templates compiled, pages in the cache
                    for member in server.members:
                        httpx.get(member.base + paths_[0][0], headers=paths_[0][1], timeout=120)
                m = drive(server, paths_, args.requests, args.clients, args.seconds)
                m.label = label
                results.append(m)
                bad = {s: n for s, n in m.statuses.items() if s != 200}
                print(f"  {label:<46} {pct(m.server, .5):6.1f}ms {pct(m.server, .99):6.1f}ms   "
                      f"{pct(m.client, .5):7.0f}/{pct(m.client, .99):<7.0f}ms  {verdict(m.ok)}"
                      + (f"  (not 200: {bad})" if bad else "")
                      + ("" if len(m.server) >= args.requests else f"  ({len(m.server)} answered in time)"),
                      flush=True)
        if mixed:
            mix = [(p, h) for _label, paths_ in groups for p, h in paths_[:4]]
            random.Random(3).shuffle(mix)
            m = drive(server, mix, max(args.requests, 4 * len(mix)), args.clients, args.seconds * 2)
            m.label = "mixed staff and customer pages"
            now, peak = server.rss_mb()
            print(f"\nmixed load ({len(m.server)} requests, {len(mix)} distinct pages, {args.clients} clients): "
                  f"server p50 {pct(m.server, .5):.1f} ms, p99 {pct(m.server, .99):.1f} ms")
        now, peak = server.rss_mb()
        print(f"server RSS{f' ({args.processes} processes)' if args.processes > 1 else ''} now {now:.0f} MiB, peak {peak:.0f} MiB (target < {RSS_MB:.0f} MB): "
              f"{verdict(peak * 1.048576 < RSS_MB)}", flush=True)
    finally:
        server.stop()
    if results:
        failing = [m.label for m in results if not m.ok]
        print(f"\npages: {len(results) - len(failing)} of {len(results)} meet p50 < {P50_MS:.0f} ms and "
              f"p99 < {P99_MS:.0f} ms" + (": FAIL " + ", ".join(failing) if failing else ": PASS"))
    return results, peak


# --- callbacks --------------------------------------------------------------------------------------


def callbacks(args, workdir: Path) -> float:
    data = workdir / "callbacks"
    env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data), "BILLING_SCHEDULER": "0",
           "PAYTR_API_BASE": "http://127.0.0.1:9"}
    settings = settings_module.load(env, env_file=None)
    oids = callbacks_bench.seed(settings.database_path, args.callback_payments)
    bodies = callbacks_bench.callback_bodies(oids, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
    os.sched_setaffinity(0, {LOAD_CPU})
    port = callbacks_bench.free_port()
    server = callbacks_bench.start_server([sys.executable, "main.py", "--port", str(port)], env, port,
                                          workdir / "callbacks.log")
    try:
        result = callbacks_bench.drive(port, bodies, args.clients, args.callback_seconds)
    finally:
        callbacks_bench.stop(server)
    not_ok = sum(n for s, n in result.statuses.items() if s != 200) + result.bodies_not_ok
    print(f"\ncallbacks: {result.rate:,.0f}/s distinct success callbacks ({result.count:,} in {result.seconds:.1f} s, "
          f"{args.clients} connections, p99 {result.percentile(99) * 1000:.1f} ms, {not_ok} not OK; "
          f"target >= {CALLBACKS_PER_S:,.0f}/s): {verdict(result.rate >= CALLBACKS_PER_S and not not_ok)}", flush=True)
    return result.rate


# --- the renewal storm ------------------------------------------------------------------------------


def seed_storm(path: Path, due_at: datetime, renewals: int, reminders: list[datetime], filler: int,
               saved: list[tuple[str, str]]) -> None:
    from billing import migrations

    store = Store(path)
    db = store.db()
    with write(db):
        migrations.apply(db)
    created = clock.iso(due_at - timedelta(days=40))
    total = renewals + len(reminders) + filler
    with write(db):
        db.conn.executemany(
            "INSERT INTO companies (id, name, timezone, created_at, paytr_utoken, paytr_ctoken, card_ip) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((i, f"Fırtına {i} A.Ş.", "Europe/Istanbul", created,
              *(saved[i - 1] if i <= renewals else (None, None)), "85.34.78.112") for i in range(1, total + 1)))
        db.conn.executemany(
            "INSERT INTO users (company_id, email, name, password_hash, role, created_at, password_changed_at) "
            "VALUES (?, ?, ?, 'x', 'owner', ?, ?)",
            ((i, f"sahip{i}@example.com", f"Sahip {i}", created, created) for i in range(1, total + 1)))
        far = clock.iso(due_at + timedelta(days=20))

        def subscription(i: int):
            if i <= renewals:  # a paid month ending at the storm's instant, a saved card to charge
                return (i, "active", None, clock.iso(due_at - timedelta(days=30)), clock.iso(due_at), clock.iso(due_at))
            if i <= renewals + len(reminders):  # a trial whose 7-day reminder falls due during the storm
                at = reminders[i - renewals - 1]
                return (i, "trialing", clock.iso(at + timedelta(days=7)), None, None, clock.iso(at))
            return (i, "active", None, clock.iso(due_at - timedelta(days=10)), far, far)

        db.conn.executemany(
            "INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, current_period_start, "
            "current_period_end, period_anchor_day, next_action_at, created_at, updated_at) "
            "VALUES (?, 'starter', ?, ?, ?, ?, 1, ?, ?, ?)",
            ((*subscription(i), created, created) for i in range(1, total + 1)))
    store.close()


def storm(args, workdir: Path) -> dict:
    from starlette.testclient import TestClient

    from billing.app import create_app
    from billing.paytr.emulator import EmulatorConfig, create_emulator
    from billing.paytr.emulator_model import Card, Faults

    interval = args.tick_seconds
    data = workdir / "storm"
    data.mkdir(parents=True)
    env = {"BILLING_ENV": "development", "BILLING_DATA_DIR": str(data), "BASE_URL": "http://bench",
           "BILLING_SCHEDULER": "1", "TICK_SECONDS": str(interval), "PAYTR_RECURRING": "1"}
    settings = settings_module.load(env, env_file=None)
    # The saved cards live in the built-in emulator's state file; stored in memory, then saved once.
    emulator = create_emulator(EmulatorConfig(
        merchant_id=settings.paytr_merchant_id, merchant_key=str(settings.paytr_merchant_key),
        merchant_salt=str(settings.paytr_merchant_salt), notification_url="http://bench/billing/callback")
    ).state.emulator
    cards = [emulator.store_card(Card(number="4355084355084358", owner="SAHIP", month=12, year=2030))
             for _ in range(args.storm)]
    emulator.state_path = data / "paytr-emulator.pickle"
    emulator.save()
    # Due a little after start-up (the first tick runs at once and finds nothing), then reminders
    # every half interval until the storm would long be over.
    started = datetime.now(UTC)
    due_at = started + timedelta(seconds=interval + 2)
    reminders = [due_at + timedelta(seconds=interval * k / 2) for k in range(args.storm_reminders)]
    seed_storm(settings.database_path, due_at, args.storm, reminders, args.storm_filler,
               [(c.utoken, c.ctoken) for c in cards])
    latency_fault = "api_latency" in {f.name for f in dataclasses.fields(Faults)}
    latency = args.latency if latency_fault else 0.0

    seen: dict[int, float] = {}
    reminder_ids = range(args.storm + 1, args.storm + len(reminders) + 1)
    charges_sent = decided = None
    app = create_app(settings)
    with TestClient(app, base_url="http://bench"):
        if latency_fault:
            app.state.emulator.set_faults(api_latency=latency)
        reader = sqlite3.connect(settings.database_path, timeout=30)
        deadline = time.monotonic() + args.storm_timeout
        due_wall = time.time() + (due_at - datetime.now(UTC)).total_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = time.time()
            for (cid,) in reader.execute("SELECT company_id FROM outbox WHERE template = 'trial_reminder'"):
                seen.setdefault(cid, now)
            requested, pending = reader.execute(
                "SELECT count(charge_requested_at), sum(status = 'pending') FROM payments WHERE method = 'recurring'"
            ).fetchone()
            if charges_sent is None and requested >= args.storm:
                charges_sent = now - due_wall
            if decided is None and requested >= args.storm and not pending:
                decided = now - due_wall
            if decided is not None and len(seen) >= len(reminders):
                break
        reader.close()
    delays = [seen[cid] - reminders[cid - args.storm - 1].timestamp() for cid in reminder_ids if cid in seen]
    missing = len(reminders) - len(delays)
    worst = max(delays) if delays else float("inf")
    where = f"at {latency * 1000:.0f} ms per PayTR call" if latency_fault else \
        "at ZERO latency (this emulator has no api_latency fault)"
    print(f"\nrenewal storm: {args.storm:,} saved-card renewals due at one instant, {where}, tick every {interval} s")
    print(f"  all charges sent to PayTR after "
          + (f"{charges_sent:.1f} s" if charges_sent is not None else f"more than {args.storm_timeout} s")
          + "; all decided (callbacks applied) after "
          + (f"{decided:.1f} s" if decided is not None else f"more than {args.storm_timeout} s"))
    print(f"  {len(reminders)} trial reminders falling due during it: delay p50 "
          f"{pct(delays, .5) if delays else float('nan'):.1f} s, worst {worst:.1f} s"
          + (f", {missing} never queued" if missing else "")
          + f" (target: at most one tick interval, {interval} s, + 0.25 s polling): "
          + verdict(not missing and worst <= interval + 0.25), flush=True)
    return {"charges_sent": charges_sent, "decided": decided, "worst_delay": worst, "missing": missing}


# --- main -----------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("pages", "rss", "callbacks", "storm"))
    p.add_argument("--rebuild", action="store_true", help="build the database again")
    p.add_argument("--companies", type=int, default=100_000)
    p.add_argument("--data", type=Path, default=scale_seed.DEFAULT_DIR)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--processes", type=int, default=1,
                   help="server processes for the pages, one per CPU (docs/scaling.md (b)); 1 or the CPU count")
    p.add_argument("--requests", type=int, default=320, help="requests per page")
    p.add_argument("--seconds", type=float, default=30.0, help="at most this long per page")
    p.add_argument("--samples", type=int, default=40, help="distinct search values per kind")
    p.add_argument("--callback-payments", type=int, default=100_000)
    p.add_argument("--callback-seconds", type=float, default=10.0)
    p.add_argument("--storm", type=int, default=10_000, help="renewals due at one instant")
    p.add_argument("--storm-reminders", type=int, default=12)
    p.add_argument("--storm-filler", type=int, default=10_000, help="other companies, nothing due")
    p.add_argument("--storm-timeout", type=float, default=900.0)
    p.add_argument("--tick-seconds", type=int, default=10)
    p.add_argument("--latency", type=float, default=0.3, help="seconds per PayTR call, if the emulator can")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.cpu_count() < 2:
        raise SystemExit("needs two CPUs: one for the server, one for the load")
    workdir = Path(tempfile.mkdtemp(prefix="billing-scale-"))
    try:
        only = args.only
        if only in (None, "pages", "rss"):
            started = time.perf_counter()
            path = scale_seed.build(args.data, args.companies, args.rebuild)
            print(f"database ready in {time.perf_counter() - started:.0f} s", flush=True)
            settings = settings_module.load({"BILLING_DATA_DIR": str(args.data), "BASE_URL": "http://bench.local",
                                             "BILLING_SCHEDULER": "0"}, env_file=None)
            pages(args, path, settings, workdir, mixed=only in (None, "rss"), each=only in (None, "pages"))
        if only in (None, "callbacks"):
            callbacks(args, workdir)
        if only in (None, "storm"):
            os.sched_setaffinity(0, set(range(os.cpu_count())))  # the app's own process: both cores
            storm(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
