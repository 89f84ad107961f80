#!/usr/bin/env python3
"""CPU per click in one process, without sockets: this checkout against an earlier commit, alternated.

    .venv/bin/python scripts/click_cpu_in_process.py --base 1a31579 [--pairs 6] [--rounds 300] [--width 32]

wrk against a server measures the click with the machine's network, scheduling and the other
processes around it; this measures what is left when those are taken away, with less noise. Each
run starts a fresh process (the base commit's `src/` first on PYTHONPATH, as
scripts/cpu_per_request.py does, or this checkout) that builds the real application on a fresh,
seeded SQLite file (the runtime started: catalog, enrichment, group commit; deliveries off),
connects `--width` of the server's own HTTP protocols to transports that only count what is
written, then feeds each a tracking-link request (its own sub IDs, external ID, cost and one of
three user agents) and waits until all are answered, `--rounds` times after a warm-up. It prints
the process's CPU time (every thread: the commit's too) per click. 127.0.0.1 is never touched.
"""

import argparse
import asyncio
import os
import random
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


async def _measure(rounds: int, width: int, key: str) -> float:
    import uvicorn
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
    chosen = random.Random(1)
    requests = [
        f"GET /c/{key}?sub1=s{chosen.randint(1, 500)}&sub2=k{chosen.randint(1, 99_999)}"
        f"&external_id=e{chosen.randint(1, 10**9)}&cost=0.0{chosen.randint(1, 9)} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:8080\r\nUser-Agent: {chosen.choice(AGENTS)}\r\n\r\n".encode()
        for _ in range(4096)
    ]

    async def one_round(number: int) -> None:
        answered.expect(width)
        for index, protocol in enumerate(protocols):
            protocol.data_received(requests[(number * width + index) % len(requests)])
        await answered.done.wait()

    for number in range(WARM_UP_ROUNDS):
        await one_round(number)
    started = time.process_time()
    for number in range(rounds):
        await one_round(number)
    per_click = (time.process_time() - started) / (rounds * width) * 1e6
    for protocol in protocols:
        protocol.connection_lost(None)
    await app.runtime.stop()
    return per_click


def child(rounds: int, width: int) -> None:
    """One measurement, in this process: prints the µs of CPU per click."""
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
        print(f"{uvloop.run(_measure(rounds, width, key)):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="the commit to compare against (without it: this checkout only)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument(
        "--width", type=int, default=32, help="requests answered per round (one group commit)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.rounds, args.width)
        return 0

    from cpu_per_request import extract_src

    def run_once(python_path: str | None) -> float:
        env = {**os.environ, **({"PYTHONPATH": python_path} if python_path else {})}
        command = [
            sys.executable,
            __file__,
            "--child",
            "--rounds",
            str(args.rounds),
            "--width",
            str(args.width),
        ]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        return float(out.stdout.split()[-1])

    with tempfile.TemporaryDirectory(prefix="clicktrail-base-") as tmp:
        base_src = str(extract_src(args.base, Path(tmp))) if args.base else None
        results: dict[str, list[float]] = {"base": [], "this checkout": []}
        for pair in range(1, args.pairs + 1):
            sides = ([("base", base_src)] if base_src else []) + [("this checkout", None)]
            for name, python_path in sides:
                results[name].append(run_once(python_path))
                print(f"run {pair}, {name}: {results[name][-1]:.1f} µs CPU per click", flush=True)
    this = statistics.median(results["this checkout"])
    if results["base"]:
        base = statistics.median(results["base"])
        print(
            f"CPU per click in one process: median {base:.1f} ({args.base}) → {this:.1f} (this checkout): "
            f"{this / base - 1:+.0%}"
        )
    else:
        print(f"CPU per click in one process: median {this:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
