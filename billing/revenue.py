"""Revenue metrics: MRR and its movements, churn, conversion, dunning recovery, failed payments
and refunds, per currency (never summed across currencies), per calendar month in the operator's
time zone (settings.tz).

Everything is folded from the recorded events (and the payments and refunds tables), so any past
month can be recomputed: `rebuild` does, from the first event.

How we count (the page says the same, in both languages):

- A company's MRR is the price its subscription renews at (`subscriptions.price`, recorded in the
  event of every change), in its currency, while the subscription is active or past due; a yearly
  price counts as price ÷ 12, rounded half up to the minor unit, per company. Trials, ended trials
  and canceled subscriptions count 0. ARR = 12 × MRR.
- Events recorded before subscriptions stored their price carry no price: the plan's catalog
  price is used then (the price the app charged at the time, before prices could change).
- MRR movements compare each company's MRR at the month's start with its MRR at the month's end
  (for the month running now: with its MRR now), in one currency:
  new = 0 at the start, > 0 at the end, and the company never paid before the month;
  reactivation = the same for a company that paid before; expansion / contraction = both > 0,
  the increase / decrease; churned = > 0 at the start, 0 at the end. So
  MRR at the end = MRR at the start + new + reactivation + expansion − contraction − churned.
  A company that left and came back within one month moved nothing. A company that moved to a
  plan in another currency churned in the old currency and reactivated in the new one.
- Logo churn rate = companies paying at the month's start and not at its end ÷ companies paying
  at its start. Revenue churn rate = (churned + contraction) ÷ MRR at the month's start.
- Trial-to-paid conversion: a trial ends when it is paid for (converted) or runs out or is
  canceled (not converted); conversion = converted ÷ trials that ended in the month. A trial paid
  for after it ran out is not a conversion (it is new MRR). Counted in the trial plan's currency.
- Dunning recovery: a past-due episode ends when the renewal is paid (recovered, if before the
  grace period ended: the period's end + GRACE_DAYS as configured now) or the subscription is
  canceled; recovery = recovered ÷ episodes that ended in the month.
- Failed payments: payments PayTR declined (count and the amount asked for), by when PayTR
  answered. Refunds: refunds PayTR made (count and amount), by when PayTR confirmed them.
- An event counts in the month it was recorded in (events are folded in the order they were
  written).

Speed: folding two years of 100,000 companies takes seconds, too slow for a page. `refresh`
keeps a snapshot (migration m022): the closed months' figures, the open month's figures as of the
last refresh, each company's state, and the last event folded. The page (`report`) starts from
the snapshot and folds only the events written since, touching only the companies they name: a
company no event named since the snapshot has the same MRR as then. The tick refreshes once a
day. `compute` folds everything from scratch without the snapshot; a test proves both agree.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import clock
from billing.db import write
from billing.settings import Settings

# Per currency and month. Money in minor units of that currency; the rest are counts.
FIELDS = ("mrr_start", "mrr_end", "paying_start", "paying_end", "trialing",
          "new", "expansion", "contraction", "churned", "reactivation", "churned_customers",
          "trials_ended", "trials_converted", "dunning_ended", "dunning_recovered",
          "failed_count", "failed_amount", "refund_count", "refund_amount")
MOVEMENTS = ("new", "expansion", "reactivation", "contraction", "churned")
PAID = ("active", "past_due")
STATES = ("trialing", "active", "past_due", "canceled", "expired")
EVENT_KINDS = "kind = 'company.registered' OR kind LIKE 'subscription.%'"
CHUNK = 20000
META_KEY = "revenue_snapshot"
REFRESH_AFTER_EVENTS = 5000  # events written since the snapshot that make the tick refresh it early
MONTHS_SHOWN = 12


def monthly(price: int, interval: str | None) -> int:
    """A price per period as a month's worth: a year's ÷ 12, rounded half up (integers only)."""
    return (price + 6) // 12 if interval == "year" else price


# --- months in the operator's time zone ---------------------------------------------------------


def month_key(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_of(at: datetime, tz: ZoneInfo) -> tuple[int, int]:
    local = at.astimezone(tz)
    return local.year, local.month


def month_start(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def last_months(now: datetime, tz: ZoneInfo, count: int = MONTHS_SHOWN) -> list[tuple[int, int]]:
    """The `count` calendar months ending with the one `now` is in, oldest first."""
    year, month = month_of(now, tz)
    found = []
    for _ in range(count):
        found.append((year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return found[::-1]


# --- one company's state ------------------------------------------------------------------------


@dataclass
class State:
    status: str | None = None
    plan: str | None = None
    price: int | None = None
    currency: str | None = None
    past_due_since: str | None = None
    paid_ever: bool = False
    # As at the start of `start_month` (a company no event named since keeps its state, so its
    # state at any later month's start is its state now):
    start_month: str | None = None
    start_currency: str | None = None
    start_mrr: int = 0
    paid_before: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "State":
        return cls(**json.loads(text))


class Catalog:
    """The plans' price, currency and interval: the fallback for events without a price, and
    whether a price is monthly or yearly."""

    def __init__(self, db: Database):
        self.plans = {code: (price, currency, interval) for code, price, currency, interval in
                      db.conn.execute("SELECT code, price, currency, interval FROM plans")}

    def price(self, code: str | None) -> tuple[int | None, str | None]:
        found = self.plans.get(code or "")
        return (found[0], found[1]) if found else (None, None)

    def interval(self, code: str | None) -> str:
        found = self.plans.get(code or "")
        return found[2] if found else "month"


def _blank() -> dict:
    return dict.fromkeys(FIELDS, 0)


def _add(figures: dict[str, dict], currency: str, name: str, value: int) -> None:
    if currency not in figures:
        figures[currency] = _blank()
    figures[currency][name] += value


# --- the fold -------------------------------------------------------------------------------------


class Fold:
    """Events in, monthly figures out. `base`: the open month's figures over every company as
    they stood at the baseline; `touched`: companies changed since, whose baseline contribution
    is taken out of `base` and their present one put in. `load(ids)`: the states of companies
    not seen yet (from the snapshot; empty when folding from scratch)."""

    def __init__(self, catalog: Catalog, tz: ZoneInfo, grace_days: int, month: tuple[int, int] | None,
                 base: dict[str, dict] | None = None, load=None, extras=None, cursor: int = 0):
        self.catalog, self.tz, self.grace = catalog, tz, timedelta(days=grace_days)
        self.month = month
        self.base = base or {}
        self.load = load or (lambda ids: {})
        self.extras = extras or (lambda start, end: {})  # failed payments and refunds of a range
        self.states: dict[int, State] = {}
        self.baseline: dict[int, dict] = {}  # touched in the open month: their contribution at the baseline
        self.dirty: set[int] = set()  # changed since loaded (to write back to the snapshot)
        self.closed: list[tuple[str, dict[str, dict]]] = []
        self.cursor = cursor
        self._boundary = self._next_boundary()

    @property
    def month_key(self) -> str | None:
        return month_key(*self.month) if self.month else None

    def _next_boundary(self) -> str | None:
        return clock.iso(month_start(*next_month(*self.month), self.tz)) if self.month else None

    # A company's share of the open month's figures, from its state at the start and now.
    def contribution(self, state: State) -> dict[str, dict]:
        out: dict[str, dict] = {}
        start_cur, start = state.start_currency, state.start_mrr
        end_cur, end = self.mrr(state)
        if start:
            _add(out, start_cur, "mrr_start", start)
            _add(out, start_cur, "paying_start", 1)
        if end:
            _add(out, end_cur, "mrr_end", end)
            _add(out, end_cur, "paying_end", 1)
        if start and end and start_cur == end_cur:
            if end > start:
                _add(out, end_cur, "expansion", end - start)
            elif end < start:
                _add(out, end_cur, "contraction", start - end)
        else:
            if start:
                _add(out, start_cur, "churned", start)
                _add(out, start_cur, "churned_customers", 1)
            if end:
                _add(out, end_cur, "reactivation" if state.paid_before or start else "new", end)
        if state.status == "trialing":
            _add(out, state.currency or self.catalog.price(state.plan)[1] or "", "trialing", 1)
        return out

    def mrr(self, state: State) -> tuple[str | None, int]:
        if state.status in PAID and state.price and state.currency:
            return state.currency, monthly(state.price, self.catalog.interval(state.plan))
        return None, 0

    def _touch(self, company_id: int) -> State:
        state = self.states.get(company_id)
        if state is None:
            state = self.states[company_id] = State()
        if state.start_month != self.month_key:
            self._start(state)
        if company_id not in self.baseline:
            self.baseline[company_id] = self.contribution(state)
        self.dirty.add(company_id)
        return state

    def _start(self, state: State) -> None:
        """The open month starts from the company's state now (unchanged since its last event)."""
        state.start_month = self.month_key
        state.start_currency, state.start_mrr = self.mrr(state)
        state.paid_before = state.paid_ever

    def preload(self, company_ids) -> None:
        missing = [cid for cid in set(company_ids) if cid not in self.states]
        if missing:
            self.states.update(self.load(missing))

    def run(self, events: list[tuple]) -> None:
        """Fold (id, created_at, company_id, kind, data JSON) rows, in id order."""
        self.preload(row[2] for row in events if row[2] is not None)
        for event_id, created_at, company_id, kind, data in events:
            self.cursor = event_id
            if company_id is None:
                continue
            if self.month is None:
                self.month = month_of(clock.parse(created_at), self.tz)
                self._boundary = self._next_boundary()
            while created_at >= self._boundary:
                self.close()
            self.apply(company_id, created_at, kind, json.loads(data or "{}"))

    def apply(self, company_id: int, created_at: str, kind: str, data: dict) -> None:
        if kind == "company.registered":
            state = self._touch(company_id)
            state.status, state.plan = "trialing", data.get("plan") or state.plan
            state.price, state.currency = (data["price"], data.get("currency")) if "price" in data \
                else self.catalog.price(state.plan)
            return
        status = kind.split(".", 1)[1]
        if status == "price_changed":
            state = self._touch(company_id)
            state.price = data.get("price", state.price)
            state.currency = data.get("currency") or state.currency
            return
        if status not in STATES:
            return  # cancel scheduled, resumed, downgrade scheduled …: nothing MRR-relevant changed
        state = self._touch(company_id)
        before = state.status or data.get("previous")
        trial_currency = state.currency or self.catalog.price(state.plan)[1] or ""
        plan = data.get("plan") or state.plan
        if "price" in data and data["price"]:
            state.price, state.currency = data["price"], data.get("currency") or state.currency
        elif plan != state.plan or state.price is None:
            # An event from before subscriptions stored their price: the catalog's.
            state.price, state.currency = self.catalog.price(plan)
        state.plan, state.status = plan, status
        counters = self.base
        if before == "trialing" and status != "trialing":
            _add(counters, trial_currency, "trials_ended", 1)
            if status in PAID:
                _add(counters, trial_currency, "trials_converted", 1)
        if before == "past_due" and status != "past_due":
            _add(counters, state.currency or trial_currency, "dunning_ended", 1)
            since = state.past_due_since
            if status == "active" and (since is None or created_at < clock.iso(clock.parse(since) + self.grace)):
                _add(counters, state.currency or trial_currency, "dunning_recovered", 1)
        if status == "past_due":
            state.past_due_since = data.get("past_due_since") or state.past_due_since or created_at
        elif status != "past_due":
            state.past_due_since = None
        if status in PAID:
            state.paid_ever = True

    def figures(self) -> dict[str, dict]:
        """The open month's figures so far (without failed payments and refunds)."""
        out = {currency: dict(values) for currency, values in self.base.items()}
        for company_id, before in self.baseline.items():
            for currency, values in before.items():
                for name, value in values.items():
                    _add(out, currency, name, -value)
            for currency, values in self.contribution(self.states[company_id]).items():
                for name, value in values.items():
                    _add(out, currency, name, value)
        return out

    def close(self) -> None:
        """The open month is over: keep its figures, and start the next from its end."""
        figures = self.figures()
        start, end = month_start(*self.month, self.tz), month_start(*next_month(*self.month), self.tz)
        for currency, values in self.extras(clock.iso(start), clock.iso(end)).items():
            for name, value in values.items():
                _add(figures, currency, name, value)
        self.closed.append((month_key(*self.month), figures))
        self.base = {currency: {**_blank(), "mrr_start": f["mrr_end"], "mrr_end": f["mrr_end"],
                                "paying_start": f["paying_end"], "paying_end": f["paying_end"],
                                "trialing": f["trialing"]}
                     for currency, f in figures.items() if f["mrr_end"] or f["paying_end"] or f["trialing"]}
        self.baseline = {}
        self.month = next_month(*self.month)
        self._boundary = self._next_boundary()

    def roll_to(self, now: datetime) -> None:
        """Close the months that ended before `now` (no event may have come since)."""
        target = month_of(now, self.tz)
        if self.month is None:
            self.month = target
            self._boundary = self._next_boundary()
        while self.month < target:
            self.close()


