"""How the stored card lists (m024, billing/cards.py) hold at 100,000 customers.

Works on a COPY of the console benchmark's database (benchmarks/console_seed.py; it writes):

    cp data/bench/console/billing.sqlite3 /tmp/cards/billing.sqlite3
    python benchmarks/cards.py /tmp/cards/billing.sqlite3

Prints: the migration's time; the tick's claim (`cards.claim_refresh`) right after it (every saved
card's details unknown: the backfill), in a steady state (every list a day old: only renewals in
the next days are picked) and when idle (everything fresh); and the dashboard's card box read
(`cards.box`). Figures only, no assertions; the machine is shared, so each is the best of a few.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from billing import accounts, cards, clock, migrations
from billing.db import Store, write


def best(fn, repeat=5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000, result


def main(path: str) -> None:
    db = Store(path).db()
    start = time.perf_counter()
    with write(db):
        applied = migrations.apply(db)
    print(f"migrations {applied}: {(time.perf_counter() - start) * 1000:.0f} ms")
    now = clock.parse(db.conn.execute("SELECT max(current_period_start) FROM subscriptions").fetchone()[0])
    with_cards = db.conn.execute("SELECT count(*) FROM companies WHERE paytr_utoken IS NOT NULL").fetchone()[0]
    print(f"companies with a saved card: {with_cards}; now = {clock.iso(now)}")

    def claim(at):
        # Claim, then give the lease back so every repeat measures the same work.
        claimed = cards.claim_refresh(db, at)
        with write(db):
            db.conn.executemany("UPDATE companies SET cards_tried_at = NULL WHERE id = ?", [[c["id"]] for c in claimed])
        return claimed

    ms, claimed = best(lambda: claim(now))
    print(f"claim after m024 (backfill, all details unknown): {ms:.1f} ms, {len(claimed)} claimed")

    with write(db):  # a steady state: every company listed two days ago
        db.conn.execute("UPDATE companies SET cards_listed_at = ? WHERE paytr_utoken IS NOT NULL",
                        [clock.iso(now - timedelta(days=2))])
    renewing = db.conn.execute(
        "SELECT count(*) FROM subscriptions s JOIN companies c ON c.id = s.company_id WHERE s.status = 'active' "
        "AND s.current_period_end > ? AND s.current_period_end <= ? AND c.paytr_utoken IS NOT NULL",
        [clock.iso(now), clock.iso(now + cards.RENEWAL_WINDOW)]).fetchone()[0]
    ms, claimed = best(lambda: claim(now))
    print(f"claim in a steady state ({renewing} card companies renew within {cards.RENEWAL_WINDOW.days} days): "
          f"{ms:.1f} ms, {len(claimed)} claimed")
    with write(db):  # idle: everything listed within the day
        db.conn.execute("UPDATE companies SET cards_listed_at = ? WHERE paytr_utoken IS NOT NULL", [clock.iso(now)])
    ms, claimed = best(lambda: claim(now))
    print(f"claim when idle (all fresh): {ms:.1f} ms, {len(claimed)} claimed")
    plan = db.conn.execute("EXPLAIN QUERY PLAN " + cards._RENEWING.format(free="1"),
                           {"now": "a", "soon": "b", "stale": "c", "n": 1}).fetchall()
    print("renewing plan:", "; ".join(row[-1] for row in plan))

    cid = db.conn.execute("SELECT id FROM companies WHERE paytr_utoken IS NOT NULL LIMIT 1 OFFSET 40000").fetchone()[0]
    company = accounts.company(db, cid)
    ms, _box = best(lambda: cards.box(db, company), repeat=50)
    print(f"dashboard card box (stored list): {ms:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1])
