"""What the admin API asks of the outbox: deliveries with their attempts, a manual re-send, a source's
circuit breaker and its manual resume."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from clicktrail.delivery.breaker import Breaker, BreakerPolicy
from clicktrail.delivery.status import DeliveryStatus
from clicktrail.errors import Conflict, NotFound, ValidationFailed
from clicktrail.storage import delivery_store as store
from clicktrail.storage.catalog_store import get_row
from clicktrail.storage.database import Database
from clicktrail.storage.schema import sources
from clicktrail.types import Clock, SourceId


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    rows: list[dict[str, Any]]
    """Each delivery's columns plus `attempts_made` and `attempts` (the list, oldest first)."""
    next_cursor: str | None


def _with_attempts(
    rows: list[Any], attempts: dict[int, list[Any]], probes: dict[int, datetime]
) -> list[dict[str, Any]]:
    """The rows as the API shows them. A paused source's waiting job shows its source's probe as its
    next attempt: it is stored as due later still (delivery_store's defer_source; the probe takes the
    oldest whenever it is due), but all of them go as soon as a probe succeeds."""
    out = []
    for row in rows:
        values = row._asdict()
        values["attempts_made"] = values.pop("attempts")
        probe_at = probes.get(row.source_id)
        if probe_at is not None and row.status == DeliveryStatus.PENDING and row.next_attempt_at is not None:
            values["next_attempt_at"] = min(row.next_attempt_at, probe_at)
        out.append({**values, "attempts": attempts[row.id]})
    return out


def _probes(connection: Connection) -> dict[int, datetime]:
    return {b.source_id: b.probe_at for b in store.held_breakers(connection) if b.probe_at is not None}


def find_deliveries(
    database: Database,
    *,
    click_id: str | None,
    source_id: int | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> DeliveryPage:
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise ValidationFailed(f"status must be one of {allowed}", {"status": allowed})
    before: int | None = None
    if cursor is not None:
        if not cursor.isdigit():
            raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
        before = int(cursor)
    with database.begin() as connection:
        rows = store.list_deliveries(
            connection,
            click_id=click_id.lower() if click_id else None,
            source_id=source_id,
            status=status,
            before=before,
            limit=limit + 1,
        )
        page = list(rows[:limit])
        attempts: dict[int, list[Any]] = defaultdict(list)
        for attempt in store.attempts_of(connection, [row.id for row in page]):
            attempts[attempt.delivery_id].append(attempt)
        probes = _probes(connection)
    next_cursor = str(page[-1].id) if len(rows) > limit else None
    return DeliveryPage(_with_attempts(page, attempts, probes), next_cursor)


def get_delivery(database: Database, delivery_id: int) -> dict[str, Any]:
    with database.begin() as connection:
        row = store.get_delivery(connection, delivery_id)
        if row is None:
            raise NotFound(f"no delivery with id {delivery_id}")
        attempts = list(store.attempts_of(connection, [delivery_id]))
        probes = _probes(connection)
    return _with_attempts([row], {delivery_id: attempts}, probes)[0]


def retry_delivery(database: Database, delivery_id: int, clock: Clock) -> dict[str, Any]:
    """Send again now with a fresh retry schedule (whatever its status; the attempts so far are kept)."""
    with database.begin() as connection:
        if store.get_delivery(connection, delivery_id) is None:
            raise NotFound(f"no delivery with id {delivery_id}")
        if not store.requeue(connection, delivery_id, clock()):
            raise Conflict(f"delivery {delivery_id} is being attempted right now")
    return get_delivery(database, delivery_id)


def _require_source(database: Database, source_id: int) -> None:
    with database.begin() as connection:
        if get_row(connection, sources, source_id) is None:
            raise NotFound(f"no source with id {source_id}")


def breaker_of(database: Database, source_id: int) -> Breaker:
    _require_source(database, source_id)
    with database.begin() as connection:
        return Breaker.from_row(store.get_breaker(connection, source_id), SourceId(source_id))


def resume_source(database: Database, source_id: int, clock: Clock) -> Breaker:
    """Close the source's circuit breaker by hand: its waiting deliveries are due at once."""
    _require_source(database, source_id)
    now = clock()
    closed = BreakerPolicy.after_success(Breaker(SourceId(source_id)))
    with database.begin() as connection:
        store.save_breaker(connection, source_id, {**closed.values(), "updated_at": now})
        store.make_source_due(connection, source_id, now)
    return closed
