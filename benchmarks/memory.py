"""Peak memory of the real server under 16 concurrent staff and customer clients on the 100k database.

Copies the cached 100,000-company database (benchmarks/console_seed.py, data/bench/console) to
/tmp/memory/, starts `main.py` on it as a subprocess (scheduler off: requests only), logs in a staff
member and a customer, then for --seconds fires --clients concurrent clients at the staff home, staff
search (htmx), a staff customer page, the customer dashboard and an invoice, while --abandoners
clients keep sending staff searches and hanging up after 50 ms. It samples the server's
/proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile, Threads) every 100 ms and prints the peak, the
open connections it saw, and p50/p99 per page. One run per --threads value (DB_THREADS). The copy
is deleted at the end. Figures only: nothing here asserts a timing.

    python benchmarks/memory.py --threads 4 8 16 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts  # noqa: E402
from billing.db import connect  # noqa: E402
from benchmarks import console_seed  # noqa: E402

PASSWORD = "benchmark memory password"
STAFF = "bench-memory@example.com"
WORK = Path("/tmp/memory")
TARGET_MB = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(source: Path) -> tuple[Path, dict]:
    """Copy the database, add a staff member and give one customer a password; pick URLs."""
    data = WORK / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    for name in ("billing.sqlite3", "secret_key"):
        shutil.copy2(source / name, data / name)
    conn = connect(data / "billing.sqlite3").conn  # with fold(), which the search triggers call
    hashed = accounts.hash_password(PASSWORD)
    now = "2026-11-27T09:00:00Z"
    conn.execute("DELETE FROM users WHERE email = ?", (STAFF,))
    conn.execute("INSERT INTO users (email, name, password_hash, role, created_at, password_changed_at) "
                 "VALUES (?, 'Memory Bench', ?, 'staff', ?, ?)", (STAFF, hashed, now, now))
    # The customer with the longest history, without a saved card (its dashboard asks PayTR: §5).
    company, email = _customer(conn)
    conn.execute("UPDATE users SET password_hash = ? WHERE email = ?", (hashed, email))
    rng = random.Random(13)
    invoices = [row[0] for row in conn.execute("SELECT number FROM invoices WHERE company_id = ?", (company,))]
    names = [row[0] for row in conn.execute("SELECT name FROM companies WHERE id % 97 = 0")]
    ids = [row[0] for row in conn.execute("SELECT id FROM companies WHERE id % 53 = 0")]
    conn.close()
    return data, {"email": email, "invoices": invoices,
                  "searches": [" ".join(n.split()[:2])[:-2] for n in rng.sample(names, 200)],
                  "companies": rng.sample(ids, 200)}


def _customer(conn) -> tuple[int, str]:
    """An owner of a company without a saved card and with many invoices (sampled: no full sort)."""
    best = None
    for company, email in conn.execute(
            "SELECT c.id, u.email FROM companies c JOIN users u ON u.company_id = c.id AND u.role = 'owner' "
            "WHERE c.paytr_ctoken IS NULL AND c.id % 211 = 0"):
        count = conn.execute("SELECT count(*) FROM invoices WHERE company_id = ?", (company,)).fetchone()[0]
        if best is None or count > best[0]:
            best = (count, company, email)
    return best[1], best[2]


class Sampler(threading.Thread):
    """Reads /proc/PID/status every 100 ms; keeps the peak of each figure."""

    FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, dict.fromkeys(self.FIELDS, 0), threading.Event()
        self.last = dict(self.peak)

    def read(self) -> dict:
        values = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in self.FIELDS:
                    values[name] = int(rest.split()[0])
        return values

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                self.last = self.read()
            except OSError:
                return
            for name, value in self.last.items():
                self.peak[name] = max(self.peak[name], value)


def connections(pid: int, database: Path) -> int:
    """Open descriptors on the database file: one per SQLite connection."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(database):
                count += 1
        except OSError:
            pass
    return count


