"""SQL for routing's own state: landers, today's conversions of capped offers, lander click-throughs."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, update

from clicktrail.storage.event_store import plain_column
from clicktrail.storage.schema import clicks, conversions, lander_clicks

# A conversion counts against its offer's cap unless the merchant refused or reversed it.
_CAPPED_STATUSES = ("approved", "pending")


def conversions_since(connection: Connection, offer_ids: Sequence[int], start: datetime) -> dict[int, int]:
    """Conversions per offer first recorded at or after `start` (approved or pending)."""
    query = (
        select(conversions.c.offer_id, func.count())
        .where(
            conversions.c.offer_id.in_(offer_ids),
            # updated_at >= created_at always: the bound lets the updated_at index narrow the scan.
            conversions.c.updated_at >= start,
            conversions.c.created_at >= start,
            conversions.c.status.in_(_CAPPED_STATUSES),
        )
        .group_by(conversions.c.offer_id)
    )
    return {int(offer_id): int(count) for offer_id, count in connection.execute(query).all()}


def lander_click_exists(connection: Connection, click_id: str) -> bool:
    query = select(lander_clicks.c.click_id).where(lander_clicks.c.click_id == click_id)
    return connection.execute(query).first() is not None


def insert_lander_click(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(lander_clicks).values(**values))


def move_click_to_offer(connection: Connection, click_id: str, offer_id: int) -> None:
    """The visitor chose another of the path's offers on a multi-offer lander: its conversions follow."""
    connection.execute(update(clicks).where(clicks.c.click_id == click_id).values(offer_id=offer_id))


def lander_clicks_between(start: datetime, end: datetime, names: Sequence[str]) -> Select[Any]:
    """The named columns of the click-throughs recorded in [start, end), for the feed (write_csv)."""
    return select(*(plain_column(lander_clicks.c[name]) for name in names)).where(
        lander_clicks.c.created_at >= start, lander_clicks.c.created_at < end
    )


def first_lander_click(connection: Connection) -> datetime | None:
    value = connection.execute(select(func.min(lander_clicks.c.created_at))).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
