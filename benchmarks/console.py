"""The operator's console at 100,000 customers: server time of every list, search and report.

    .venv/bin/python benchmarks/console.py [--companies 100000] [--repeat 40] [--fresh] [--data DIR]

Builds (once, cached at the path it prints; `--fresh` rebuilds) the database of
benchmarks/console_seed.py: 100,000 companies with two years of history. Then runs the real app
in-process (create_app, its lifespan, a logged-in admin session; the app's clock fixed at the
seed's NOW) and times each request SERVER-SIDE: an ASGI wrapper around the app measures from the
moment the request enters the app until its last body byte is sent (routing, session, the staff
check, the queries on a worker thread, the template); the test client's own overhead is outside
it. Each request is repeated `--repeat` times (searches pick a different real value each time);
p50 and p99 are printed against the targets: 50 ms for the customer list, searches, the customer
page and the payments report; 200 ms for /admin/metrics (if the route exists). The CSV download of
a whole month is printed with its rows per second (no target: it is a file, streamed).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import console_seed  # noqa: E402
from billing import accounts, settings as settings_module  # noqa: E402
from billing.app import create_app  # noqa: E402
from billing.clock import FixedClock  # noqa: E402
from billing.db import Store  # noqa: E402

LIST_TARGET_MS, METRICS_TARGET_MS = 50.0, 200.0
PASSWORD = "benchmark staff password"


class ServerTimer:
    """ASGI wrapper: the time from a request entering the app to its last body byte."""

    def __init__(self, app):
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last_ms = (time.perf_counter() - started) * 1000

        await self.app(scope, receive, timed_send)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def samples(db, rng: random.Random, count: int) -> dict[str, list[str]]:
    """Real values to search for, drawn from the database."""
    def pick(sql, n=count):
        values = [row[0] for row in db.conn.execute(sql).fetchall()]
        return [rng.choice(values) for _ in range(n)] if values else []

    names = pick("SELECT name FROM companies WHERE id % 97 = 0")
    emails = pick("SELECT email FROM users WHERE role = 'owner' AND id % 97 = 0")
    return {
        # a word and the start of the next, e.g. "Kaya Lojis": the kind of thing staff type
        "name": [" ".join(name.split()[:2])[:-2] for name in names],
        "name_upper": [name.split()[0].upper() + " " + name.split()[1][:3].upper() for name in names],
        "email": [email.split("@")[0][-8:] for email in emails],  # part of the address, e.g. "urt12345"
        "short": [rng.choice(["ay", "me", "ka", "öz", "şa", "y", "ç"]) for _ in range(count)],
        "tax_id": pick("SELECT billing_tax_id FROM companies WHERE billing_tax_id IS NOT NULL AND id % 89 = 0"),
        "merchant_oid": pick("SELECT merchant_oid FROM payments WHERE id % 1009 = 0"),
        "invoice": pick("SELECT number FROM invoices WHERE id % 1009 = 0"),
        "credit_note": pick("SELECT number FROM credit_notes"),
        "company_id": [str(v) for v in pick("SELECT id FROM companies WHERE id % 53 = 0")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--data", type=Path, default=console_seed.DEFAULT_DIR)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()

    path = console_seed.build(args.data, args.companies, args.fresh)
    settings = settings_module.load({"BILLING_DATA_DIR": str(args.data), "BASE_URL": "http://testserver",
                                     "BILLING_SCHEDULER": "0"}, env_file=None)
    store = Store(path)
    db = store.db()
    if db.conn.execute("SELECT 1 FROM users WHERE email = 'bench-admin@example.com'").fetchone() is None:
        accounts.create_staff(db, console_seed.NOW, email="bench-admin@example.com", name="Bench Admin",
                              password_hash=accounts.hash_password(PASSWORD))
    rng = random.Random(7)
    values = samples(db, rng, args.repeat)
    counts = {name: db.conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
              for name in ("companies", "subscriptions", "payments", "invoices", "credit_notes", "events")}
    store.close()

    from starlette.testclient import TestClient

    app = create_app(settings, clock=FixedClock(console_seed.NOW))
    timer = ServerTimer(app)
    print(f"{path} ({path.stat().st_size / 2**20:,.0f} MiB): " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
    with TestClient(timer, base_url="http://testserver") as client:
        page = client.get("/auth/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        answer = client.post("/auth/login", data={"csrf_token": token, "email": "bench-admin@example.com",
                                                  "password": PASSWORD}, follow_redirects=False)
        assert answer.status_code == 303, answer.text[:300]
        has_metrics = any(getattr(route, "path", "") == "/admin/metrics" for route in app.routes)

        results: list[tuple[str, float, float, float, str]] = []

        def measure(label: str, urls, target: float = LIST_TARGET_MS, headers=None, check=None) -> None:
            urls = list(urls)
            times = []
            client.get(urls[0], headers=headers)  # warm: templates compiled, pages in the cache
            for i in range(args.repeat):
                response = client.get(urls[i % len(urls)], headers=headers)
                assert response.status_code == 200, (label, urls[i % len(urls)], response.status_code)
                if check:
                    check(response)
                times.append(timer.last_ms)
            results.append((label, percentile(times, .5), percentile(times, .99), target,
                            "ok" if percentile(times, .5) < target else "OVER"))
            print(f"  {label:<46} p50 {percentile(times, .5):7.1f} ms   p99 {percentile(times, .99):7.1f} ms",
                  flush=True)

        def listed(response):
            assert "/admin/companies/" in response.text, "nothing listed"

        print("\ncustomer list (full page: list, counts, anomalies, failed emails)")
        measure("all, newest first", ["/admin/"], check=listed)
        for status in ("trialing", "active", "past_due", "canceled", "expired"):
            measure(f"status={status}", [f"/admin/?status={status}"], check=listed)
        for plan in ("starter", "team-yearly", "baslangic-try"):
            measure(f"plan={plan}", [f"/admin/?plan={plan}"], check=listed)
        for currency in ("TRY", "EUR"):
            measure(f"currency={currency}", [f"/admin/?currency={currency}"])
        for preset in ("past_due", "trial_ending", "card_expiring"):
            measure(f"preset={preset}", [f"/admin/?preset={preset}"], check=listed)
        for order in ("created-asc", "mrr-desc", "mrr-asc", "ends-asc", "ends-desc"):
            measure(f"order={order}", [f"/admin/?order={order}"], check=listed)
        measure("status=active&plan=team, order=mrr-desc", ["/admin/?status=active&plan=team&order=mrr-desc"],
                check=listed)

        print("\npage 2 via the keyset cursor")
        for start in ("/admin/", "/admin/?order=mrr-desc", "/admin/?status=active&order=ends-asc"):
            first = client.get(start).text
            next_url = re.search(r'href="([^"]+)"[^>]*rel="next"', first).group(1).replace("&amp;", "&")
            measure(f"next page of {start}", [next_url], check=listed)

        print("\nsearch (htmx fragment, as typed in the search box)")
        hx = {"HX-Request": "true"}
        kinds = [("name (3+ letters, FTS5 trigram)", "name"), ("NAME in capitals (ŞAHİN YAZ)", "name_upper"),
                 ("owner email part", "email"), ("1-2 letters (prefix)", "short"), ("VKN/TCKN", "tax_id"),
                 ("merchant_oid", "merchant_oid"), ("invoice number", "invoice"), ("credit-note number", "credit_note")]
        for label, kind in kinds:
            if values[kind]:
                measure(label, ["/admin/?" + urlencode({"q": v}) for v in values[kind]], headers=hx)
        measure("name + status=active, order=mrr-desc",
                ["/admin/?" + urlencode({"q": v, "status": "active", "order": "mrr-desc"}) for v in values["name"]],
                headers=hx)

        print("\none customer")
        measure("customer page /admin/companies/{id}", [f"/admin/companies/{cid}" for cid in values["company_id"]])

        print("\npayments report")
        measure("this month (default)", ["/admin/payments"])
        measure("last month, status=failed", ["/admin/payments?from=2026-10-01&to=2026-10-31&status=failed"])
        measure("this month, plan=team, currency=USD", ["/admin/payments?plan=team&currency=USD"])
        month = client.get("/admin/payments").text
        next_url = re.search(r'href="([^"]+)"[^>]*rel="next"', month).group(1).replace("&amp;", "&")
        measure("this month, page 2", [next_url])
        csv_times = []
        for _ in range(max(3, args.repeat // 10)):
            response = client.get("/admin/payments.csv")
            csv_times.append(timer.last_ms)
        csv_rows = response.content.count(b"\n") - 1
        print(f"  {'CSV of this month':<46} p50 {percentile(csv_times, .5):7.1f} ms   "
              f"({csv_rows:,} rows, {csv_rows / percentile(csv_times, .5) * 1000:,.0f} rows/s, streamed)")

        print("\nmetrics")
        if has_metrics:
            measure("/admin/metrics", ["/admin/metrics"], target=METRICS_TARGET_MS)
        else:
            print("  metrics: not present")

    over = [r for r in results if r[4] == "OVER"]
    print(f"\n{len(results) - len(over)} of {len(results)} measurements meet their p50 target"
          + (": " + ", ".join(r[0] for r in over) if over else "."))
    print(f"worst p50: {max(r[1] for r in results):.1f} ms ({max(results, key=lambda r: r[1])[0]}); "
          f"median of p50s: {statistics.median(r[1] for r in results):.1f} ms; "
          f"worst p99: {max(r[2] for r in results):.1f} ms ({max(results, key=lambda r: r[2])[0]})")


if __name__ == "__main__":
    main()
