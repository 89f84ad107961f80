#!/usr/bin/env python3
"""Paced clicks after a burst, run by run, with the report feed's CPU beside each run: does the feed's
catch-up show in the redirects' p99?

    .venv/bin/python scripts/feed_interference.py [--backend sqlite|postgres] [--delay-ms 8]
        [--runs 10] [--burst 5]

Starts `clicktrail serve` with its defaults (as `make bench` does) on a fresh database, sends
`--burst` closed-loop runs of 5 s (bench/clicks.lua, 128 connections), then `--runs` paced runs of
5 s (a mean pause of `--delay-ms` per connection) and prints each paced run's rate, p50 and p99 with
the CPU, in cores, that the workers, the report feed and PostgreSQL's processes used meanwhile. The
feed runs every 10 s, so some runs have it and some do not: compare the p99 of the two kinds.
Environment settings reach the server (`CLICKTRAIL_ANALYTICS_WORK_SHARE=1` to compare). Bounded in
time (about a minute and a half), 127.0.0.1 only.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402 -- the benchmark's own helpers (server, database, wrk)

RUN_SECONDS = 5


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def cpu_by_role(server: bench.Server) -> dict[str, float]:
    spent: dict[str, float] = {}
    for pid in server.processes():
        role = server.role(pid)
        spent[role] = spent.get(role, 0.0) + bench.process_cpu_seconds(pid)
    spent["postgres"] = sum(bench.process_cpu_seconds(pid) for pid in postgres_pids())
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--delay-ms", type=float, default=8.0, help="mean pause per connection in paced runs")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--burst", type=int, default=5, help="closed-loop runs of 5 s before the paced ones")
    args = parser.parse_args()
    script = str(bench.HERE / "clicks.lua")
    with (
        tempfile.TemporaryDirectory(prefix="clicktrail-feed-") as tmp,
        bench.database(args.backend, Path(tmp)) as url,
    ):
        path = f"/c/{bench.seed_campaign(url)}"
        server = bench.Server(url, Path(tmp), None)
        try:
            for number in range(args.burst):
                burst = bench.wrk(server.base_url, RUN_SECONDS, 128, 1, script, {"BENCH_PATH": path})
                print(f"burst {number + 1}: {burst.rate:,.0f}/s", flush=True)
            load = {"BENCH_PATH": path, "BENCH_DELAY_MS": str(args.delay_ms)}
            for number in range(args.runs):
                before, started = cpu_by_role(server), time.monotonic()
                paced = bench.wrk(server.base_url, RUN_SECONDS, 128, 1, script, load)
                after, elapsed = cpu_by_role(server), time.monotonic() - started
                cores = {role: (after.get(role, 0.0) - spent) / elapsed for role, spent in before.items()}
                workers = cores.get("worker", cores.get("serve", 0.0))
                print(
                    f"paced {number + 1}: {paced.rate:,.0f}/s p50 {paced.p50_ms:.2f} ms "
                    f"p99 {paced.p99_ms:.2f} ms; cores: workers {workers:.2f}, "
                    f"report feed {cores.get('report feed', 0.0):.2f}, postgres {cores['postgres']:.2f}",
                    flush=True,
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
