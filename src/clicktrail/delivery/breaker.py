"""The circuit breaker per source: after enough consecutive failures a source's deliveries pause (they
stay queued), one probe goes out after a cool-down, and a success (or a manual resume) closes it.

    closed ──N consecutive failures──▶ open ──cool-down over: one job claimed as probe──▶ half_open
      ▲                                  ▲                                                  │
      └──────────── success ─────────────┼─────────────── probe fails ◀────────────────────┘
                                         (open again; `opened_at` keeps when it first tripped)

The state lives in the database (`delivery_breakers`), so every worker and node sees the same.
This module decides the transitions; storage/delivery_store.py reads and writes them.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row

from clicktrail.config import Settings
from clicktrail.types import SourceId

_REASON_MAX = 500


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Breaker:
    source_id: SourceId
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    """Consecutive failed attempts."""
    reason: str | None = None
    """The last failure, while open."""
    opened_at: datetime | None = None
    """When it tripped (kept across failed probes)."""
    probe_at: datetime | None = None
    """Open: when a probe may go. Half-open: when the probe's lease ends."""

    @classmethod
    def from_row(cls, row: Row[Any] | None, source_id: SourceId) -> "Breaker":
        if row is None:
            return cls(source_id)
        return cls(
            SourceId(row.source_id),
            BreakerState(row.state),
            row.failures,
            row.reason,
            row.opened_at,
            row.probe_at,
        )

    def values(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "failures": self.failures,
            "reason": self.reason,
            "opened_at": self.opened_at,
            "probe_at": self.probe_at,
        }


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int
    """Consecutive failures that trip it."""
    cooldown: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> "BreakerPolicy":
        return cls(
            settings.delivery_breaker_failures,
            timedelta(seconds=settings.delivery_breaker_cooldown_seconds),
        )

    def after_failure(self, breaker: Breaker, error: str, now: datetime) -> Breaker:
        failures = breaker.failures + 1
        reason = error[:_REASON_MAX]
        if breaker.state is BreakerState.HALF_OPEN:
            return replace(
                breaker,
                state=BreakerState.OPEN,
                failures=failures,
                reason=reason,
                probe_at=now + self.cooldown,
            )
        if breaker.state is BreakerState.OPEN:
            return replace(breaker, failures=failures, reason=reason)
        if failures >= self.threshold:
            return Breaker(breaker.source_id, BreakerState.OPEN, failures, reason, now, now + self.cooldown)
        return replace(breaker, failures=failures)

    @staticmethod
    def after_success(breaker: Breaker) -> Breaker:
        return Breaker(breaker.source_id)
