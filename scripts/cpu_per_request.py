#!/usr/bin/env python3
"""CPU time per click or per postback, this checkout against an earlier commit, in alternated pairs.

    .venv/bin/python scripts/cpu_per_request.py --base 6b82581 [--path clicks|postbacks|mixed]
        [--pairs 3] [--backend sqlite|postgres] [--workers 1] [--delay-ms N]
    .venv/bin/python scripts/cpu_per_request.py --base-src ../other-checkout/src ...

Throughput on a shared machine swings with whatever else runs; the CPU a server process spends per
request does not, much. For each pair this starts `clicktrail serve` (`--workers`, 1 by default; a
fresh SQLite file, or with `--backend postgres` a fresh PostgreSQL database) from the base commit's
`src/` (extracted with `git archive` and put first on PYTHONPATH: pure Python), or another
checkout's `src/` as built there with `--base-src` (compiled, if it was), and then from this checkout,
drives each with wrk for a few seconds (bench/clicks.lua or bench/postbacks.lua, the latter on
clicks made just before), and divides the server's CPU time (user + system, every thread, from
/proc) by the requests wrk completed. With `--backend postgres` it also divides the CPU time of the
machine's PostgreSQL processes (the server is local: every process named `postgres`) the same way,
since work moved from the server to the database, or back, shows only there. Prints every pair and
the medians, with wrk's p99 (a closed-loop p99 at the maximum rate: it follows the rate and the
machine's moment more than the code). 127.0.0.1 only.

`--path mixed` sends clicks (128 connections) and postbacks (32) at once, as a tracker gets them,
each connection pausing `--delay-ms` between requests if given: the CPU is per request of either
kind, and the p99 of each is printed (a postback batch that holds its worker shows in the clicks').
"""

import argparse
import contextlib
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import run as bench  # noqa: E402 -- the benchmark's own helpers (free ports, waits, seeding)

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Served:
    process: "subprocess.Popen[bytes]"
    base_url: str
    key: str
    """The seeded campaign's tracking key."""
    database_url: str
    directory: Path


def _ticks(stat: Path) -> int:
    """User + system clock ticks from a /proc .../stat file (the fields after the command's ')')."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """User + system time of the process and its children's threads so far."""
    pids, total = [pid], 0
    for each in pids:
        try:
            pids += [int(child) for child in Path(f"/proc/{each}/task/{each}/children").read_text().split()]
            for task in os.listdir(f"/proc/{each}/task"):
                total += _ticks(Path(f"/proc/{each}/task/{task}/stat"))
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """User + system time so far of every process on this machine named `postgres` (0 without any)."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    total += _ticks(Path(f"/proc/{entry}/stat"))
    return total / os.sysconf("SC_CLK_TCK")


def extract_src(commit: str, into: Path) -> Path:
    """The commit's `src/` as it is in git: pure Python, never compiled. When this checkout runs
    compiled (clicktrail/compiled.py), says so: the difference then includes the compiling
    (`CLICKTRAIL_COMPILE=0 make compile` compares pure with pure)."""
    from clicktrail.compiled import loaded_compiled

    if compiled := loaded_compiled():
        note = f"note: this checkout runs {len(compiled)} modules compiled, {commit} pure Python"
        print(note, file=sys.stderr)
    archive = subprocess.run(
        ["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@contextlib.contextmanager
def serving(python_path: str | None, backend: str, prefix: str, workers: int) -> Iterator[Served]:
    """`clicktrail serve` (`workers` workers, otherwise its default settings) on a fresh seeded
    database, from the code at `python_path` (put first on PYTHONPATH) or this checkout; stopped
    (SIGTERM to its group) on exit."""
    env = {
        **os.environ,
        "CLICKTRAIL_SECRET_KEY": bench.SECRET_KEY,
        "CLICKTRAIL_ADMIN_TOKEN": bench.ADMIN_TOKEN,
    }
    if python_path:
        env["PYTHONPATH"] = python_path
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, bench.database(backend, Path(tmp)) as url:
        directory = Path(tmp)
        seed = "import sys; sys.path.insert(0, 'bench'); import run; print(run.seed_campaign(sys.argv[1]))"
        seeded = subprocess.run(
            [str(VENV_BIN / "python"), "-c", seed, url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        port = bench.free_port()
        base_url = f"http://127.0.0.1:{port}"
        env |= {"CLICKTRAIL_DATABASE_URL": url, "CLICKTRAIL_PUBLIC_URL": base_url}
        command = [str(VENV_BIN / "clicktrail"), "serve", "--port", str(port), "--log-level", "warning"]
        command += ["--workers", str(workers)]
        server = subprocess.Popen(
            command,
            env=env,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            bench.wait_for(f"{base_url}/health", server)
            while bench.listening_sockets(port) < workers:  # each worker listens on its own socket
                if server.poll() is not None:
                    raise RuntimeError("the server exited before all its workers listened")
                time.sleep(0.1)
            yield Served(server, base_url, seeded.stdout.split()[-1], url, directory)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


@dataclass(frozen=True)
class Measured:
    server_us: float
    """The server's CPU (every process and thread) per request, in µs."""
    database_us: float
    """PostgreSQL's CPU per request, in µs (0 on SQLite)."""
    rate: float
    p99_ms: float
    """wrk's p99 latency (bench/*.lua's BENCH line); the clicks' with `--path mixed`."""
    postback_p99_ms: float | None = None
    """With `--path mixed`, the postbacks' p99."""