# --- reading the database -----------------------------------------------------------------------


def _events(db: Database, after: int, until: int | None = None):
    """The MRR-relevant events after id `after` (up to `until`), in chunks, in id order."""
    while True:
        sql = f"SELECT id, created_at, company_id, kind, data FROM events WHERE id > ? AND ({EVENT_KINDS})"
        params = [after]
        if until is not None:
            sql += " AND id <= ?"
            params.append(until)
        chunk = db.conn.execute(sql + " ORDER BY id LIMIT ?", [*params, CHUNK]).fetchall()
        if not chunk:
            return
        yield chunk
        after = chunk[-1][0]


def extras(db: Database, start: str, end: str) -> dict[str, dict]:
    """Failed payments and refunds PayTR decided in [start, end), per currency."""
    out: dict[str, dict] = {}
    for currency, count, amount in db.conn.execute(
            "SELECT currency, count(*), coalesce(sum(amount), 0) FROM payments "
            "WHERE status = 'failed' AND decided_at >= ? AND decided_at < ? GROUP BY currency", [start, end]):
        _add(out, currency, "failed_count", count)
        _add(out, currency, "failed_amount", amount)
    for currency, count, amount in db.conn.execute(
            "SELECT currency, count(*), coalesce(sum(amount), 0) FROM refunds "
            "WHERE status = 'succeeded' AND decided_at >= ? AND decided_at < ? GROUP BY currency", [start, end]):
        _add(out, currency, "refund_count", count)
        _add(out, currency, "refund_amount", amount)
    return out


