"""SQL for offers, sources and campaigns."""

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, insert, select, update

from clicktrail.storage.schema import CATALOG_VERSION, campaigns, cost_updates, landers, meta, offers, sources


def new_version() -> str:
    return secrets.token_hex(8)


def insert_row(connection: Connection, table: Table, values: Mapping[str, Any]) -> Row[Any]:
    new_id = connection.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
    return connection.execute(select(table).where(table.c.id == new_id)).one()


def update_row(
    connection: Connection, table: Table, row_id: int, values: Mapping[str, Any]
) -> Row[Any] | None:
    if values:
        connection.execute(update(table).where(table.c.id == row_id).values(**values))
    return connection.execute(select(table).where(table.c.id == row_id)).one_or_none()


def get_row(connection: Connection, table: Table, row_id: int) -> Row[Any] | None:
    return connection.execute(select(table).where(table.c.id == row_id)).one_or_none()


def list_rows(connection: Connection, table: Table, *, after_id: int, limit: int) -> Sequence[Row[Any]]:
    query = select(table).where(table.c.id > after_id).order_by(table.c.id).limit(limit)
    return connection.execute(query).all()


def all_rows(connection: Connection) -> tuple[Sequence[Row[Any]], Sequence[Row[Any]], Sequence[Row[Any]]]:
    return (
        connection.execute(select(offers)).all(),
        connection.execute(select(sources)).all(),
        connection.execute(select(campaigns)).all(),
    )


def all_landers(connection: Connection) -> Sequence[Row[Any]]:
    return connection.execute(select(landers)).all()


def catalog_version(connection: Connection) -> str | None:
    value = connection.execute(
        select(meta.c.value).where(meta.c.name == CATALOG_VERSION)
    ).scalar_one_or_none()
    return None if value is None else str(value)


def key_exists(connection: Connection, key: str) -> bool:
    return connection.execute(select(campaigns.c.id).where(campaigns.c.key == key)).first() is not None


def insert_cost_update(connection: Connection, values: Mapping[str, Any]) -> Row[Any]:
    return insert_row(connection, cost_updates, values)


def list_cost_updates(connection: Connection, campaign_id: int | None = None) -> Sequence[Row[Any]]:
    query = select(cost_updates).order_by(cost_updates.c.id)
    if campaign_id is not None:
        query = query.where(cost_updates.c.campaign_id == campaign_id)
    return connection.execute(query).all()