def measure(
    python_path: str | None, path: str, seconds: int, backend: str, workers: int, delay_ms: int | None
) -> Measured:
    """CPU per request and requests per second for one server run."""
    with serving(python_path, backend, "clicktrail-cpu-", workers) as served:
        base_url = served.base_url
        load = {**os.environ, "BENCH_PATH": f"/c/{served.key}"}
        # A warm-up run first, on either path: the report feed process starts beside the server and
        # spends a second or two of CPU importing DuckDB, which would otherwise land in the measured
        # run of one server and not the other.
        bench.wrk(base_url, 3, 64, 1, str(ROOT / "bench" / "clicks.lua"), load)
        time.sleep(1)
        wrk = ["wrk", "-t1", "-d", f"{seconds}s"]
        click_load = {**load, **({"BENCH_DELAY_MS": str(delay_ms)} if delay_ms is not None else {})}
        loads = [(ROOT / "bench" / "clicks.lua", 128, click_load)] if path != "postbacks" else []
        if path != "clicks":
            ids = served.directory / "click-ids.txt"
            bench.some_click_ids(served.database_url, ids, 20_000)
            loads.append((ROOT / "bench" / "postbacks.lua", 32, {**click_load, "BENCH_CLICK_IDS": str(ids)}))
        before, database_before = cpu_seconds(served.process.pid), postgres_cpu_seconds()
        running = [
            subprocess.Popen(
                [*wrk, f"-c{connections}", "-s", str(script), base_url],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for script, connections, env in loads
        ]
        outputs = [process.communicate(timeout=seconds + 30)[0] for process in running]
        if any(process.returncode for process in running):
            raise RuntimeError(f"wrk failed:\n{outputs}")
        spent = cpu_seconds(served.process.pid) - before
        database_spent = postgres_cpu_seconds() - database_before if backend == "postgres" else 0.0
    requests = 0
    for out in outputs:
        completed = re.search(r"(\d+) requests in", out)
        if completed is None:
            raise RuntimeError(f"wrk printed no request count:\n{out}")
        requests += int(completed.group(1))
    p99s = [json.loads(out.split("BENCH ", 1)[1].splitlines()[0])["p99_us"] / 1000 for out in outputs]
    return Measured(
        1e6 * spent / requests,
        1e6 * database_spent / requests,
        requests / seconds,
        p99s[0],
        p99s[1] if path == "mixed" else None,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    base = parser.add_mutually_exclusive_group(required=True)
    base.add_argument("--base", help="the commit to compare against, as pure Python")
    base.add_argument(
        "--base-src",
        type=Path,
        help="another checkout's src/, as built there (compiled in place by its own `make compile`): "
        "compares compiled with compiled",
    )
    parser.add_argument("--path", choices=("clicks", "postbacks", "mixed"), default="clicks")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--delay-ms",
        type=int,
        help="a mean pause per connection between requests (bench/*.lua's BENCH_DELAY_MS): both servers "
        "get the same offered load below their maximum, and the p99 compared is the p99 at that pace",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="PostgreSQL at CLICKTRAIL_BENCH_POSTGRES_URL",
    )
    args = parser.parse_args()
    bench.ensure_tools()
    with tempfile.TemporaryDirectory(prefix="clicktrail-base-") as tmp:
        base_src = str(extract_src(args.base, Path(tmp)) if args.base else args.base_src)
        results: dict[str, list[Measured]] = {"base": [], "this checkout": []}
        for pair in range(1, args.pairs + 1):
            for name, python_path in (("base", base_src), ("this checkout", None)):
                measured = measure(
                    python_path, args.path, args.seconds, args.backend, args.workers, args.delay_ms
                )
                results[name].append(measured)
                database = (
                    f", PostgreSQL {measured.database_us:,.0f} µs" if args.backend == "postgres" else ""
                )
                postbacks = (
                    ""
                    if measured.postback_p99_ms is None
                    else f", postbacks' p99 {measured.postback_p99_ms:.1f} ms"
                )
                print(
                    f"pair {pair}, {name}: {measured.server_us:,.0f} µs CPU per request{database},"
                    f" {measured.rate:,.0f} requests/s, p99 {measured.p99_ms:.1f} ms{postbacks}",
                    flush=True,
                )
    for what, label in (
        ("server_us", "server CPU"),
        ("database_us", "PostgreSQL CPU"),
        ("rate", "requests/s"),
        ("p99_ms", "p99 ms" if args.path != "mixed" else "clicks' p99 ms"),
        ("postback_p99_ms", "postbacks' p99 ms"),
    ):
        if what == "database_us" and args.backend != "postgres":
            continue
        if what == "postback_p99_ms" and args.path != "mixed":
            continue
        digits = 1 if what.endswith("p99_ms") else 0
        base = statistics.median(getattr(each, what) for each in results["base"])
        this = statistics.median(getattr(each, what) for each in results["this checkout"])
        print(
            f"{args.path}, {label}: median {base:,.{digits}f} ({args.base or args.base_src})"
            f" → {this:,.{digits}f}"
            " (this checkout):"
            f" {this / base - 1:+.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
