#!/usr/bin/env python3
"""One worker against two, alternated round by round, on this checkout.

    .venv/bin/python scripts/compare_workers.py [--rounds 3] [--backend sqlite|postgres] [--seconds 3]

Each round serves a fresh database with `clicktrail serve --workers 1`, then `--workers 2`, and runs the
benchmark's own click, paced (~70% of max) and postback runs on each (bench/run.py's bench_backend),
nginx alternating with them as in `make bench`. Prints every round and the medians. 127.0.0.1 only.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402 -- the benchmark's own runs

FIGURES = ("clicks/s", "nginx/s", "p99 ms", "paced/s", "paced p99 ms", "postbacks/s", "postback p99 ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    bench.ensure_tools()
    rows: dict[int, list[tuple[float, ...]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="clicktrail-workers-") as tmp, bench.nginx(Path(tmp), 2) as nginx:
        for number in range(1, args.rounds + 1):
            for workers in (1, 2):
                run_args = argparse.Namespace(
                    runs=3,
                    seconds=args.seconds,
                    short=args.seconds,
                    connections=128,
                    postback_connections=32,
                    threads=1,
                    workers=workers,
                    quick=False,
                )
                nginx_runs = bench.Series()
                directory = Path(tmp) / f"{number}-{workers}"
                directory.mkdir()
                result = bench.bench_backend(args.backend, directory, run_args, nginx, nginx_runs)
                row = (
                    result.clicks.median("rate"),
                    nginx_runs.median("rate"),
                    result.clicks.median("p99_ms"),
                    result.steady.median("rate"),
                    result.steady.median("p99_ms"),
                    result.postbacks.median("rate"),
                    result.postbacks.median("p99_ms"),
                )
                rows[workers].append(row)
                shown = ", ".join(f"{name} {value:,.1f}" for name, value in zip(FIGURES, row, strict=True))
                print(f"round {number}, {workers} worker(s): {shown}", flush=True)
    for workers, results in rows.items():
        medians = [statistics.median(row[index] for row in results) for index in range(len(FIGURES))]
        shown = ", ".join(f"{name} {value:,.1f}" for name, value in zip(FIGURES, medians, strict=True))
        share = statistics.median(row[0] / row[1] for row in results)
        print(f"{workers} worker(s), medians: {shown}; clicks vs nginx {share:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
