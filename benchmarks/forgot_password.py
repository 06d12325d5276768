"""Does "forgot password" take as long for an unknown address as for a known one?

    .venv/bin/python benchmarks/forgot_password.py [--rounds 300]

Times `accounts.request_password_reset` (lookup, one write transaction with its fsync, the
email only queued) for a known and an unknown address, interleaved so both see the same disk,
and prints the median and p90 of each. Each round uses a fresh client address and user, so no
cap kicks in. The web handler answers before it starts this work, so what remains of the
difference never shows in the answer's timing. Tests never time anything.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts, clock, migrations, settings as settings_module  # noqa: E402
from billing.db import Store, write  # noqa: E402

NOW = clock.parse("2026-12-11T09:00:00Z")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds
    directory = Path(tempfile.mkdtemp(prefix="forgot-bench-"))
    try:
        settings = settings_module.load({"BILLING_DATA_DIR": str(directory), "BILLING_SCHEDULER": "0"}, env_file=None)
        store = Store(settings.database_path)
        db = store.db()
        with write(db):
            migrations.apply(db)
        password_hash = accounts.hash_password("a long benchmark password")
        for i in range(rounds):
            accounts.register(db, NOW, settings, company_name=f"Firma {i}", name=f"Kişi {i}",
                              email=f"known{i}@example.com", password_hash=password_hash)
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        for i in range(rounds):
            now = NOW + timedelta(seconds=i)
            for kind in ("known", "unknown") if i % 2 else ("unknown", "known"):
                started = time.perf_counter()
                accounts.request_password_reset(db, now, settings, f"{kind}{i}@example.com", f"10.{i // 250}.{i % 250}.1")
                timings[kind].append((time.perf_counter() - started) * 1000)
        store.close()
        for kind, values in timings.items():
            values.sort()
            print(f"{kind:8} median {statistics.median(values):.3f} ms   p90 {values[int(len(values) * 0.9)]:.3f} ms")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
