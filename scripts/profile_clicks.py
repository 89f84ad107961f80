#!/usr/bin/env python3
"""Where a click's CPU goes in the workers under wrk: `perf record --call-graph dwarf` on every worker
of `clicktrail serve` (SQLite, its default workers) while bench/clicks.lua drives it, then each
compiled function's share of the samples, inclusive (itself and what it calls).

    .venv/bin/python scripts/profile_clicks.py [--seconds 20] [--record 6] [--top 40]
    PYTHONPATH=<another checkout>/src .venv/bin/python scripts/profile_clicks.py   # its code instead

Needs Linux's `perf` (Debian: linux-perf) and the benchmark's wrk (bench/run.py installs it). Only
the compiled modules (clicktrail/compiled.py) show by name: the interpreter's frames do not, so for
Python-level names use py-spy instead. The machine's other processes are not sampled. 127.0.0.1 only.
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402 -- the benchmark's server, seeding and wrk


def inclusive_shares(perf_script: str) -> tuple[int, collections.Counter[str]]:
    """Samples, and for each compiled function the samples with it anywhere on the stack."""
    shares: collections.Counter[str] = collections.Counter()
    samples = 0
    stack: set[str] = set()
    for line in [*perf_script.splitlines(), ""]:
        if not line.strip():
            if stack:
                samples += 1
                shares.update(stack)
            stack = set()
        elif line[0] in " \t":
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", line.split(None, 1)[-1].rsplit(" (", 1)[0])
            if symbol.startswith("CPyDef_"):
                stack.add(symbol.removeprefix("CPyDef_"))
    return samples, shares


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=20, help="wrk's run")
    parser.add_argument("--record", type=int, default=6, help="perf's share of it, from a third in")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 2
    bench.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="clicktrail-profile-") as tmp:
        directory = Path(tmp)
        with bench.database("sqlite", directory) as url:
            path = f"/c/{bench.seed_campaign(url)}"
            server = bench.Server(url, directory, None)
            try:
                workers = [pid for pid in server.processes()[1:] if server.role(pid) == "worker"]
                load: dict[str, bench.Run] = {}
                script = str(bench.HERE / "clicks.lua")
                driver = threading.Thread(
                    target=lambda: load.setdefault(
                        "run", bench.wrk(server.base_url, args.seconds, 128, 1, script, {"BENCH_PATH": path})
                    )
                )
                driver.start()
                time.sleep(args.seconds / 3)
                data = directory / "perf.data"
                subprocess.run(
                    ["perf", "record", "-q", "-e", "cpu-clock", "-F", "300", "--call-graph", "dwarf,16384",
                     "-o", str(data), "-p", ",".join(map(str, workers)), "--", "sleep", str(args.record)],
                    check=True, capture_output=True,
                )  # fmt: skip
                driver.join()
                printed = subprocess.run(
                    ["perf", "script", "-i", str(data)], check=True, capture_output=True, text=True
                ).stdout
            finally:
                server.stop()
    samples, shares = inclusive_shares(printed)
    print(
        f"{load['run'].rate:,.0f} clicks/s; {samples} samples of {len(workers)} workers over {args.record} s"
    )
    for function, count in shares.most_common(args.top):
        print(f"{100 * count / max(samples, 1):5.1f}%  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
