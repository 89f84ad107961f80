#!/usr/bin/env python3
"""Report timings on generated data: N clicks and M conversions spread over 90 days.

    .venv/bin/python scripts/bench_reports.py --clicks 1000000 --conversions 30000
    .venv/bin/python scripts/bench_reports.py --clicks 10000000 --conversions 300000
    .venv/bin/python scripts/bench_reports.py --clicks 1000000 --database-url postgresql://postgres@127.0.0.1/postgres

Generates the rows straight into a fresh row store (SQLite file or PostgreSQL database), runs the
feed into the analytics segments (timed), then times the reports the reports issue sets targets for,
in a fresh process so its peak memory is the report engine's own. Prints a Markdown table row set.
"""

import argparse
import hashlib
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from clicktrail.config import Settings
from clicktrail.ids import ClickIdCodec, mint_event_id
from clicktrail.reports.engine import DuckDbReports
from clicktrail.reports.feed import AnalyticsFeed
from clicktrail.reports.request import parse_report_request
from clicktrail.reports.segments import SegmentStore
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade

COUNTRIES = ["US", "GB", "DE", "FR", "IT", "ES", "BR", "MX", "IN", "ID", "JP", "CA", "AU", "NL", "PL", "TR",
             "RU", "UA", "VN", "TH", "PH", "EG", "NG", "ZA", "AR", "CO", "CL", "SE", "NO", "KR"]  # fmt: skip
