"""In-process token buckets: each key (an API key, an address, an account) may make `burst` requests
at once and `per_minute` a minute after that. Per worker process: N workers allow N times the rate,
which is fine for what these limits are for (brute force, runaway scripts), not for billing."""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from clicktrail.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        name: str,
        per_minute: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.enabled = per_minute > 0
        self._rate = per_minute / 60.0
        self._burst = float(max(burst, 1))
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # API dependencies run in worker threads; the login handler on the loop.
        self._lock = threading.Lock()

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)  # the least recently seen: it has refilled anyway
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        return bucket

    def retry_after(self, key: str) -> int:
        """0 when `key` may go ahead now (and takes a token), otherwise the seconds to wait."""
        if not self.enabled:
            return 0
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / self._rate))

    def check(self, key: str) -> None:
        """Take a token for `key` or raise RateLimited with the wait."""
        wait = self.retry_after(key)
        if wait:
            raise RateLimited(f"too many requests ({self.name}); retry in {wait} s", wait)

    def peek(self, key: str) -> int:
        """The wait `key` would face now, without taking a token."""
        if not self.enabled:
            return 0
        with self._lock:
            bucket = self._bucket(key, self._clock())
        return 0 if bucket.tokens >= 1 else max(1, math.ceil((1 - bucket.tokens) / self._rate))
