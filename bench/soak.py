"""`make bench-soak`: does memory stay flat? clicktrail under a steady click and postback load for
ten minutes (by default), its resident memory sampled as it goes.

Clicks come from `wrk` at a paced rate (a pause per connection) and postbacks on the clicks already
stored; the server's RSS (every process) is read from /proc every few seconds. The verdict compares
the workers' RSS after the warm-up with their RSS at the end, and each worker's peak: issue 8 asks
for no growth beyond 10% and under 150 MB per worker (the whole server's growth is printed too).
Bounded in time, 127.0.0.1 only.

    python bench/soak.py [--seconds 600] [--backend sqlite|postgres] [--workers N]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    HERE,
    Server,
    _which,
    database,
    ensure_tools,
    say,
    seed_campaign,
    some_click_ids,
    stored_clicks,
)


def rss_mb(server: Server) -> list[tuple[str, float, float]]:
    """VmRSS of each of the server's processes, with what it is (serve, worker, report feed…) and
    the anonymous part of it (RssAnon: the heap, SQLite's page caches; the rest is file-backed pages,
    shared libraries and the touched pages of the GeoIP file, shared and reclaimable)."""
    sizes = []
    for pid in server.processes():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields and "RssAnon" in fields:
            rss, anon = (int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "RssAnon"))
            sizes.append((server.role(pid), rss, anon))
    return sizes


def paced_wrk(
    base_url: str, seconds: int, connections: int, script: str, env: dict[str, str]
) -> "subprocess.Popen[str]":
    command = [_which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, base_url]
    return subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=60, help="seconds before the baseline RSS is taken")
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int)
    parser.add_argument(
        "--click-delay-ms", type=int, default=20, help="pause per connection (32 connections)"
    )
    args = parser.parse_args()
    ensure_tools()
    with (
        tempfile.TemporaryDirectory(prefix="clicktrail-soak-") as tmp,
        database(args.backend, Path(tmp)) as url,
    ):
        directory = Path(tmp)
        path = f"/c/{seed_campaign(url)}"
        server = Server(url, directory, args.workers)
        # The target is per worker: with one worker, serve is the worker; the report feed is not one.
        serving = {"worker", "serve"} if server.workers() == 1 else {"worker"}
        try:
            clicks = paced_wrk(
                server.base_url,
                args.seconds,
                32,
                str(HERE / "clicks.lua"),
                {"BENCH_PATH": path, "BENCH_DELAY_MS": str(args.click_delay_ms)},
            )
            time.sleep(min(10, args.warmup))
            ids = directory / "click-ids.txt"
            some_click_ids(url, ids, 20_000)
            postbacks = paced_wrk(
                server.base_url,
                args.seconds - 10,
                8,
                str(HERE / "postbacks.lua"),
                {"BENCH_CLICK_IDS": str(ids), "BENCH_DELAY_MS": "40"},
            )
            started = time.monotonic()
            samples: list[tuple[float, list[tuple[str, float, float]]]] = []
            while clicks.poll() is None:
                samples.append((time.monotonic() - started + min(10, args.warmup), rss_mb(server)))
                time.sleep(args.interval)
            postbacks.wait(60)
            stored = stored_clicks(url)
        finally:
            server.stop()
    totals = [(at, sum(mb for _, mb, _ in sizes)) for at, sizes in samples]

    def after_warmup(series: list[tuple[float, float]]) -> float:
        return next((mb for at, mb in series if at >= args.warmup), series[0][1])

    baseline = after_warmup(totals)
    end = totals[-1][1]
    growth = (end - baseline) / baseline
    # "Flat" is asked of the workers: the report feed grows with the columnar copy it keeps.
    workers = [(at, sum(mb for role, mb, _ in sizes if role in serving)) for at, sizes in samples]
    workers_baseline = after_warmup(workers)
    workers_growth = (workers[-1][1] - workers_baseline) / workers_baseline
    anonymous = [(at, sum(anon for role, _, anon in sizes if role in serving)) for at, sizes in samples]
    peak_per_process = max(max(mb for _, mb, _ in sizes) for _, sizes in samples)
    peak_worker = max(max(mb for role, mb, _ in sizes if role in serving) for _, sizes in samples)
    peaks: dict[str, float] = {}
    for _, sizes in samples:
        for role, mb, _ in sizes:
            peaks[role] = max(peaks.get(role, 0.0), mb)
    by_role = ", ".join(f"{role} {mb:.0f} MB" for role, mb in peaks.items())
    met = workers_growth < 0.10 and peak_worker < 150
    every = max(1, len(totals) // 20)
    say("RSS over time (s: MB): " + ", ".join(f"{at:.0f}: {mb:.0f}" for at, mb in totals[::every]))
    print(
        f"soak, {args.backend}, {args.seconds} s, clicks paced at 32 connections x {args.click_delay_ms} ms, "
        f"postbacks at 8 x 40 ms; {stored:,} clicks stored\n"
        f"RSS of the server's processes after {args.warmup} s: {baseline:.0f} MB; at the end {end:.0f} MB "
        f"({growth:+.1%}); the workers {workers_baseline:.0f} MB, at the end {workers[-1][1]:.0f} MB "
        f"({workers_growth:+.1%}), of it anonymous {after_warmup(anonymous):.0f} -> "
        f"{anonymous[-1][1]:.0f} MB (the rest file-backed: libraries, GeoIP pages); "
        f"largest process at its peak {peak_per_process:.0f} MB; peaks by "
        f"process: {by_role}. Target (workers growing under 10%, under 150 MB per worker): "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
