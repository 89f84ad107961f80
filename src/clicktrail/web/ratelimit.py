"""Token buckets: each key (an API key, an address, an account) may make `burst` requests at once and
`per_minute` a minute after that. The buckets live in a table every worker of the server shares
(storage/shared_table.py), so N workers allow the rate once, not N times. A bucket is two floats:
its tokens and when they were last counted (`time.monotonic`, one clock for every process of the
machine)."""

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from clicktrail.errors import RateLimited
from clicktrail.storage.shared_table import SharedTable, string_key


class RateLimiter:
    def __init__(
        self,
        name: str,
        per_minute: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        shared_dir: Path | None = None,
    ) -> None:
        """`shared_dir`: where the server's workers share the buckets; None keeps them in this
        process. A key pushed out of a full table has refilled anyway: it was the least recently
        seen of its bucket."""
        self.name = name
        self.enabled = per_minute > 0
        self._rate = per_minute / 60.0
        self._burst = float(max(burst, 1))
        self._clock = clock
        table_name = "limit-" + "".join(c if c.isalnum() else "-" for c in name.lower())
        self._table = SharedTable.open(shared_dir, table_name, max_keys) if self.enabled else None

    def _take(self, key: str, *, take: bool) -> int:
        assert self._table is not None
        now = self._clock()
        return self._table.update(string_key(key), now, partial(self._refill, now, take))

    def _refill(self, now: float, take: bool, tokens: float | None, counted: float) -> tuple[float, int]:
        tokens = self._burst if tokens is None else min(self._burst, tokens + (now - counted) * self._rate)
        if tokens >= 1:
            return (tokens - 1 if take else tokens), 0
        return tokens, max(1, math.ceil((1 - tokens) / self._rate))

    def retry_after(self, key: str) -> int:
        """0 when `key` may go ahead now (and takes a token), otherwise the seconds to wait."""
        return self._take(key, take=True) if self.enabled else 0

    def check(self, key: str) -> None:
        """Take a token for `key` or raise RateLimited with the wait."""
        wait = self.retry_after(key)
        if wait:
            raise RateLimited(f"too many requests ({self.name}); retry in {wait} s", wait)

    def peek(self, key: str) -> int:
        """The wait `key` would face now, without taking a token."""
        return self._take(key, take=False) if self.enabled else 0
