"""Reading conversions and the inbound postback log back, newest first, a page at a time."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from clicktrail.conversions.decision import Decision
from clicktrail.errors import ValidationFailed
from clicktrail.storage import event_store as store
from clicktrail.storage.database import Database
from clicktrail.storage.event_store import Scope


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime | None = None
    end: datetime | None = None
    """Exclusive."""


@dataclass(frozen=True, slots=True)
class ConversionPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PostbackPage:
    rows: list[Row[Any]]
    next_cursor: str | None


def find_conversions(
    database: Database,
    *,
    click_id: str | None,
    filters: Sequence[tuple[str, str | int]],
    period: TimeRange,
    cursor: str | None,
    limit: int,
    within: Scope = None,
) -> ConversionPage:
    with database.begin() as connection:
        rows = store.list_conversions(
            connection,
            click_id=click_id.lower() if click_id else None,
            filters=filters,
            start=period.start,
            end=period.end,
            before=cursor,
            limit=limit + 1,
            within=within,
        )
        page = rows[:limit]
        history: dict[str, list[Row[Any]]] = defaultdict(list)
        for change in store.status_history(connection, [row.conversion_id for row in page]):
            history[change.conversion_id].append(change)
    items = [{**row._asdict(), "history": history[row.conversion_id]} for row in page]
    next_cursor = page[-1].conversion_id if len(rows) > limit else None
    return ConversionPage(items, next_cursor)


def find_postbacks(
    database: Database,
    *,
    click_id: str | None,
    txid: str | None,
    decision: str | None,
    period: TimeRange,
    cursor: str | None,
    limit: int,
    within: Scope = None,
) -> PostbackPage:
    if decision is not None and decision not in {d.value for d in Decision}:
        allowed = ", ".join(d.value for d in Decision)
        raise ValidationFailed(f"decision must be one of {allowed}", {"decision": allowed})
    before: int | None = None
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 18:
            raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
        before = int(cursor)
    with database.begin() as connection:
        rows = store.list_postbacks(
            connection,
            click_id=click_id.lower() if click_id else None,
            txid=txid,
            decision=decision,
            start=period.start,
            end=period.end,
            before=before,
            limit=limit + 1,
            within=within,
        )
    page = list(rows[:limit])
    return PostbackPage(page, str(page[-1].id) if len(rows) > limit else None)


@dataclass(frozen=True, slots=True)
class ClickPage:
    rows: list[Row[Any]]
    next_cursor: str | None


def find_clicks(
    database: Database,
    *,
    filters: Sequence[tuple[str, str | int]],
    period: TimeRange,
    cursor: str | None,
    limit: int,
    within: Scope = None,
) -> ClickPage:
    """The click log, newest first (click IDs sort by time)."""
    with database.begin() as connection:
        rows = store.list_clicks(
            connection, filters=filters, start=period.start, end=period.end, before=cursor, limit=limit + 1,
            within=within,
        )  # fmt: skip
    page = list(rows[:limit])
    return ClickPage(page, page[-1].click_id if len(rows) > limit else None)