def _load_states(db: Database):
    def load(ids: list[int]) -> dict[int, State]:
        found = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for company_id, text in db.conn.execute(
                    f"SELECT company_id, state FROM revenue_companies WHERE company_id IN ({','.join('?' * len(part))})",
                    part):
                found[company_id] = State.from_json(text)
        return found
    return load


@contextlib.contextmanager
def _reading(db: Database):
    """One read transaction: the snapshot and the events after it seen at the same instant."""
    if db.conn.in_transaction:
        yield
        return
    db.conn.execute("BEGIN")
    try:
        yield
    finally:
        db.conn.execute("COMMIT")


def _meta(db: Database) -> dict | None:
    row = db.conn.execute("SELECT value FROM app_state WHERE key = ?", [META_KEY]).fetchone()
    return json.loads(row[0]) if row else None


def _snapshot_fold(db: Database, settings: Settings, meta: dict) -> Fold:
    base = {currency: json.loads(text) for currency, text in db.conn.execute(
        "SELECT currency, figures FROM revenue_months WHERE closed = 0 AND month = ?", [meta["month"]])}
    year, month = (int(part) for part in meta["month"].split("-"))
    fold = Fold(Catalog(db), settings.tz, settings.grace_days, (year, month), base, _load_states(db),
                lambda start, end: extras(db, start, end), cursor=meta["cursor"])
    # Failed payments and refunds are not part of the stored open month: they are added when it closes.
    return fold