DEVICES = ["mobile", "desktop", "tablet"]
OSES = ["Android", "iOS", "Windows", "macOS", "Linux", "ChromeOS"]
BROWSERS = ["Chrome", "Safari", "Firefox", "Edge", "Samsung Internet", "Opera"]
CLICK_SQL = (
    "INSERT INTO clicks (click_id, created_at, campaign_id, offer_id, source_id, sub1, sub2, external_id,"
    " cost, country, device_type, os, browser, is_bot, is_unique) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
CONVERSION_SQL = (
    "INSERT INTO conversions (conversion_id, created_at, updated_at, click_id, event, txid, status, revenue,"
    " payout, currency, click_time, campaign_id, offer_id, source_id, sub1, sub2, external_id, country)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def generate(database_url: str, clicks: int, conversions: int, days: int, now: datetime) -> float:
    rng = random.Random(42)
    codec = ClickIdCodec(hashlib.sha256(secrets.token_bytes(16)).digest())
    start = now - timedelta(days=days)
    span_ms = days * 86_400_000
    step = span_ms / clicks
    converting = set(rng.sample(range(clicks), conversions))
    began = time.perf_counter()
    is_pg = database_url.startswith("postgresql")
    if is_pg:
        pg = psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"))
        click_sql = CLICK_SQL.replace("?", "%s")
        conversion_sql = CONVERSION_SQL.replace("?", "%s")
    else:
        import sqlite3

        lite = sqlite3.connect(database_url.split(":///", 1)[1])
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=OFF")
    batch: list[tuple[object, ...]] = []
    conversion_batch: list[tuple[object, ...]] = []

    def flush() -> None:
        if is_pg:
            with pg.cursor() as cursor:
                cursor.executemany(click_sql, batch)
                if conversion_batch:
                    cursor.executemany(conversion_sql, conversion_batch)
            pg.commit()
        else:
            lite.executemany(CLICK_SQL, batch)
            if conversion_batch:
                lite.executemany(CONVERSION_SQL, conversion_batch)
            lite.commit()
        batch.clear()
        conversion_batch.clear()

    for n in range(clicks):
        moment = start + timedelta(milliseconds=n * step)
        click_id = codec.mint(moment)
        campaign = rng.randrange(1, 51)
        sub1 = f"placement-{rng.randrange(1000)}"
        country = COUNTRIES[min(int(rng.expovariate(0.15)), len(COUNTRIES) - 1)]
        naive = moment.replace(tzinfo=None)
        stamp = naive if is_pg else naive.isoformat(sep=" ")
        batch.append(
            (click_id, stamp, campaign, campaign % 20 + 1, campaign % 10 + 1, sub1,
             f"creative-{rng.randrange(50)}", f"ext-{n}", rng.choice((30_000, 50_000, 120_000)), country,
             rng.choice(DEVICES), rng.choice(OSES), rng.choice(BROWSERS), rng.random() < 0.03,
             rng.random() < 0.8)
        )  # fmt: skip
        if n in converting:
            converted = moment + timedelta(minutes=rng.randrange(1, 60 * 24))
            cstamp = (
                converted.replace(tzinfo=None) if is_pg else converted.replace(tzinfo=None).isoformat(sep=" ")
            )
            status = rng.choices(("approved", "pending", "rejected"), (85, 10, 5))[0]
            event = rng.choice(("lead", "sale"))
            conversion_batch.append(
                (mint_event_id(converted), cstamp, cstamp, click_id, event, f"tx-{n}", status,
                 rng.randrange(1_000_000, 100_000_000), 4_000_000, "USD", stamp, campaign, campaign % 20 + 1,
                 campaign % 10 + 1, sub1, None, f"ext-{n}", country)
            )  # fmt: skip
        if len(batch) >= 50_000:
            flush()
    if batch:
        flush()
    return time.perf_counter() - began


def time_reports(analytics: Path, now: datetime, runs: int) -> None:
    """Child process: the report timings and this process's peak memory, as key=value lines."""
    reports = DuckDbReports(SegmentStore(analytics))
    start = (now - timedelta(days=30)).date().isoformat()
    end = now.date().isoformat()
    for name, group_by in (("campaign", "campaign"), ("sub1_x_country", "sub1,country")):
        request = parse_report_request({"group_by": group_by, "from": start, "to": end}, today=now.date())
        timings = []
        for _ in range(runs):
            began = time.perf_counter()
            result = reports.run(request)
            timings.append(time.perf_counter() - began)
        print(f"{name}_median_ms={statistics.median(timings) * 1000:.0f}")
        print(f"{name}_rows={result.total_rows} {name}_clicks={result.totals['clicks']}")
    print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--conversions", type=int, default=None, help="default: 3%% of clicks")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to use instead of SQLite")
    parser.add_argument("--time-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    now = datetime(2026, 11, 23, tzinfo=UTC)
    if args.time_only:
        time_reports(args.time_only, now, args.runs)
        return
    conversions = args.conversions if args.conversions is not None else args.clicks * 3 // 100
    with tempfile.TemporaryDirectory(prefix="clicktrail-bench-") as directory:
        name = None
        if args.database_url:
            name = f"clicktrail_bench_{secrets.token_hex(4)}"
            with psycopg.connect(args.database_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = args.database_url.rsplit("/", 1)[0] + f"/{name}"
        else:
            url = f"sqlite:///{directory}/bench.db"
        try:
            settings = Settings(database_url=url)
            database = Database(settings.sqlalchemy_url)
            upgrade(database.engine)
            generated = generate(settings.sqlalchemy_url, args.clicks, conversions, args.days, now)
            analytics = Path(directory) / "analytics"
            began, cpu_began = time.perf_counter(), time.process_time()
            AnalyticsFeed(database, SegmentStore(analytics), lag=timedelta(0)).run_once(now)
            fed, fed_cpu = time.perf_counter() - began, time.process_time() - cpu_began
            database.dispose()
            backend = "PostgreSQL" if args.database_url else "SQLite"
            print(f"backend={backend} clicks={args.clicks} conversions={conversions} days={args.days}")
            # The feed's CPU (this process: its reads, the CSV, DuckDB's one thread), steadier than its time.
            print(f"generate_s={generated:.1f} feed_s={fed:.1f} feed_cpu_s={fed_cpu:.2f}")
            child = subprocess.run(
                [sys.executable, __file__, "--time-only", str(analytics), "--runs", str(args.runs)],
                capture_output=True, text=True, check=False, env=os.environ,
            )  # fmt: skip
            print(child.stdout, end="")
            if child.returncode != 0:
                print(child.stderr, file=sys.stderr)
                sys.exit(child.returncode)
        finally:
            if name is not None:
                with psycopg.connect(args.database_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
