#!/usr/bin/env python3
"""How long rescheduling a paused or resumed source's backlog holds the database, one claim's share at a
time: `.venv/bin/python scripts/outbox_moves.py [--jobs 50000] [--postgres] [--per-claim 1000]`.

Fills the outbox of a fresh database (SQLite in a temporary directory, or with --postgres a fresh
database on CLICKTRAIL_TEST_POSTGRES_URL's server) with --jobs pending deliveries of one source, all
due, and times, each in transactions of its own as the dispatcher's claims run them: a claim of 64
jobs for other sources while the whole backlog is still due; moving the backlog past the probe
(`defer_source`, the source tripped), in steps of --per-claim until none is left; making it due
again (`make_source_due`, the source resumed) in the same steps. `--per-claim 0` moves everything in
one statement, as before 2026-12-06. Prints the number of transactions, the longest and median, and
the total. On SQLite the claim holds the write turn every click and postback waits for, so the
longest transaction is the stall a trip or a resume causes. Touches 127.0.0.1 only.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, insert

from clicktrail.storage import delivery_store
from clicktrail.storage.database import Database
from clicktrail.storage.schema import deliveries

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_database import add_postgres_option, scratch_database

SOURCE = 1
LEASE = "outbox-moves"
EVERYTHING = 10**9


def _fill(database: Database, jobs: int, now: datetime) -> None:
    rows = [
        {"created_at": now, "conversion_id": f"{n:026d}", "click_id": f"{n:032d}", "source_id": SOURCE,
         "status": "pending", "conversion_status": "approved", "attempts": 1,
         "next_attempt_at": now - timedelta(seconds=1)}
        for n in range(jobs)
    ]  # fmt: skip
    with database.begin() as connection:
        for start in range(0, jobs, 5000):
            connection.execute(insert(deliveries), rows[start : start + 5000])


def _timed(database: Database, step: Callable[[Connection], bool]) -> list[float]:
    """Run `step` in transactions of its own until it says nothing is left; each one's milliseconds."""
    spent = []
    left = True
    while left:
        started = time.perf_counter()
        with database.begin() as connection:
            left = step(connection)
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--per-claim", type=int, default=delivery_store.MOVED_PER_CLAIM)
    add_postgres_option(parser)
    args = parser.parse_args()
    limit = args.per_claim or EVERYTHING
    with scratch_database(parser, args.postgres, "clicktrail-outbox-") as database:
        now = datetime.now(UTC)
        _fill(database, args.jobs, now)
        probe_at, resumed_at = now + timedelta(seconds=30), now + timedelta(seconds=1)
        steps: dict[str, Callable[[Connection], bool]] = {
            "a claim of 64 for other sources, the backlog due": lambda connection: bool(
                delivery_store.claim_due(
                    connection,
                    now=now,
                    limit=64,
                    lease_until=now + timedelta(minutes=1),
                    token=LEASE,
                    excluded_sources=[SOURCE],
                )
            ),
            "paused: moved past the probe": lambda connection: delivery_store.defer_source(
                connection, SOURCE, probe_at, now, limit=limit
            ),
            "resumed: made due": lambda connection: delivery_store.make_source_due(
                connection, SOURCE, resumed_at, limit=limit
            ),
        }
        print(f"{'SQLite' if not args.postgres else 'PostgreSQL'}, {args.jobs:,} pending jobs of one source, "
              f"{args.per_claim or 'all'} per claim")  # fmt: skip
        for name, step in steps.items():
            spent = _timed(database, step)
            print(
                f"{name}: {len(spent)} transaction(s), longest {max(spent):.1f} ms, "
                f"median {statistics.median(spent):.1f} ms, total {sum(spent):.0f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
