"""JSON API throughput against a bare Starlette endpoint, in one run (the callback benchmark's method).

    .venv/bin/python benchmarks/api.py [--customers 100000] [--seconds 10] [--connections 16]
                                       [--phases entitlements]

Seeds `--customers` trialing customers straight into SQLite, creates an API key, then drives
the bare endpoint (benchmarks/bare_app.py) and the real app (pinned to CPU 0; the load
generator runs on CPU 1) with the same load: authenticated GETs of
/api/v1/customers/{id}/entitlements for random customers. Prints req/s, p50, p99 and the
app/bare ratio, then the server time with one connection (no queueing: the p50 is what one
request costs the server plus a loopback round trip).

`--phases entitlements,webhooks` adds the webhook fan-out (benchmarks/webhooks.py): 10,000
events delivered to a local receiver that verifies every signature, alone and beside an endpoint
that never answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402
from benchmarks.callbacks import LOAD_CPU, free_port, row, start_server, stop  # noqa: E402
from billing import clock, migrations, settings as settings_module  # noqa: E402
from billing.api import keys  # noqa: E402
from billing.db import Store, write  # noqa: E402

TARGET_RATIO, TARGET_P50_MS = 0.5, 2.0


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    env: dict
    settings: settings_module.Settings
    key: str
    customers: int
    lines: list[str] = field(default_factory=list)


def seed(path: Path, count: int, settings) -> str:
    """`count` companies with an owner and a trial, as registration leaves them; returns a write key."""
    store = Store(path)
    db = store.db()
    with write(db):
        migrations.apply(db)
    now = "2026-11-27T09:00:00Z"
    trial_end = "2026-12-11T09:00:00Z"
    with write(db):
        db.conn.executemany("INSERT INTO companies (id, name, timezone, created_at, external_id) VALUES (?, ?, ?, ?, ?)",
                            ((i, f"Şirket {i}", "Europe/Istanbul", now, f"host_{i}") for i in range(1, count + 1)))
        db.conn.executemany(
            "INSERT INTO users (company_id, email, name, password_hash, role, created_at, password_changed_at) "
            "VALUES (?, ?, ?, '!none', 'owner', ?, ?)",
            ((i, f"owner{i}@example.com", f"Kişi {i}", now, now) for i in range(1, count + 1)))
        db.conn.executemany(
            "INSERT INTO subscriptions (company_id, plan, status, trial_ends_at, created_at, updated_at) "
            "VALUES (?, 'starter', 'trialing', ?, ?, ?)", ((i, trial_end, now, now) for i in range(1, count + 1)))
    _row, key = keys.create(db, clock.utcnow(), settings, "benchmark")
    store.close()
    return key


def drive(port: int, paths, key: str, connections: int, seconds: float) -> loadgen.Result:
    headers = {"Authorization": f"Bearer {key}"}
    requests = (loadgen.build_get("127.0.0.1", port, path, headers) for path in paths)
    return asyncio.run(loadgen.run("127.0.0.1", port, requests, connections, seconds, ok_body=None))


def entitlements(ctx: Context) -> None:
    rng = random.Random(8)

    def paths():
        while True:
            yield f"/api/v1/customers/cus_{rng.randint(1, ctx.customers)}/entitlements"

    results = {}
    port = free_port()
    bare = start_server([sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--port", str(port)],
                        ctx.env, port, ctx.workdir / "bare.log")
    try:
        drive(port, paths(), ctx.key, 4, 1.0)  # warm-up
        results["bare entitlements"] = drive(port, paths(), ctx.key, ctx.args.connections, ctx.args.seconds)
        results["bare, one connection"] = drive(port, paths(), ctx.key, 1, ctx.args.seconds / 2)
    finally:
        stop(bare)
    port = free_port()
    app = start_server([sys.executable, "main.py", "--port", str(port)], ctx.env, port, ctx.workdir / "app.log")
    try:
        drive(port, paths(), ctx.key, 4, 1.0)
        results["app entitlements"] = drive(port, paths(), ctx.key, ctx.args.connections, ctx.args.seconds)
        results["app, one connection"] = drive(port, paths(), ctx.key, 1, ctx.args.seconds / 2)
    finally:
        stop(app)

    ctx.lines.append(f"{'phase':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'not 2xx':>7}")
    for label, result in results.items():
        ctx.lines.append(row(label, result))
    app_r, bare_r = results["app entitlements"], results["bare entitlements"]
    ratio = app_r.rate / bare_r.rate
    p50 = results["app, one connection"].percentile(50) * 1000
    unexpected = {s: n for s, n in app_r.statuses.items() if s != 200}
    ctx.lines.append(f"entitlements: app/bare throughput {ratio:.2f} (target ≥ {TARGET_RATIO}), server time p50 "
                     f"{p50:.2f} ms with one connection (target < {TARGET_P50_MS} ms), {ctx.customers:,} customers"
                     + (f"; unexpected statuses {unexpected}" if unexpected else ""))


def webhook_fanout(ctx: Context) -> None:
    """10,000 events to a verifying receiver, alone and beside an endpoint that never answers
    (benchmarks/webhooks.py, on its own database)."""
    from benchmarks import webhooks as fanout

    alone = fanout.run(10_000, with_dead_endpoint=False)
    beside = fanout.run(10_000, with_dead_endpoint=True)
    ctx.lines.append(f"webhooks: {alone['events']:,} delivered and verified in {alone['seconds']:.1f} s "
                     f"({alone['events'] / alone['seconds']:,.0f}/s; target 10,000 within 60 s), "
                     f"{alone['failures']} rejected; beside a dead endpoint {beside['seconds']:.1f} s "
                     f"({beside['seconds'] / alone['seconds']:.2f}x the time alone)")


PHASES = {"entitlements": entitlements, "webhooks": webhook_fanout}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--phases", default="entitlements", help=f"comma-separated, of: {', '.join(PHASES)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := [p for p in chosen if p not in PHASES]:
        raise SystemExit(f"unknown phases: {', '.join(unknown)}")
    if os.cpu_count() < 2:
        raise SystemExit("needs two CPUs: one for the server, one for the load")
    os.sched_setaffinity(0, {LOAD_CPU})

    workdir = Path(tempfile.mkdtemp(prefix="billing-api-bench-"))
    env = {**os.environ, "BILLING_ENV": "development", "BILLING_DATA_DIR": str(workdir / "data"),
           "BILLING_SCHEDULER": "0", "PAYTR_API_BASE": "http://127.0.0.1:9",
           # The limiter still runs on every request; its figure is raised so it measures the cost, not the cap.
           "API_RATE_PER_SECOND": "1000000", "API_RATE_BURST": "1000000"}
    settings = settings_module.load(env, env_file=None)
    print(f"seeding {args.customers:,} customers …", flush=True)
    started = time.perf_counter()
    key = seed(settings.database_path, args.customers, settings)
    print(f"seeded in {time.perf_counter() - started:.1f} s; {args.connections} connections, {args.seconds:g} s per "
          f"phase; server on CPU 0, load on CPU {LOAD_CPU}", flush=True)
    ctx = Context(args=args, workdir=workdir, env=env, settings=settings, key=key, customers=args.customers)
    for phase in chosen:
        PHASES[phase](ctx)
    print()
    print("\n".join(ctx.lines))
    if args.keep:
        print(f"data kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
