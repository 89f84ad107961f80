"""SQL for the event tables: clicks, conversions and their history, the postback log, the outbox."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from clicktrail.storage.schema import clicks, conversion_status_history, conversions, deliveries, postback_log

ClickRow = Mapping[str, Any]


def insert_clicks(connection: Connection, rows: Sequence[ClickRow]) -> None:
    connection.execute(insert(clicks), list(rows))


def get_click(connection: Connection, click_id: str) -> Row[Any] | None:
    return connection.execute(select(clicks).where(clicks.c.click_id == click_id)).one_or_none()


def find_conversion(connection: Connection, click_id: str, event: str, txid: str) -> Row[Any] | None:
    query = select(conversions).where(
        conversions.c.click_id == click_id, conversions.c.event == event, conversions.c.txid == txid
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def insert_conversion(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(conversions).values(**values))


def set_conversion_status(connection: Connection, conversion_id: str, status: str, now: datetime) -> None:
    connection.execute(
        update(conversions)
        .where(conversions.c.conversion_id == conversion_id)
        .values(status=status, updated_at=now)
    )


def insert_status_change(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(conversion_status_history).values(**values))


def insert_delivery(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(deliveries).values(**values))


def insert_postback_log(connection: Connection, values: Mapping[str, Any]) -> None:
    connection.execute(insert(postback_log).values(**values))


def status_history(connection: Connection, conversion_ids: Sequence[str]) -> Sequence[Row[Any]]:
    if not conversion_ids:
        return []
    query = (
        select(conversion_status_history)
        .where(conversion_status_history.c.conversion_id.in_(conversion_ids))
        .order_by(conversion_status_history.c.id)
    )
    return connection.execute(query).all()


def list_conversions(
    connection: Connection,
    *,
    click_id: str | None,
    campaign_id: int | None,
    start: datetime | None,
    end: datetime | None,
    before: str | None,
    limit: int,
) -> Sequence[Row[Any]]:
    query = select(conversions).order_by(conversions.c.conversion_id.desc()).limit(limit)
    if click_id is not None:
        query = query.where(conversions.c.click_id == click_id)
    if campaign_id is not None:
        query = query.where(conversions.c.campaign_id == campaign_id)
    if start is not None:
        query = query.where(conversions.c.created_at >= start)
    if end is not None:
        query = query.where(conversions.c.created_at < end)
    if before is not None:
        query = query.where(conversions.c.conversion_id < before)
    return connection.execute(query).all()


def list_postbacks(
    connection: Connection,
    *,
    click_id: str | None,
    txid: str | None,
    decision: str | None,
    start: datetime | None,
    end: datetime | None,
    before: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    query = select(postback_log).order_by(postback_log.c.id.desc()).limit(limit)
    if click_id is not None:
        query = query.where(postback_log.c.click_id == click_id)
    if txid is not None:
        query = query.where(postback_log.c.txid == txid)
    if decision is not None:
        query = query.where(postback_log.c.decision == decision)
    if start is not None:
        query = query.where(postback_log.c.received_at >= start)
    if end is not None:
        query = query.where(postback_log.c.received_at < end)
    if before is not None:
        query = query.where(postback_log.c.id < before)
    return connection.execute(query).all()
