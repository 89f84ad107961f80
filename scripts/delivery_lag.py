"""Measure outbound postback lag: conversion committed → first delivery attempt.

Starts a real server (SQLite in a temporary directory, or PostgreSQL with --postgres, from
CLICKTRAIL_TEST_POSTGRES_URL) and a local receiver answering 200 (uvicorn, in a process of its own),
records conversions at a fixed rate, then reads each delivery's lag from the database (its first
attempt's time minus its creation time, both written by the server's clock) and prints p50/p95/p99
with the rates achieved. Two ways to record the conversions:

- `--via http` (default): concurrent postbacks to the server's /postback, as merchants send them;
- `--via intake`: this script records them itself through the postback intake on the same database,
  group-committed as the server does, as another node would: the server only delivers. On PostgreSQL the
  intake's NOTIFY wakes the server's dispatcher; SQLite has no such channel, so the server polls
  (every 50 ms in this mode) and the lag includes that.

    PYTHONPATH=. .venv/bin/python scripts/delivery_lag.py --rate 1000 --seconds 5 [--postgres]
        [--via intake] [--workers 2] [--concurrency N]
    PYTHONPATH=. .venv/bin/python scripts/delivery_lag.py --backlog 2000 [--postgres]   # drain rate

Keep runs short on a shared machine; everything listens on 127.0.0.1.
"""

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from sqlalchemy import create_engine, text
from tests.support import Tracker, codec, fresh_database, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_request import cpu_seconds  # the server process tree's CPU, from /proc

from clicktrail.catalog.cache import CatalogCache
from clicktrail.conversions.decision import Outcome
from clicktrail.conversions.intake import PostbackIntake, RawPostback
from clicktrail.delivery.wakeup import QueuedBell
from clicktrail.storage.batch import GroupCommitWriter, Staged
from clicktrail.storage.database import Database
from clicktrail.types import utc_now

Load = Callable[[list[str], float, float], tuple[int, int, float]]


