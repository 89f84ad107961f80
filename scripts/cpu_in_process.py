#!/usr/bin/env python3
"""CPU per click or per postback in one process, without sockets: this checkout against an earlier
commit, alternated. (Named click_cpu_in_process.py until 2026-12-07, when it learnt postbacks and
instruction counts.)

    .venv/bin/python scripts/cpu_in_process.py --base 1a31579 [--path clicks|postbacks] [--pairs 6]
        [--rounds 300] [--width 32] [--instructions]
    .venv/bin/python scripts/cpu_in_process.py --base-src ../other-checkout/src ...

wrk against a server measures the request with the machine's network, scheduling and the other
processes around it; this measures what is left when those are taken away, with less noise. Each
run starts a fresh process (the base first on PYTHONPATH: the commit's `src/` from git, pure
Python, as scripts/cpu_per_request.py does, or with `--base-src` another checkout's `src/` as built
there, compiled or not; or this checkout) that builds the real application on a fresh,
seeded SQLite file (the runtime started: catalog, enrichment, group commit; deliveries off),
connects `--width` of the server's own HTTP protocols to transports that only count what is
written, then feeds each a request and waits until all are answered, `--rounds` times after a
warm-up: a tracking-link request (its own sub IDs, external ID, cost and one of three user agents),
or with `--path postbacks` a postback on one of 2,048 clicks made first (two transaction IDs per
click and a random status, as bench/postbacks.lua sends: new, duplicate and updated mixed). The
width is the group commit's batch: a paced load makes small batches, a closed loop large ones.
127.0.0.1 is never touched.

It prints the process's CPU time (every thread: the commit's too) per request, which on a shared
virtual machine still swings by 15% or more from one run to the next. `--instructions` counts
instructions instead, under valgrind's callgrind with counting switched on for the measured rounds
only: the same code gives the same count within a fraction of a percent, whatever else the
machine is doing (valgrind must be installed; each run takes some 15 s).
"""

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Mobile Safari/537.36",
)
WARM_UP_ROUNDS = 20