def _fold_to(db: Database, fold: Fold, now: datetime, until: int | None = None) -> Fold:
    for chunk in _events(db, fold.cursor, until):
        fold.run(chunk)
    fold.roll_to(now)
    return fold


# --- the snapshot --------------------------------------------------------------------------------


def refresh(db: Database, now: datetime, settings: Settings, *, from_scratch: bool = False,
            until: int | None = None) -> dict:
    """Bring the snapshot up to the last event written (from the first one if there is no
    snapshot, or `from_scratch`; `until`: only up to that event id, as the benchmark does to
    time a page over an older snapshot). Folds outside any write; writes in one short
    transaction, only if no other process refreshed meanwhile. Returns what it did."""
    with _reading(db):
        meta = None if from_scratch else _meta(db)
        if meta is None:
            fold = Fold(Catalog(db), settings.tz, settings.grace_days, None,
                        extras=lambda start, end: extras(db, start, end))
        else:
            fold = _snapshot_fold(db, settings, meta)
        last = until if until is not None else db.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        _fold_to(db, fold, now, last)
        fold.cursor = max(fold.cursor, last)
    with write(db):
        again = _meta(db)
        if (again or {}).get("cursor") != (meta or {}).get("cursor") and not from_scratch:
            return {"skipped": True}  # another process refreshed meanwhile; its snapshot stands
        if meta is None:
            db.conn.execute("DELETE FROM revenue_months")
            db.conn.execute("DELETE FROM revenue_companies")
        db.conn.executemany("INSERT OR REPLACE INTO revenue_months (month, currency, closed, figures) VALUES (?, ?, 1, ?)",
                            [(month, currency, json.dumps(values, sort_keys=True))
                             for month, figures in fold.closed for currency, values in figures.items()])
        db.conn.execute("DELETE FROM revenue_months WHERE closed = 0")
        db.conn.executemany("INSERT INTO revenue_months (month, currency, closed, figures) VALUES (?, ?, 0, ?)",
                            [(month_key(*fold.month), currency, json.dumps(values, sort_keys=True))
                             for currency, values in fold.figures().items()])
        db.conn.executemany("INSERT OR REPLACE INTO revenue_companies (company_id, state) VALUES (?, ?)",
                            [(company_id, fold.states[company_id].to_json()) for company_id in fold.dirty])
        local_day = now.astimezone(settings.tz).date().isoformat()
        db.conn.execute("INSERT OR REPLACE INTO app_state (key, value) VALUES (?, ?)",
                        [META_KEY, json.dumps({"cursor": fold.cursor, "month": month_key(*fold.month),
                                               "day": local_day, "at": clock.iso(now)})])
    return {"months_closed": len(fold.closed), "companies": len(fold.dirty), "cursor": fold.cursor}


