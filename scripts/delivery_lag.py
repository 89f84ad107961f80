"""Measure outbound postback lag: conversion committed → first delivery attempt.

Starts a real server (SQLite in a temporary directory, or PostgreSQL when --postgres names an admin URL),
a local receiver answering 200, sends postbacks at a fixed rate, then reads each delivery's lag from the
database (first attempt's time minus the delivery's creation time, both written by the server).

    PYTHONPATH=. .venv/bin/python scripts/delivery_lag.py --rate 1000 --seconds 10 [--workers 2]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from tests.receivers import Receiver
from tests.support import Tracker, fresh_database, start_server


async def fire(base_url: str, click_ids: list[str], rate: float, seconds: float) -> tuple[int, int, float]:
    total = int(rate * seconds)
    accepted = failed = 0
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        started = time.monotonic()

        async def one(n: int) -> None:
            nonlocal accepted, failed
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            params = {"click_id": click_ids[n % len(click_ids)], "txid": f"lag-{n}", "event": "sale"}
            try:
                response = await client.get("/postback", params=params)
                accepted += response.status_code == 200
                failed += response.status_code != 200
            except httpx.HTTPError:
                failed += 1

        await asyncio.gather(*(one(n) for n in range(total)))
        elapsed = time.monotonic() - started
    return accepted, failed, elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000, help="postbacks per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="use CLICKTRAIL_TEST_POSTGRES_URL")
    parser.add_argument("--no-delivery", action="store_true", help="baseline: postbacks with no dispatcher")
    args = parser.parse_args()

    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(fresh_database("postgres" if args.postgres else "sqlite", directory))
        receiver = Receiver()
        stack.callback(receiver.close)
        env = {"CLICKTRAIL_DELIVERY_ALLOW_HOSTS": "127.0.0.1", "CLICKTRAIL_DELIVERY_CONCURRENCY": "64"}
        if args.no_delivery:
            env["CLICKTRAIL_DELIVERY_ENABLED"] = "false"
        server = start_server(url, directory, workers=args.workers, extra_env=env)
        stack.callback(server.stop)
        tracker = Tracker(server)
        stack.callback(tracker.close)
        source = tracker.create("sources", name="Lag", postback_url=f"{receiver.url}/pb?c={{conversion_id}}")
        offer = tracker.create("offers", name="Lag", url="https://m.example/?cid={click_id}")
        campaign = tracker.create("campaigns", name="Lag", source_id=source["id"], offer_id=offer["id"])
        click_ids = [tracker.click(campaign["key"]) for _ in range(50)]
        time.sleep(1.0)  # every worker's catalog knows the source

        accepted, failed, elapsed = asyncio.run(fire(server.base_url, click_ids, args.rate, args.seconds))
        deadline = time.monotonic() + 120
        while len(receiver.calls) < accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)

        sqlalchemy_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = create_engine(sqlalchemy_url)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT d.created_at, min(a.attempted_at) FROM deliveries d "
                    "JOIN delivery_attempts a ON a.delivery_id = d.id GROUP BY d.id, d.created_at"
                )
            ).all()
        engine.dispose()

    def as_datetime(value: object) -> float:
        from datetime import datetime

        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.timestamp()

    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"{backend}, {args.workers} worker(s): {accepted} postbacks accepted ({failed} refused/failed) "
        f"in {elapsed:.1f}s = {accepted / elapsed:.0f}/s; {len(receiver.calls)} postbacks received"
    )
    lags = sorted(as_datetime(attempted) - as_datetime(created) for created, attempted in rows)
    if not lags:
        print("no deliveries were attempted")
        return 0
    quantiles = statistics.quantiles(lags, n=100)
    print(
        f"lag conversion → first attempt over {len(lags)} deliveries: p50 {quantiles[49] * 1000:.0f} ms, "
        f"p95 {quantiles[94] * 1000:.0f} ms, p99 {quantiles[98] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
