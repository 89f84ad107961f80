#!/usr/bin/env python3
"""CPU of one change of the workers' shared table (storage/shared_table.py) under each kind of lock,
alternated in one process: robust process-shared mutexes, fcntl record locks, and a private table's
thread lock (the floor: the same change with no other process to order).

    .venv/bin/python scripts/bench_shared_table.py [--changes 200000] [--rounds 7]

Each round changes `--changes` keys spread over the table the size of the default unique-visitor
memory (250,000), as a click's uniqueness check does, in every table in turn; it prints the median
of the rounds. No other process takes the locks: this is the price of an uncontended change, what
almost every click pays.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clicktrail.storage.shared_table import SharedTable

CAPACITY = 250_000
_SPREAD = 0x9E3779B97F4A7C15


def _touch(value: float | None, _touched: float) -> tuple[float, None]:
    return (value or 0.0) + 1, None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clicktrail-table-", dir=_tmpfs()) as directory:
        tables = {
            "robust mutexes": SharedTable.in_directory(Path(directory), "t", CAPACITY, robust=True),
            "fcntl record locks": SharedTable.in_directory(Path(directory), "t", CAPACITY, robust=False),
            "private (thread lock)": SharedTable.private(CAPACITY),
        }
        timings: dict[str, list[float]] = {name: [] for name in tables}
        for _ in range(args.rounds):
            for name, table in tables.items():
                started = time.process_time()
                for n in range(args.changes):
                    table.update(n * _SPREAD, 1.0, _touch)
                timings[name].append((time.process_time() - started) / args.changes * 1e6)
        for table in tables.values():
            table.close()
    for name, runs in timings.items():
        spread = ", ".join(f"{run:.2f}" for run in runs)
        print(f"{name}: median {statistics.median(runs):.2f} µs CPU a change ({spread})")


def _tmpfs() -> str | None:
    shm = Path("/dev/shm")  # noqa: S108 -- where serve puts the tables; mkdtemp makes a private folder in it
    return str(shm) if shm.is_dir() else None


if __name__ == "__main__":
    main()
