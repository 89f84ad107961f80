"""What enrichment costs per click once caches are warm: `.venv/bin/python scripts/bench_enrichment.py`.

Visits draw user agents from fake-useragent's real-world sample weighted by their observed share, and
a fresh random public IPv4 address for almost every click (the worst case for the geo look-up and the
uniqueness memory), then time `Enricher.enrich` alone: no HTTP, no database. Single-threaded; run it
on a quiet machine: wall time on a busy one mostly measures the wait for a core (CPU time is printed too).
"""

import ipaddress
import json
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from clicktrail.clicks.enrichment import Enricher
from clicktrail.config import Settings

CLICKS = 200_000
ROUNDS = 3


def _public_ipv4(rng: random.Random) -> str:
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global:
            return str(address)


def main() -> None:
    text = files("fake_useragent").joinpath("data/browsers.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    agents = [row["useragent"] for row in rows]
    weights = [float(row.get("percent") or 0.0001) for row in rows]
    rng = random.Random(20261123)
    visits = [(rng.randrange(1, 50), _public_ipv4(rng), ua) for ua in rng.choices(agents, weights, k=CLICKS)]
    enricher = Enricher.from_settings(Settings())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for campaign, ip, ua in visits:  # warm the user-agent cache and the page cache of the .mmdb
        enricher.enrich(campaign, ip, ua, start)
    results, cpu = [], []
    for round_ in range(ROUNDS):
        now = start + timedelta(days=2 * (round_ + 1))  # a new window: every visitor is unique again
        began, began_cpu = time.perf_counter(), time.process_time()
        for campaign, ip, ua in visits:
            enricher.enrich(campaign, ip, ua, now)
        results.append((time.perf_counter() - began) / CLICKS * 1e6)
        cpu.append((time.process_time() - began_cpu) / CLICKS * 1e6)
    info = enricher.agents.cache_info()
    print(f"clicks per round: {CLICKS}, distinct user agents: {info.currsize}, geo db: {enricher.geo.path}")
    print(
        f"enrichment per click, warm caches: median {statistics.median(results):.1f} us wall, "
        f"{statistics.median(cpu):.1f} us CPU (wall rounds: {', '.join(f'{r:.1f}' for r in results)})"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average: {load} on {os.cpu_count()} cores (wall time inflates when it exceeds them)")


if __name__ == "__main__":
    main()