def rebuild(db: Database, now: datetime, settings: Settings) -> dict:
    """Recompute the whole snapshot from the first event (after a fix, or to check it)."""
    return refresh(db, now, settings, from_scratch=True)


def refresh_if_due(db: Database, now: datetime, settings: Settings) -> dict | None:
    """The tick's step: once per local day, or sooner after a busy hour. An idle tick reads two
    rows (the snapshot's note, the last event's id)."""
    meta = _meta(db)
    if meta is not None and meta.get("day") == now.astimezone(settings.tz).date().isoformat():
        # Also between days when the day is busy: the page folds what came since the snapshot, so
        # that stays a few thousand events (a few milliseconds) however many customers there are.
        last = db.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        if last - meta["cursor"] < REFRESH_AFTER_EVENTS:
            return None
    return refresh(db, now, settings)


# --- the report ------------------------------------------------------------------------------------


@dataclass
class Month:
    key: str  # '2026-11'
    first_day: date
    figures: dict
    partial: bool = False  # the month running now: figures so far

    def __getattr__(self, name):
        if name in FIELDS:
            return self.figures[name]
        raise AttributeError(name)

    @property
    def net_new(self) -> int:
        f = self.figures
        return f["new"] + f["reactivation"] + f["expansion"] - f["contraction"] - f["churned"]

    @property
    def logo_churn(self) -> Fraction | None:
        return _rate(self.figures["churned_customers"], self.figures["paying_start"])

    @property
    def revenue_churn(self) -> Fraction | None:
        return _rate(self.figures["churned"] + self.figures["contraction"], self.figures["mrr_start"])

    @property
    def conversion(self) -> Fraction | None:
        return _rate(self.figures["trials_converted"], self.figures["trials_ended"])

    @property
    def recovery(self) -> Fraction | None:
        return _rate(self.figures["dunning_recovered"], self.figures["dunning_ended"])