def _receive(port: "Synchronized[int]", calls: "Synchronized[int]", stop: Event) -> None:
    """A receiver that answers 200 and counts: a bare ASGI app on uvicorn, so that at a thousand
    postbacks a second the receiver is not what is measured (tests/receivers.py threads are not)."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        with calls.get_lock():
            calls.value += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        port.value = listening.getsockname()[1]
        config = uvicorn.Config(app, fd=listening.fileno(), log_level="warning", lifespan="off")
        server = uvicorn.Server(config)

        def stop_when_told() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=stop_when_told, daemon=True).start()
        server.run()


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


async def _paced(total: int, rate: float, send: Callable[[int], Awaitable[bool]]) -> tuple[int, int, float]:
    accepted = failed = 0
    started = time.monotonic()

    async def one(n: int) -> None:
        nonlocal accepted, failed
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        ok = await send(n)
        accepted += ok
        failed += not ok

    await asyncio.gather(*(one(n) for n in range(total)))
    return accepted, failed, time.monotonic() - started


def over_http(base_url: str) -> Load:
    def load(click_ids: list[str], rate: float, seconds: float) -> tuple[int, int, float]:
        async def run() -> tuple[int, int, float]:
            # aiohttp, as the server's own sender: httpx needs ~1.4 ms of CPU a request, which at a
            # thousand postbacks a second would take most of a core from the server being measured.
            connector = aiohttp.TCPConnector(limit=200)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as client:

                async def send(n: int) -> bool:
                    params = {"click_id": click_ids[n % len(click_ids)], "txid": f"lag-{n}", "event": "sale"}
                    try:
                        async with client.get("/postback", params=params) as response:
                            await response.read()
                            return response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        return False

                return await _paced(int(rate * seconds), rate, send)

        return asyncio.run(run())

    return load


def through_intake(database_url: str, threads: int) -> Load:
    def load(click_ids: list[str], rate: float, seconds: float) -> tuple[int, int, float]:
        database = Database(_sqlalchemy_url(database_url), pool_size=threads)
        cache = CatalogCache(database)
        cache.reload()
        bell = QueuedBell(database, listen=False)
        intake = PostbackIntake(database, codec(), lambda: cache.snapshot, utc_now, bell.ring)

        # The server's own shape: postbacks group-committed, many per transaction.
        writer: GroupCommitWriter[RawPostback, Outcome] = GroupCommitWriter(
            lambda raws: Staged(intake.handle_batch(raws)), batch_size=500, queue_limit=1_000_000, name="lag"
        )

        async def record(n: int) -> bool:
            params = {"click_id": click_ids[n % len(click_ids)], "txid": f"lag-{n}", "event": "sale"}
            return (await writer.write(RawPostback("GET", params, "127.0.0.1"))).conversion_id is not None

        async def run() -> tuple[int, int, float]:
            await bell.start()
            try:
                return await _paced(int(rate * seconds), rate, record)
            finally:
                writer.close()
                await bell.stop()

        try:
            return asyncio.run(run())
        finally:
            database.dispose()

    return load


def _timestamp(value: object) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.timestamp()


def _first_attempts(url: str) -> list[tuple[object, object]]:
    """(created, first attempted) of every delivery that was attempted."""
    engine = create_engine(_sqlalchemy_url(url))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT d.created_at, min(a.attempted_at) FROM deliveries d "
                "JOIN delivery_attempts a ON a.delivery_id = d.id GROUP BY d.id, d.created_at"
            )
        ).all()
    engine.dispose()
    return [(row[0], row[1]) for row in rows]


def _drain(
    url: str,
    directory: Path,
    backlog: int,
    load: Load,
    click_ids: list[str],
    env: dict[str, str],
    workers: int,
    calls: "Synchronized[int]",
) -> int:
    accepted, _, elapsed = load(click_ids, 1e9, backlog / 1e9)
    print(f"{accepted} conversions queued in {elapsed:.1f}s with no dispatcher running")
    started = time.monotonic()
    server = start_server(url, directory, workers=workers, extra_env=env)
    try:
        deadline = time.monotonic() + 120
        while not calls.value and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu, first = cpu_seconds(server.process.pid), calls.value
        while calls.value < accepted and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = cpu_seconds(server.process.pid) - cpu
    finally:
        server.stop()
    attempted = sorted(_timestamp(row[1]) for row in _first_attempts(url))
    span = attempted[-1] - attempted[0]
    print(
        f"a delivering server ({workers} worker(s), concurrency "
        f"{env['CLICKTRAIL_DELIVERY_CONCURRENCY'] or 'default'}) "
        f"made {len(attempted)} first attempts in {span:.1f}s = {len(attempted) / span:.0f}/s "
        f"({calls.value} received; {time.monotonic() - started:.1f}s including its start); "
        f"server CPU {cpu * 1e6 / max(calls.value - first, 1):.0f} µs per delivery"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000, help="conversions per second")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--via", choices=("http", "intake"), default="http")
    parser.add_argument("--threads", type=int, default=8, help="--via intake: database connections")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, help="CLICKTRAIL_DELIVERY_CONCURRENCY (default: the server's own)"
    )
    parser.add_argument("--postgres", action="store_true", help="use CLICKTRAIL_TEST_POSTGRES_URL")
    parser.add_argument("--no-delivery", action="store_true", help="baseline: conversions, no dispatcher")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="instead: record this many conversions with no dispatcher running, then start a delivering "
        "server and time how fast it drains them (the dispatcher's throughput, apart from the intake)",
    )
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"

    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(fresh_database(backend, directory))
        port, calls, stop = (
            multiprocessing.Value("i", 0),
            multiprocessing.Value("i", 0),
            multiprocessing.Event(),
        )
        receiving = multiprocessing.Process(target=_receive, args=(port, calls, stop), daemon=True)
        receiving.start()
        stack.callback(receiving.join, 10)
        stack.callback(stop.set)
        while not port.value:
            time.sleep(0.01)
        env = {
            # The report feed as it runs in production, not every quarter second as in the tests.
            "CLICKTRAIL_ANALYTICS_LAG_SECONDS": "",
            "CLICKTRAIL_ANALYTICS_INTERVAL_SECONDS": "",
            "CLICKTRAIL_DELIVERY_ALLOW_HOSTS": "127.0.0.1",
            "CLICKTRAIL_DELIVERY_CONCURRENCY": str(args.concurrency or ""),  # empty: the default
        }
        if args.via == "intake" and backend == "sqlite":
            env["CLICKTRAIL_DELIVERY_POLL_SECONDS"] = "0.05"
        if args.no_delivery or args.backlog:
            env["CLICKTRAIL_DELIVERY_ENABLED"] = "false"
        server = start_server(url, directory, workers=args.workers, extra_env=env)
        stack.callback(server.stop)
        tracker = Tracker(server)
        stack.callback(tracker.close)
        receiver_url = f"http://127.0.0.1:{port.value}"
        source = tracker.create("sources", name="Lag", postback_url=f"{receiver_url}/pb?c={{conversion_id}}")
        offer = tracker.create("offers", name="Lag", url="https://m.example/?cid={click_id}")
        campaign = tracker.create("campaigns", name="Lag", source_id=source["id"], offer_id=offer["id"])
        click_ids = [tracker.click(campaign["key"]) for _ in range(50)]
        time.sleep(1.0)  # every worker's catalog knows the source

        if args.backlog:
            return _drain(url, directory, args.backlog, through_intake(url, args.threads), click_ids,
                          env | {"CLICKTRAIL_DELIVERY_ENABLED": "true"}, args.workers, calls)  # fmt: skip
        load = over_http(server.base_url) if args.via == "http" else through_intake(url, args.threads)
        accepted, failed, elapsed = load(click_ids, args.rate, args.seconds)
        deadline = time.monotonic() + 60
        while not args.no_delivery and calls.value < accepted and time.monotonic() < deadline:
            time.sleep(0.1)

        rows = _first_attempts(url)
        received = calls.value

    print(
        f"{'PostgreSQL' if args.postgres else 'SQLite'}, via {args.via}, {args.workers} worker(s), "
        f"concurrency {args.concurrency or 'default'}: {accepted} conversions recorded "
        f"({failed} refused/failed) in "
        f"{elapsed:.1f}s = {accepted / elapsed:.0f}/s (asked {args.rate:.0f}/s); "
        f"{received} postbacks received"
    )
    if not rows:
        print("no deliveries were attempted")
        return 0
    created = [_timestamp(row[0]) for row in rows]
    attempted = [_timestamp(row[1]) for row in rows]
    lags = sorted(a - c for c, a in zip(created, attempted, strict=True))
    span = max(attempted) - min(created)
    quantiles = statistics.quantiles(lags, n=100)
    print(
        f"first attempts: {len(lags)} in {span:.1f}s = {len(lags) / span:.0f}/s; "
        "lag conversion → first attempt: "
        f"p50 {quantiles[49] * 1000:.0f} ms, p95 {quantiles[94] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )
    # One line for bench/run.py to read.
    print(
        f"result: recorded_per_s={accepted / elapsed:.0f} attempted_per_s={len(lags) / span:.0f} "
        f"p50_ms={quantiles[49] * 1000:.0f} p99_ms={quantiles[98] * 1000:.0f} received={received} "
        f"recorded={accepted}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
