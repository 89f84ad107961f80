#!/usr/bin/env python3
"""How long a claim of 64 takes from an outbox whose statistics are stale, then after ANALYZE:
`.venv/bin/python scripts/claim_times.py [--jobs 4000] [--postgres] [--explain]`.

Fills a fresh database (SQLite in a temporary directory, or with --postgres a fresh database on
CLICKTRAIL_TEST_POSTGRES_URL's server) with --jobs pending deliveries, all due, two per conversion
for two sources in turn (so the in-order check keeps some and not others), in one burst into the
young table, as a burst of conversions fills it before autovacuum has analysed it. Then times five
claims of 64 (`delivery_store.claim_due`, each in its own transaction), runs ANALYZE, and times
five more. `--explain` prints PostgreSQL's plan of the first claim's statements (auto_explain,
reported to this client). On PostgreSQL a stale table once made the claim's in-order check a
nested loop over every pending job of a source (1.4 s a claim): this is the command that shows
whether a claim's plan still holds up. Touches 127.0.0.1 only.
"""

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, insert, text

from clicktrail.storage import delivery_store
from clicktrail.storage.database import Database
from clicktrail.storage.schema import conversions, deliveries

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_database import add_postgres_option, scratch_database


def _fill(database: Database, jobs: int, now: datetime) -> None:
    """Conversions and their jobs, the oldest due first; a conversion's two jobs for two sources."""
    conversion_rows = [
        {"conversion_id": f"{k:026d}", "created_at": now, "updated_at": now, "click_id": f"{k:032d}",
         "event": "sale", "txid": str(k), "status": "approved", "revenue": Decimal(1),
         "payout": Decimal(1), "currency": "USD", "cost": Decimal(0), "click_time": now,
         "campaign_id": 1, "offer_id": 1, "source_id": 1, "is_bot": False, "via": "postback"}
        for k in range((jobs + 1) // 2)
    ]  # fmt: skip
    job_rows = [
        {"created_at": now, "conversion_id": f"{n // 2:026d}", "click_id": f"{n // 2:032d}",
         "source_id": 1 + n % 3, "status": "pending", "conversion_status": "approved", "attempts": 0,
         "next_attempt_at": now - timedelta(seconds=jobs - n)}
        for n in range(jobs)
    ]  # fmt: skip
    with database.begin() as connection:
        connection.execute(insert(conversions), conversion_rows)
        connection.execute(insert(deliveries), job_rows)


def _explained(connection: Connection) -> None:
    """PostgreSQL's plans of this transaction's statements, printed as they run."""
    driver = connection.connection.driver_connection
    assert driver is not None  # a live connection's psycopg connection
    driver.add_notice_handler(lambda notice: print(notice.message_primary))
    connection.execute(text("LOAD 'auto_explain'"))
    for setting in ("log_min_duration = 0", "log_analyze = on", "log_level = notice"):
        connection.execute(text(f"SET LOCAL auto_explain.{setting}"))


def _claims(database: Database, now: datetime, token: str, explain: bool) -> tuple[list[float], int]:
    spent, claimed = [], 0
    for n in range(5):
        started = time.perf_counter()
        with database.begin() as connection:
            if explain and n == 0:
                _explained(connection)
            claimed += len(
                delivery_store.claim_due(
                    connection, now=now, limit=64, lease_until=now + timedelta(minutes=1), token=f"{token}{n}"
                )
            )
        spent.append((time.perf_counter() - started) * 1000)
    return spent, claimed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4000)
    add_postgres_option(parser)
    parser.add_argument("--explain", action="store_true", help="PostgreSQL's plan of the first claim")
    args = parser.parse_args()
    if args.explain and not args.postgres:
        parser.error("--explain is PostgreSQL's (auto_explain)")
    with scratch_database(parser, args.postgres, "clicktrail-claims-") as database:
        now = datetime.now(UTC)
        _fill(database, args.jobs, now)
        print(f"{'PostgreSQL' if args.postgres else 'SQLite'}, {args.jobs:,} due jobs, claims of 64 (ms)")
        for label, token in (("stale", "s"), ("analysed", "a")):
            if label == "analysed":
                with database.begin() as connection:
                    connection.execute(text("ANALYZE deliveries"))
            explain = args.explain and label == "stale"
            spent, claimed = _claims(database, now, token, explain)
            each = ", ".join(f"{ms:.1f}" for ms in spent)
            print(f"{label}: {each} (median {statistics.median(spent):.1f}); {claimed} jobs claimed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
