"""The console's customer list: filters, search and sorts that each read an index, keyset pages.

At 100,000 customers a `LIKE '%x%'` or an `OFFSET 5000` reads the whole table, so nothing here
does either (m021_search made the indexes):

- every filter and sort is on `subscriptions` (one row per company): status, plan and currency
  each have an index per sort key; MRR and the period end are stored columns kept by triggers;
- a page continues after the last row's sort key and company id (`after`), never by OFFSET, so
  pages neither repeat nor skip a row while customers sign up in between;
- exact identifiers are equality lookups on unique indexes: a VKN/TCKN (`billing_tax_id`), a
  `merchant_oid`, an invoice number (INV-…) or a credit-note number (CN-…);
- names and emails are matched in `customer_fts`, an FTS5 trigram index of text folded by
  `search_fold` (ŞİRKETİ, şirketi and Şirketi are the same; SQLite's lower() is ASCII-only):
  any substring of 3 or more characters. Trigrams cannot match one or two characters, so a
  shorter query matches the start of a company name or owner email, through B-tree indexes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlite_utils import Database

from billing import clock
from billing.db import rows, scalar
from billing.i18n import gettext as _, lazy_gettext, search_fold

PAGE_SIZE = 50
STATUSES = ("trialing", "active", "past_due", "canceled", "expired")
CURRENCIES = ("TRY", "USD", "EUR")
# Quick filters beside the selects: what staff look for every morning.
PRESETS = {"past_due": lazy_gettext("Past due"), "trial_ending": lazy_gettext("Trial ending in 7 days"),
           "card_expiring": lazy_gettext("Card expiring by next month")}
# sort name -> the stored column it orders by (the company id breaks ties and is the keyset's second key)
SORTS = {"created": "s.company_id", "mrr": "s.mrr", "ends": "s.ends_at"}
ORDERS = {"created-desc": lazy_gettext("Newest first"), "created-asc": lazy_gettext("Oldest first"),
          "mrr-desc": lazy_gettext("Highest MRR first"), "mrr-asc": lazy_gettext("Lowest MRR first"),
          "ends-asc": lazy_gettext("Period or trial ending soonest"),
          "ends-desc": lazy_gettext("Period or trial ending latest")}
MIN_SUBSTRING = 3  # the trigram tokenizer's shortest match

_INVOICE = re.compile(r"INV-\d{4}-\d{1,9}", re.IGNORECASE)
_CREDIT_NOTE = re.compile(r"CN-\d{4}-\d{1,9}", re.IGNORECASE)
_TAX_ID = re.compile(r"\d{10,11}")
_OID = re.compile(r"[A-Za-z0-9]{6,64}")  # PayTR's merchant_oid: alphanumeric, at most 64


@dataclass(frozen=True)
class Query:
    q: str = ""
    status: str = ""
    plan: str = ""
    currency: str = ""
    preset: str = ""
    sort: str = "created"
    direction: str = "desc"
    after: str = ""  # "<sort key>~<company id>" of the last row shown
    problems: tuple[str, ...] = field(default=())

    @property
    def order(self) -> str:
        return f"{self.sort}-{self.direction}"

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.status or self.plan or self.currency or self.preset)

    def params(self, **changes) -> dict:
        """The query string for this list (with `changes`), without empty values."""
        values = replace(self, **changes)
        found = {name: getattr(values, name) for name in ("q", "status", "plan", "currency", "preset")}
        found.update(order=values.order if values.order != "created-desc" else "", after=values.after)
        return {name: value for name, value in found.items() if value}

    def url(self, **changes) -> str:
        params = self.params(**changes)
        return "/admin/" + (f"?{urlencode(params)}" if params else "")


def parse(params, plan_codes: set[str]) -> Query:
    """The list's query string, checked. An unknown value is dropped and named in `problems`, so a
    stale bookmark shows the list with a note instead of an error page."""
    problems = []

    def pick(name: str, allowed, default: str = "") -> str:
        value = (params.get(name) or "").strip()
        if value and value not in allowed:
            problems.append(_("Ignored a filter value this list does not know: “%(value)s”.", value=value[:40]))
            return default
        return value or default

    sort, _dash, direction = pick("order", ORDERS, "created-desc").partition("-")
    query = Query(q=(params.get("q") or "").strip()[:100], status=pick("status", STATUSES),
                  plan=pick("plan", plan_codes), currency=pick("currency", CURRENCIES), preset=pick("preset", PRESETS),
                  sort=sort, direction=direction)
    after = (params.get("after") or "")[:80]
    if after and _cursor(query.sort, after) is None:
        problems.append(_("That page link is not valid any more; here is the first page."))
        after = ""
    return replace(query, after=after, problems=tuple(problems))


def _cursor(sort: str, after: str) -> tuple | None:
    key, sep, company_id = after.rpartition("~")
    if not sep or not company_id.isdigit():
        return None
    if sort == "created":
        return (int(company_id),)
    if sort == "mrr":
        return (int(key), int(company_id)) if re.fullmatch(r"-?\d{1,15}", key) else None
    return (key, int(company_id)) if re.fullmatch(r"[0-9T:Z.-]{0,40}", key) else None


def _cursor_of(sort: str, row: dict) -> str:
    key = {"created": "", "mrr": row["mrr"], "ends": row["ends_at"]}[sort]
    return f"{key}~{row['id']}"


# --- search ------------------------------------------------------------------------------------


def identifier_matches(db: Database, text: str) -> dict[int, str]:
    """company id -> what matched, for a query that is an exact identifier (equality on an index)."""
    found: dict[int, str] = {}
    compact = text.replace(" ", "")
    if _INVOICE.fullmatch(compact):
        for row in rows(db, "SELECT company_id, number FROM invoices WHERE number = ?", [compact.upper()]):
            found[row["company_id"]] = _("Invoice %(number)s", number=row["number"])
    if _CREDIT_NOTE.fullmatch(compact):
        for row in rows(db, "SELECT company_id, number FROM credit_notes WHERE number = ?", [compact.upper()]):
            found[row["company_id"]] = _("Credit note %(number)s", number=row["number"])
    if _TAX_ID.fullmatch(compact):
        for row in rows(db, "SELECT id FROM companies WHERE billing_tax_id = ?", [compact]):
            found[row["id"]] = _("Tax number %(number)s", number=compact)
    if _OID.fullmatch(compact):
        for row in rows(db, "SELECT company_id, merchant_oid FROM payments WHERE merchant_oid IN (?, ?)",
                        [compact, compact.upper()]):
            found[row["company_id"]] = _("Payment %(oid)s", oid=row["merchant_oid"])
    return found


def fts_phrase(folded: str) -> str:
    """The folded query as one FTS5 phrase: with the trigram tokenizer, a substring match."""
    return '"' + folded.replace('"', '""') + '"'


# A long query is looked up in the index by its first characters only, and each match is then checked
# for the whole text: the trigram index reads every trigram's list of companies, and a pasted full
# name ("Yıldız Medya Sanayi ve Ticaret Ltd. Şti.", 38 trigrams, "ticaret" in a third of all names)
# took 11 ms that way, its first 8 characters and the check 1 ms, for the same 34 companies.
FTS_WINDOW = 8


def _fts_match(folded: str, alias: str) -> tuple[str, str, list]:
    """(a join, a condition, their parameters) keeping the rows of `alias` (customer_fts) whose name
    or emails contain the folded text (3+ characters)."""
    if len(folded) <= FTS_WINDOW:
        return "", "customer_fts MATCH ?", [fts_phrase(folded)]
    return (f"CROSS JOIN customer_index ci ON ci.company_id = {alias}.rowid",  # the index's matches lead
            "customer_fts MATCH ? AND (instr(ci.name, ?) OR instr(ci.owner_email, ?) OR instr(ci.member_emails, ?))",
            [fts_phrase(folded[:FTS_WINDOW]), folded, folded, folded])


def _text_hits(folded: str) -> tuple[str, list]:
    """SQL selecting the company ids whose name or emails contain the folded text (3+ characters),
    or start with it (shorter)."""
    if len(folded) >= MIN_SUBSTRING:
        join, condition, params = _fts_match(folded, "f")
        return f"SELECT f.rowid FROM customer_fts f {join} WHERE {condition}", params
    # [folded, folded + the highest code point): a range on the B-tree, i.e. a prefix.
    high = folded + "\U0010ffff"
    return ("SELECT company_id FROM customer_index WHERE name >= ? AND name < ? "
            "UNION SELECT company_id FROM customer_index WHERE owner_email >= ? AND owner_email < ?",
            [folded, high, folded, high])


# --- the list ---------------------------------------------------------------------------------


def _months(now: datetime, tz: ZoneInfo) -> tuple[str, str]:
    local = now.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return f"{local.year:04d}-{local.month:02d}", f"{year:04d}-{month:02d}"


def build(query: Query, now: datetime, tz: ZoneInfo, identifiers: dict[int, str] | None = None,
          limit: int = PAGE_SIZE, walk_card_expiring: bool = False) -> tuple[str, list]:
    """The SQL of one page (and one row more, to know whether another page follows)."""
    where, params, source = [], [], "subscriptions s"
    folded = search_fold(query.q) if query.q else ""
    # The newest-first list of a word's matches (the usual search) walks the trigram index in
    # rowid (= company id) order and stops at a page: "yazılım" matches 5,579 of 100,000
    # companies, and joining and sorting them all took 25 ms where the first 51 take 0.4 ms.
    fts_order = (len(folded) >= MIN_SUBSTRING and not identifiers and query.sort == "created")
    company = "hits.rowid" if fts_order else "s.company_id"
    if fts_order:
        join, condition, match_params = _fts_match(folded, "hits")
        source = f"customer_fts hits {join} CROSS JOIN subscriptions s ON s.company_id = hits.rowid"
        where.append(condition)
        params += match_params
    elif query.q:
        hits_sql, hits_params = _text_hits(folded)
        # The hits drive the join (CROSS JOIN keeps them the outer loop): a search reads its
        # matches, then sorts them, instead of walking a sort index looking for them.
        source = (f"(SELECT value AS id FROM json_each(?) UNION {hits_sql}) hits "
                  "CROSS JOIN subscriptions s ON s.company_id = hits.id")
        params += [json.dumps(sorted(identifiers or {})), *hits_params]
    for column in ("status", "plan", "currency"):
        if getattr(query, column):
            where.append(f"s.{column} = ?")
            params.append(getattr(query, column))
    if query.preset == "past_due":
        where.append("s.status = 'past_due'")
    elif query.preset == "trial_ending":
        where.append("s.status = 'trialing' AND s.ends_at >= ? AND s.ends_at < ?")
        params += [clock.iso(now), clock.iso(now + timedelta(days=7))]
    elif query.preset == "card_expiring":
        # Expired already or expiring this month or next (the operator's calendar). Few of them:
        # driven by the index on companies. Many (expired cards pile up over the years: 6 % of
        # the 100k benchmark's companies, whose reading and sorting took 22 ms): walked in the
        # list's own order, where a page's 50 turn up after about 900 rows (`page` decides).
        if walk_card_expiring or query.q:
            where.append("+c.card_expires <= ?")
        else:
            source = "companies ce CROSS JOIN subscriptions s ON s.company_id = ce.id"
            where.append("ce.card_expires <= ?")
        params.append(_months(now, tz)[1])
    key, descending = SORTS[query.sort], query.direction == "desc"
    cursor = _cursor(query.sort, query.after) if query.after else None
    if cursor is not None:
        compare = "<" if descending else ">"
        if query.sort == "created":
            where.append(f"{company} {compare} ?")
        else:
            where.append(f"({key}, s.company_id) {compare} (?, ?)")
        params += list(cursor)
    order = "DESC" if descending else "ASC"
    order_by = f"{company} {order}" if query.sort == "created" else f"{key} {order}, s.company_id {order}"
    # The page's ids first, then its columns: a filter that matches many rows and is sorted in a
    # temporary B-tree (997 trials ending this week) would otherwise read every match's company and
    # owner email before keeping 51 (1.26 → 0.4 ms at 100k).
    where_sql = "WHERE " + " AND ".join(where) if where else ""
    companies = "JOIN companies c ON c.id = s.company_id" if re.search(r"\bc\.", where_sql) else ""
    page_order = order_by.replace(company, "s.company_id")
    sql = f"""SELECT s.company_id AS id, c.name, c.created_at, c.card_expires, s.plan, s.status, s.trial_ends_at,
                     s.current_period_end, s.ends_at, s.mrr, s.price, s.currency,
                     (SELECT u.email FROM users u WHERE u.company_id = s.company_id AND u.role = 'owner'
                      ORDER BY u.id LIMIT 1) AS owner_email
              FROM (SELECT s.company_id AS id FROM {source} {companies} {where_sql} ORDER BY {order_by} LIMIT ?) page
              CROSS JOIN subscriptions s ON s.company_id = page.id JOIN companies c ON c.id = page.id
              ORDER BY {page_order}"""
    return sql, [*params, limit + 1]


# Above this many, walking the list's order finds a page sooner than reading them all by the index.
MANY_CARDS_EXPIRING = 2000


def many_cards_expiring(db: Database, now: datetime, tz: ZoneInfo) -> bool:
    """Counted on the index, and never past the threshold (so at most that many entries read)."""
    return scalar(db, "SELECT count(*) FROM (SELECT 1 FROM companies WHERE card_expires <= ? LIMIT ?)",
                  [_months(now, tz)[1], MANY_CARDS_EXPIRING]) >= MANY_CARDS_EXPIRING


def page(db: Database, query: Query, now: datetime, tz: ZoneInfo, limit: int | None = None) -> dict:
    limit = limit or PAGE_SIZE
    identifiers = identifier_matches(db, query.q) if query.q else {}
    walk = query.preset == "card_expiring" and not query.q and many_cards_expiring(db, now, tz)
    sql, params = build(query, now, tz, identifiers, limit, walk_card_expiring=walk)
    found = rows(db, sql, params)
    more = len(found) > limit
    found = found[:limit]
    for row in found:
        row["matched"] = identifiers.get(row["id"])
    return {"companies": found, "query": query,
            "next_url": query.url(after=_cursor_of(query.sort, found[-1])) if more else None,
            "first_url": query.url(after="") if query.after else None,
            "short_query": bool(query.q) and not identifiers and len(search_fold(query.q)) < MIN_SUBSTRING}