def _rate(part: int, whole: int) -> Fraction | None:
    return Fraction(part, whole) if whole else None


@dataclass
class Report:
    now: datetime
    currencies: list[str]  # with any figure in the months shown, most paying customers first
    months: dict[str, list[Month]] = field(default_factory=dict)  # per currency, oldest first, 12

    def current(self, currency: str) -> Month:
        return self.months[currency][-1]

    def headline(self, currency: str) -> dict:
        month = self.current(currency)
        return {"mrr": month.mrr_end, "arr": 12 * month.mrr_end, "paying": month.paying_end,
                "trialing": month.trialing}


def _report(fold: Fold, stored: dict[str, dict[str, dict]], now: datetime, settings: Settings,
            db: Database) -> Report:
    """The last 12 months from the stored closed months, the fold's own closed ones and its open month."""
    by_month = {month: dict(figures) for month, figures in stored.items()}
    for month, figures in fold.closed:
        by_month[month] = figures
    open_figures = fold.figures()
    start = month_start(*fold.month, settings.tz)
    for currency, values in extras(db, clock.iso(start), clock.iso(now + timedelta(seconds=1))).items():
        for name, value in values.items():
            _add(open_figures, currency, name, value)
    by_month[month_key(*fold.month)] = open_figures
    shown = last_months(now, settings.tz)
    keys = [month_key(*m) for m in shown]
    currencies = sorted({c for k in keys for c, f in by_month.get(k, {}).items() if any(f.values())},
                        # most paying customers first (amounts in different currencies do not compare)
                        key=lambda c: (-open_figures.get(c, {}).get("paying_end", 0), c))
    report = Report(now=now, currencies=currencies)
    for currency in currencies:
        report.months[currency] = [
            Month(key=key, first_day=date(y, m, 1), figures={**_blank(), **by_month.get(key, {}).get(currency, {})},
                  partial=key == keys[-1])
            for key, (y, m) in zip(keys, shown)]
    return report


def report(db: Database, now: datetime, settings: Settings) -> Report:
    """What the metrics page shows: the snapshot plus the events written since."""
    if _meta(db) is None:
        refresh(db, now, settings)  # the first view after installing: build it once
    with _reading(db):
        meta = _meta(db)
        fold = _fold_to(db, _snapshot_fold(db, settings, meta), now)
        keys = [month_key(*m) for m in last_months(now, settings.tz)]
        stored: dict[str, dict[str, dict]] = {}
        for month, currency, text in db.conn.execute(
                f"SELECT month, currency, figures FROM revenue_months WHERE closed = 1 "
                f"AND month IN ({','.join('?' * len(keys))})", keys):
            stored.setdefault(month, {})[currency] = json.loads(text)
        return _report(fold, stored, now, settings, db)


def compute(db: Database, now: datetime, settings: Settings) -> Report:
    """The same report folded from the first event, ignoring the snapshot (tests; checking it)."""
    with _reading(db):
        fold = Fold(Catalog(db), settings.tz, settings.grace_days, None,
                    extras=lambda start, end: extras(db, start, end))
        _fold_to(db, fold, now)
        return _report(fold, {}, now, settings, db)
