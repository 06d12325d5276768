"""Callback throughput of the real app against a bare Starlette endpoint, in one run.

    .venv/bin/python benchmarks/callbacks.py [--payments 200000] [--seconds 10] [--connections 16]

Seeds pending payments, then drives each server (pinned to CPU 0; the load
generator runs on CPU 1) with the same load: valid, distinct success callbacks
for different orders, then a duplicate storm of callbacks already applied. The
app keeps synchronous=FULL: every OK follows a durable commit. Prints req/s,
p50, p99 and the app/bare ratios, and checks what the app recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402
from billing import migrations, settings as settings_module  # noqa: E402
from billing.db import Store, write  # noqa: E402
from billing.paytr import protocol  # noqa: E402

SERVER_CPU, LOAD_CPU = 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(path: Path, count: int) -> list[str]:
    """`count` trialing companies, each with one pending checkout. Returns their merchant_oids."""
    store = Store(path)
    db = store.db()
    with write(db):
        migrations.apply(db)
    now = "2026-11-27T09:00:00Z"
    trial_end = "2026-12-11T09:00:00Z"
    oids = [f"BENCH{i:07d}" for i in range(count)]
    with write(db):
        db.conn.executemany("INSERT INTO companies (id, name, timezone, created_at) VALUES (?, ?, ?, ?)",
                            ((i + 1, f"Şirket {i}", "Europe/Istanbul", now) for i in range(count)))
        db.conn.executemany(
            "INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, created_at, updated_at) "
            "VALUES (?, 'starter', 'trialing', ?, ?, ?)", ((i + 1, trial_end, now, now) for i in range(count)))
        db.conn.executemany(
            "INSERT INTO payments (company_id, merchant_oid, kind, plan, amount, currency, test_mode, email, "
            "description, reconcile_at, created_at, updated_at) "
            "VALUES (?, ?, 'subscribe', 'starter', 2900, 'USD', 1, ?, ?, ?, ?, ?)",
            # the line a real checkout writes (payments.start_checkout)
            ((i + 1, oid, f"owner{i}@example.com", "Starter plan, 11.12.2026 – 11.01.2027", now, now, now)
             for i, oid in enumerate(oids)))
    store.close()
    return oids


def callback_bodies(oids: list[str], key: str, salt: str) -> list[bytes]:
    return [urlencode(protocol.callback_form(merchant_oid=oid, status="success", total_amount=2900, key=key,
                                             salt=salt, currency="USD", test_mode="1", payment_amount="2900",
                                             payment_type="card", installment_count="0")).encode()
            for oid in oids]


def start_server(command: list[str], env: dict, port: int, log: Path, cpu: int = SERVER_CPU) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def drive(port: int, bodies, connections: int, seconds: float) -> loadgen.Result:
    requests = (loadgen.build_request("127.0.0.1", port, "/billing/callback", body) for body in bodies)
    return asyncio.run(loadgen.run("127.0.0.1", port, requests, connections, seconds))


def row(label: str, result: loadgen.Result) -> str:
    errors = sum(n for status, n in result.statuses.items() if status != 200)
    return (f"{label:<34} {result.rate:>9.0f} {result.percentile(50) * 1000:>8.2f} "
            f"{result.percentile(99) * 1000:>8.2f} {result.count:>9} {errors + result.bodies_not_ok:>7}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs two CPUs: one for the server, one for the load")
    os.sched_setaffinity(0, {LOAD_CPU})

    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-"))
    data = workdir / "data"
    env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(data), "BILLING_SCHEDULER": "0",
           # a PayTR that is never called: the benchmark only sends callbacks
           "PAYTR_API_BASE": "http://127.0.0.1:9"}
    settings = settings_module.load(env, env_file=None)
    print(f"seeding {args.payments:,} pending payments …", flush=True)
    started = time.perf_counter()
    oids = seed(settings.database_path, args.payments)
    bodies = callback_bodies(oids, str(settings.paytr_merchant_key), str(settings.paytr_merchant_salt))
    print(f"seeded in {time.perf_counter() - started:.1f} s; {args.connections} connections, {args.seconds:g} s "
          f"per phase; server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}", flush=True)

    results = {}
    port = free_port()
    bare = start_server([sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--port", str(port)],
                        env, port, workdir / "bare.log")
    try:
        results["bare distinct"] = drive(port, bodies, args.connections, args.seconds)
        results["bare duplicates"] = drive(port, itertools.cycle(bodies[:2000]), args.connections, args.seconds)
    finally:
        stop(bare)

    port = free_port()
    app = start_server([sys.executable, "main.py", "--port", str(port)], env, port, workdir / "app.log")
    try:
        results["app distinct"] = drive(port, bodies, args.connections, args.seconds)
        applied = results["app distinct"].count
        results["app duplicates"] = drive(port, itertools.cycle(bodies[:min(2000, applied)]), args.connections,
                                          args.seconds)
    finally:
        stop(app)

    print()
    print(f"{'phase':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'not OK':>7}")
    for label, result in results.items():
        print(row(label, result))
    for phase in ("distinct", "duplicates"):
        app_r, bare_r = results[f"app {phase}"], results[f"bare {phase}"]
        print(f"{phase:<11} app/bare throughput {app_r.rate / bare_r.rate:.2f}   "
              f"p99 app/bare {app_r.percentile(99) / bare_r.percentile(99):.2f}")

    db = sqlite3.connect(settings.database_path)
    succeeded = db.execute("SELECT count(*) FROM payments WHERE status = 'succeeded'").fetchone()[0]
    numbers = [r[0] for r in db.execute("SELECT sequence FROM invoices ORDER BY sequence")]
    sync = db.execute("PRAGMA synchronous").fetchone()[0]
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    gapless = numbers == list(range(1, len(numbers) + 1))
    print(f"\nrecorded: {succeeded:,} payments succeeded (OK answers to distinct callbacks: "
          f"{results['app distinct'].statuses.get(200, 0):,}), {len(numbers):,} invoices, numbers gapless: "
          f"{gapless}, integrity_check: {integrity}, benchmark connection synchronous={sync} "
          f"(the app sets FULL=2 on its own connections)")
    if args.keep:
        print(f"data kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