class _CountingTransport(asyncio.Transport):
    """Takes the protocol's answers and counts them; the round waits until all are in."""

    def __init__(self, answered: "_Round") -> None:
        super().__init__()
        self._answered = answered
        self._closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("10.1.2.3", 50000)}.get(name, default)

    def write(self, data: Any) -> None:
        self._answered.one_more()

    def close(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Round:
    def __init__(self) -> None:
        self.left = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.left = count
        self.done.clear()

    def one_more(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


def _click_requests(key: str, count: int) -> list[bytes]:
    chosen = random.Random(1)
    return [
        f"GET /c/{key}?sub1=s{chosen.randint(1, 500)}&sub2=k{chosen.randint(1, 99_999)}"
        f"&external_id=e{chosen.randint(1, 10**9)}&cost=0.0{chosen.randint(1, 9)} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:8080\r\nUser-Agent: {chosen.choice(AGENTS)}\r\n\r\n".encode()
        for _ in range(count)
    ]


def _postback_requests(click_ids: list[str], count: int) -> list[bytes]:
    chosen = random.Random(2)
    statuses = ("approved", "approved", "approved", "approved", "pending", "rejected")
    return [
        f"GET /postback?click_id={chosen.choice(click_ids)}&event=sale&txid=order-{chosen.randint(1, 2)}"
        f"&payout=12.50&status={chosen.choice(statuses)} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".encode()
        for _ in range(count)
    ]


def _count_instructions(on: bool) -> None:
    """Switch callgrind's counting on or off for this process (a no-op outside valgrind)."""
    if os.environ.get("CPU_IN_PROCESS_CALLGRIND"):
        subprocess.run(
            ["callgrind_control", "--instr=" + ("on" if on else "off"), str(os.getpid())],
            check=True,
            capture_output=True,
        )


async def _measure(path: str, rounds: int, width: int, key: str) -> float:
    import uvicorn
    from sqlalchemy import text
    from uvicorn.server import ServerState

    from clicktrail.web.app import create_app_from_environment
    from clicktrail.web.protocol import EdgeProtocol

    app = create_app_from_environment()
    await app.runtime.start()
    loop = asyncio.get_running_loop()
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    state = ServerState()
    answered = _Round()
    protocols = []
    for _ in range(width):
        protocol = EdgeProtocol(config=config, server_state=state, app_state={}, _loop=loop)
        protocol.connection_made(_CountingTransport(answered))
        protocols.append(protocol)

    async def one_round(requests: list[bytes], number: int) -> None:
        answered.expect(width)
        for index, protocol in enumerate(protocols):
            protocol.data_received(requests[(number * width + index) % len(requests)])
        await answered.done.wait()

    requests = _click_requests(key, 4096)
    if path == "postbacks":
        for number in range(2048 // width + 1):  # the clicks the postbacks convert
            await one_round(requests, number)
        with app.runtime.database.engine.connect() as connection:
            click_ids = list(connection.execute(text("SELECT click_id FROM clicks")).scalars())
        requests = _postback_requests(click_ids, 4096)
    for number in range(WARM_UP_ROUNDS):
        await one_round(requests, number)
    _count_instructions(True)
    started = time.process_time()
    for number in range(rounds):
        await one_round(requests, number)
    per_request = (time.process_time() - started) / (rounds * width) * 1e6
    _count_instructions(False)
    for protocol in protocols:
        protocol.connection_lost(None)
    await app.runtime.stop()
    return per_request


def child(path: str, rounds: int, width: int) -> None:
    """One measurement, in this process: prints the µs of CPU per request."""
    import run as bench  # the benchmark's seeding and its keys
    import uvloop

    with tempfile.TemporaryDirectory(prefix="clicktrail-inproc-") as tmp:
        url = f"sqlite:///{tmp}/clicktrail.db"
        key = bench.seed_campaign(url)
        os.environ.update(
            CLICKTRAIL_DATABASE_URL=url,
            CLICKTRAIL_SECRET_KEY=bench.SECRET_KEY,
            CLICKTRAIL_ADMIN_TOKEN=bench.ADMIN_TOKEN,
            CLICKTRAIL_PUBLIC_URL="http://127.0.0.1:8080",
            CLICKTRAIL_DELIVERY_ENABLED="false",
        )
        print(f"{uvloop.run(_measure(path, rounds, width, key)):.1f}")


def _instructions(out: Path) -> int:
    """The instructions callgrind counted while counting was on (its output file's `totals:` line;
    its `summary:` line stays 0 when counting starts switched off)."""
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    bases = parser.add_mutually_exclusive_group()
    bases.add_argument(
        "--base", help="the commit to compare against, as pure Python (without it: this checkout only)"
    )
    bases.add_argument(
        "--base-src",
        type=Path,
        help="another checkout's src/, as built there (compiled in place by its own `make compile`): "
        "compares compiled with compiled",
    )
    parser.add_argument("--path", choices=("clicks", "postbacks"), default="clicks")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument(
        "--width", type=int, default=32, help="requests answered per round (one group commit)"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead of CPU time"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.path, args.rounds, args.width)
        return 0
    if args.instructions and not shutil.which("valgrind"):
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2

    from cpu_per_request import extract_src

    unit = "instructions" if args.instructions else "µs CPU"
    noun = "click" if args.path == "clicks" else "postback"
    child_args = ["--child", "--path", args.path, "--rounds", str(args.rounds), "--width", str(args.width)]

    def run_once(python_path: str | None, scratch: Path) -> float:
        env = {**os.environ, **({"PYTHONPATH": python_path} if python_path else {})}
        command = [sys.executable, __file__, *child_args]
        if not args.instructions:
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
            return float(out.stdout.split()[-1])
        counted = scratch / "callgrind.out"
        env["CPU_IN_PROCESS_CALLGRIND"] = "1"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={counted}"]
        subprocess.run([*valgrind, *command], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        try:
            return float(_instructions(counted) / (args.rounds * args.width))
        finally:
            counted.unlink()

    with tempfile.TemporaryDirectory(prefix="clicktrail-base-") as tmp:
        base_src: str | None = None
        if args.base:
            base_src = str(extract_src(args.base, Path(tmp)))
        elif args.base_src:
            base_src = str(args.base_src)
        results: dict[str, list[float]] = {"base": [], "this checkout": []}
        for pair in range(1, args.pairs + 1):
            sides = ([("base", base_src)] if base_src else []) + [("this checkout", None)]
            for name, python_path in sides:
                results[name].append(run_once(python_path, Path(tmp)))
                print(f"run {pair}, {name}: {results[name][-1]:,.1f} {unit} per {noun}", flush=True)
    this = statistics.median(results["this checkout"])
    what = f"{unit} per {noun} in one process, batches of {args.width}"
    if results["base"]:
        base = statistics.median(results["base"])
        print(
            f"{what}: median {base:,.1f} ({args.base or args.base_src}) → {this:,.1f} (this checkout): "
            f"{this / base - 1:+.1%}"
        )
    else:
        print(f"{what}: median {this:,.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
