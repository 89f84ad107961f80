#!/usr/bin/env python3
"""Click latency at a fixed pace, long enough to include the report feed's cycles, this checkout
against an earlier commit, in alternated pairs.

    flock /work/loadtest.lock .venv/bin/python scripts/steady_latency.py --base main [--pairs 2]
        [--delay-ms 25] [--warm-up 20] [--runs 3] [--seconds 10]

`make bench-quick` measures the p99 at ~70% of the maximum in 1-second runs, which a periodic pause
(the feed runs every 10 s and copies events older than 15 s) mostly misses. For each pair this
starts `clicktrail serve` (1 worker, a fresh SQLite file; the base from its commit's `src/` put first
on PYTHONPATH, as scripts/cpu_per_request.py does), drives it with bench/clicks.lua at a fixed pause
per connection (128 connections; the same pause for both, so both see the same offered load) for a
warm-up longer than the feed's lag, then for a few runs of --seconds each, and prints each run's rate
and p50/p99/p99.9 with the CPU per click of the serve process and of its children (the report feed,
and the report engine, idle here). 127.0.0.1 only.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

import cpu_per_request  # noqa: E402 -- extract_src, serving
import run as bench  # noqa: E402 -- the benchmark's own helpers (free ports, waits, seeding, wrk)


def children(pid: int) -> list[int]:
    found = []
    for listed in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in listed.read_text().split()]
    return found


def measure(python_path: str | None, args: argparse.Namespace) -> list[tuple[bench.Run, float, float]]:
    """Per run: wrk's result, the serve process's and its children's CPU µs per click."""
    with cpu_per_request.serving(python_path, "sqlite", "clicktrail-steady-", args.workers) as served:
        base_url, pid = served.base_url, served.process.pid
        script = str(ROOT / "bench" / "clicks.lua")
        load = {"BENCH_PATH": f"/c/{served.key}", "BENCH_DELAY_MS": str(args.delay_ms)}
        results = []
        bench.wrk(base_url, args.warm_up, 128, 1, script, load)
        for _ in range(args.runs):
            helpers = children(pid)
            cpu = bench.process_cpu_seconds
            before = cpu(pid), sum(cpu(child) for child in helpers)
            run = bench.wrk(base_url, args.seconds, 128, 1, script, load)
            after = cpu(pid), sum(cpu(child) for child in helpers)
            clicks = run.counts["requests"]
            results.append(
                (run, 1e6 * (after[0] - before[0]) / clicks, 1e6 * (after[1] - before[1]) / clicks)
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--delay-ms", type=int, default=25, help="pause per connection between clicks")
    parser.add_argument("--warm-up", type=int, default=20, help="seconds before measuring (> the feed's lag)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    bench.ensure_tools()
    p99s: dict[str, list[float]] = {"base": [], "this checkout": []}
    with tempfile.TemporaryDirectory(prefix="clicktrail-base-") as tmp:
        base_src = str(cpu_per_request.extract_src(args.base, Path(tmp)))
        for pair in range(1, args.pairs + 1):
            for name, python_path in (("base", base_src), ("this checkout", None)):
                for run, serve_cpu, helper_cpu in measure(python_path, args):
                    p99s[name].append(run.p99_ms)
                    print(
                        f"pair {pair}, {name}: {run.rate:,.0f} clicks/s, p50 {run.p50_ms:.1f} ms, "
                        f"p99 {run.p99_ms:.1f} ms, p99.9 {run.p999_ms:.1f} ms; CPU per click: serve "
                        f"{serve_cpu:.0f} µs, its children {helper_cpu:.0f} µs",
                        flush=True,
                    )
    base, this = statistics.median(p99s["base"]), statistics.median(p99s["this checkout"])
    print(f"median p99: {base:.1f} ms ({args.base}) → {this:.1f} ms (this checkout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