async def login(base: str, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=60.0, limits=httpx.Limits(max_connections=4))
    page = await client.get("/auth/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = await client.post("/auth/login", data={"csrf_token": token, "email": email, "password": PASSWORD})
    assert answer.status_code == 303, (email, answer.status_code, answer.text[:300])
    return client


async def load(base: str, urls: dict, seconds: float, clients: int, abandoners: int, on_sample) -> dict:
    staff = await login(base, STAFF)
    customer = await login(base, urls["email"])
    rng = random.Random(5)
    hx = {"HX-Request": "true"}
    kinds = {
        "staff home": lambda: (staff, "/admin/", None),
        "staff search": lambda: (staff, "/admin/?q=" + rng.choice(urls["searches"]), hx),
        "staff customer page": lambda: (staff, f"/admin/companies/{rng.choice(urls['companies'])}", None),
        "dashboard": lambda: (customer, "/billing/", None),
        "invoice": lambda: (customer, f"/billing/invoices/{rng.choice(urls['invoices'])}", None),
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: dict[str, int] = {}
    abandoned = [0]
    deadline = time.monotonic() + seconds

    async def client(number: int) -> None:
        order = list(kinds)
        i = number
        while time.monotonic() < deadline:
            kind = order[i % len(order)]
            i += 1
            who, path, headers = kinds[kind]()
            started = time.perf_counter()
            try:
                response = await who.get(path, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status == 200:
                times[kind].append((time.perf_counter() - started) * 1000)
            else:
                errors[f"{kind}: {status}"] = errors.get(f"{kind}: {status}", 0) + 1

    async def abandoner() -> None:
        # Its own connection each time, closed after 50 ms: a search box whose next keystroke won.
        cookies = staff.cookies
        while time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=base, cookies=cookies, timeout=0.05) as quitter:
                try:
                    await quitter.get(rng.choice(["/admin/", "/admin/?q=" + rng.choice(urls["searches"])]))
                except httpx.TimeoutException:
                    abandoned[0] += 1
            await asyncio.sleep(0.05)

    async def sample() -> None:
        while time.monotonic() < deadline:
            on_sample()
            await asyncio.sleep(1)

    await asyncio.gather(*(client(n) for n in range(clients)), *(abandoner() for _ in range(abandoners)), sample())
    await staff.aclose()
    await customer.aclose()
    return {"times": times, "errors": errors, "abandoned": abandoned[0]}


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run_one(data: Path, urls: dict, threads: int, args) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data), "BASE_URL": base,
           "BILLING_SCHEDULER": "0", "DB_THREADS": str(threads), "PAYTR_RECURRING": "0"}
    if args.cache_mb is not None:
        env["DB_CACHE_MB"] = str(args.cache_mb)
    if args.mmap_mb is not None:
        env["DB_MMAP_MB"] = str(args.mmap_mb)
    log = WORK / f"server-{threads}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "main.py", "--port", str(port)], cwd=args.server_root, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/auth/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        sampler = Sampler(server.pid)
        sampler.start()
        database = (data / "billing.sqlite3").resolve()
        most = [0]

        def on_sample():
            most[0] = max(most[0], connections(server.pid, database))

        started = sampler.read()
        result = asyncio.run(load(base, urls, args.seconds, args.clients, args.abandoners, on_sample))
        time.sleep(1)
        sampler.stopping.set()
        sampler.join()
        after = sampler.read()
        stopped = sum(1 for line in log.read_text(errors="replace").splitlines() if "the client went away" in line)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    mib = lambda kib: kib / 1024  # noqa: E731
    peak = sampler.peak
    print(f"\n{args.server_root}: DB_THREADS={threads} (cache {env.get('DB_CACHE_MB', 'default')} MiB, mmap "
          f"{env.get('DB_MMAP_MB', 'default')} MiB), {args.clients} clients + {args.abandoners} abandoning, "
          f"{args.seconds:.0f} s")
    print(f"  RSS at start {mib(started['VmRSS']):6.0f} MiB; peak {mib(peak['VmRSS']):6.0f} MiB (VmHWM "
          f"{mib(peak['VmHWM']):.0f}; private RssAnon {mib(peak['RssAnon']):.0f}, file-backed RssFile "
          f"{mib(peak['RssFile']):.0f}); after {mib(after['VmRSS']):.0f} MiB   "
          f"[{'ok' if mib(peak['VmHWM']) < TARGET_MB else 'OVER'} < {TARGET_MB} MB]")
    print(f"  threads: peak {peak['Threads']}; database connections (open fds): peak {most[0]}")
    print(f"  abandoned requests: {result['abandoned']}, reads stopped by the server: {stopped}")
    for kind, values in result["times"].items():
        print(f"  {kind:<22} n {len(values):5}   p50 {percentile(values, .5):8.1f} ms   "
              f"p99 {percentile(values, .99):8.1f} ms")
    if result["errors"]:
        print("  not 200:", ", ".join(f"{k} x{v}" for k, v in sorted(result["errors"].items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=console_seed.DEFAULT_DIR)
    parser.add_argument("--threads", type=int, nargs="+", default=[4])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--abandoners", type=int, default=2)
    parser.add_argument("--cache-mb", type=int)
    parser.add_argument("--mmap-mb", type=int)
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="the checkout whose main.py to run (another branch, to compare)")
    parser.add_argument("--keep", action="store_true", help="keep the copy in /tmp/memory")
    args = parser.parse_args()
    if not (args.data / "billing.sqlite3").is_file():
        sys.exit(f"no database at {args.data}: build it with python benchmarks/console.py first")
    try:
        data, urls = prepare(args.data)
        print(f"{data / 'billing.sqlite3'} ({(data / 'billing.sqlite3').stat().st_size / 2**20:,.0f} MiB copy); "
              f"customer {urls['email']} with {len(urls['invoices'])} invoices; {os.cpu_count()} cores")
        for threads in args.threads:
            run_one(data, urls, threads, args)
    finally:
        if not args.keep and WORK.exists():
            shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
