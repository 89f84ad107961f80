#!/usr/bin/env python3
"""Where a `clicktrail serve` process's memory goes, under click load.

    flock /work/loadtest.lock .venv/bin/python scripts/worker_memory.py [--workers N] [--seconds S]
        [--base COMMIT] [--report]

Starts `clicktrail serve` (a fresh SQLite file; from the base commit's `src/` when --base is given,
as scripts/cpu_per_request.py does), drives it with wrk on bench/clicks.lua (128 connections) for a
few seconds, then prints for every process of the server (the serve process, its workers, the report
feed): the peak resident set (VmHWM), the resident set now split into anonymous memory (the heap,
what Python and the libraries allocated: private to the process) and file-backed pages (shared
libraries and the touched pages of the GeoIP database: shared between processes that map the same
file, and reclaimable), the largest mappings, and whether DuckDB is loaded. --report asks for one
report (GET /api/v1/reports) after the clicks, to show what the first report costs a worker.
127.0.0.1 only.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

import cpu_per_request  # noqa: E402 -- extract_src
import run as bench  # noqa: E402 -- the benchmark's own helpers (free ports, waits, seeding)

VENV_BIN = Path(sys.executable).parent


def status(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _largest(sizes: dict[str, float], top: int) -> list[tuple[str, float]]:
    return sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:top]


def mappings(pid: int) -> dict[str, float]:
    """Resident MB per mapped file (anonymous mappings as [anon], the heap as [heap])."""
    sizes: defaultdict[str, float] = defaultdict(float)
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            current = head[5] if len(head) > 5 else "[anon]"
            current = current.rsplit("/", 1)[-1] if current.startswith("/") else current
        elif line.startswith("Rss:"):
            sizes[current] += int(head[1]) / 1024
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--base", help="run the server from this commit's src/ instead of the checkout")
    parser.add_argument("--report", action="store_true", help="ask for one report after the clicks")
    parser.add_argument("--top", type=int, default=8, help="how many of the largest mappings to list")
    args = parser.parse_args()
    bench.ensure_tools()
    env = {
        **os.environ,
        "CLICKTRAIL_SECRET_KEY": bench.SECRET_KEY,
        "CLICKTRAIL_ADMIN_TOKEN": bench.ADMIN_TOKEN,
    }
    with tempfile.TemporaryDirectory(prefix="clicktrail-memory-") as tmp:
        directory = Path(tmp)
        if args.base:
            env["PYTHONPATH"] = str(cpu_per_request.extract_src(args.base, directory / "base"))
        url = f"sqlite:///{directory / 'clicktrail.db'}"
        key = bench.seed_campaign(url)
        port = bench.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env |= {"CLICKTRAIL_DATABASE_URL": url, "CLICKTRAIL_PUBLIC_URL": base_url}
        command = [str(VENV_BIN / "clicktrail"), "serve", "--port", str(port), "--log-level", "warning"]
        command += ["--workers", str(args.workers)]
        log_path = directory / "server.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                command, env=env, cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            try:
                bench.wait_for(f"{base_url}/health", server)
            except RuntimeError:
                print(log_path.read_text(), file=sys.stderr)
                raise
            load = {**os.environ, "BENCH_PATH": f"/c/{key}"}
            bench.wrk(base_url, args.seconds, 128, 1, str(ROOT / "bench" / "clicks.lua"), load)
            if args.report:
                answer = httpx.get(
                    f"{base_url}/api/v1/reports",
                    headers={"Authorization": f"Bearer {bench.ADMIN_TOKEN}"},
                    timeout=60,
                )
                answer.raise_for_status()
            for pid in bench.server_processes(server.pid):
                with contextlib.suppress(OSError):
                    name = bench.process_role(pid, server.pid)
                    memory = status(pid)
                    maps = mappings(pid)
                    duckdb = any("duckdb" in mapped for mapped in maps)
                    print(
                        f"{name} (pid {pid}): peak {memory['VmHWM']:.0f} MB; now {memory['VmRSS']:.0f} MB = "
                        f"anonymous {memory['RssAnon']:.0f} + file-backed {memory['RssFile']:.0f} + shared "
                        f"{memory['RssShmem']:.0f}; DuckDB {'loaded' if duckdb else 'not loaded'}"
                    )
                    largest = ", ".join(f"{mapped} {mb:.1f}" for mapped, mb in _largest(maps, args.top))
                    print(f"  largest mappings (MB resident): {largest}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
