"""When a failed delivery is tried again: exponential backoff, capped, for a fixed number of attempts."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from clicktrail.config import Settings

_MAX_DOUBLINGS = 40  # 2**40 times any sane first delay is past every cap; keeps the float finite


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    first: timedelta
    """The wait after the first failed attempt; each later wait doubles it."""
    max_interval: timedelta
    max_attempts: int
    """After this many attempts the job is dead."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrySchedule":
        return cls(
            first=timedelta(seconds=settings.delivery_retry_first_seconds),
            max_interval=timedelta(seconds=settings.delivery_retry_max_interval_seconds),
            max_attempts=settings.delivery_max_attempts,
        )

    def delay(self, attempts_made: int) -> timedelta:
        """The wait after `attempts_made` (>= 1) failed attempts."""
        doublings = min(max(attempts_made - 1, 0), _MAX_DOUBLINGS)
        return min(self.first * (1 << doublings), self.max_interval)

    def next_attempt(self, attempts_made: int, now: datetime) -> datetime | None:
        """When to try again after `attempts_made` failed attempts; None when that was the last."""
        if attempts_made >= self.max_attempts:
            return None
        return now + self.delay(attempts_made)

    def span(self) -> timedelta:
        """From the first attempt to the last one, when every attempt fails."""
        return sum((self.delay(n) for n in range(1, self.max_attempts)), timedelta())
