"""SQL for the event tables: clicks, conversions and their history, the postback log, the outbox."""

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Result,
    Row,
    Select,
    String,
    func,
    insert,
    select,
    type_coerce,
    update,
)

from clicktrail.storage.schema import clicks, conversion_status_history, conversions, deliveries, postback_log

ClickRow = Mapping[str, Any]
Scope = tuple[str, tuple[int, ...]] | None
"""Only rows whose source_id or offer_id is one of these IDs (an account's scope); None: every row."""


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


def _newest_first(
    query: Select[Any],
    *,
    time_column: Any,
    id_column: Any,
    start: datetime | None,
    end: datetime | None,
    before: str | int | None,
    limit: int,
) -> Select[Any]:
    """A log page: within [start, end), older than the cursor `before`, newest first (IDs sort by time)."""
    if start is not None:
        query = query.where(time_column >= start)
    if end is not None:
        query = query.where(time_column < end)
    if before is not None:
        query = query.where(id_column < before)
    return query.order_by(id_column.desc()).limit(limit)


def list_clicks(
    connection: Connection,
    *,
    filters: Sequence[tuple[str, str | int]],
    start: datetime | None,
    end: datetime | None,
    before: str | None,
    limit: int,
    within: Scope = None,
) -> Sequence[Row[Any]]:
    """Newest first. Filter columns come from the caller's whitelist; values are bound."""
    query = select(clicks)
    for column, value in filters:
        query = query.where(clicks.c[column] == value)
    if within is not None:
        query = query.where(clicks.c[within[0]].in_(within[1]))
    page = _newest_first(
        query, time_column=clicks.c.created_at, id_column=clicks.c.click_id, start=start, end=end,
        before=before, limit=limit,
    )  # fmt: skip
    return connection.execute(page).all()


def list_conversions(
    connection: Connection,
    *,
    click_id: str | None,
    filters: Sequence[tuple[str, str | int]],
    start: datetime | None,
    end: datetime | None,
    before: str | None,
    limit: int,
    within: Scope = None,
) -> Sequence[Row[Any]]:
    query = select(conversions)
    if click_id is not None:
        query = query.where(conversions.c.click_id == click_id)
    if within is not None:
        query = query.where(conversions.c[within[0]].in_(within[1]))
    if any(column not in conversions.c for column, _ in filters):
        # Device, OS and browser live on the click.
        query = query.join(clicks, clicks.c.click_id == conversions.c.click_id)
    for column, value in filters:
        query = query.where((conversions if column in conversions.c else clicks).c[column] == value)
    page = _newest_first(
        query, time_column=conversions.c.created_at, id_column=conversions.c.conversion_id, start=start,
        end=end, before=before, limit=limit,
    )  # fmt: skip
    return connection.execute(page).all()


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
    within: Scope = None,
) -> Sequence[Row[Any]]:
    query = select(postback_log)
    if within is not None:
        # The log row names a click; its click says whose it is. Postbacks for no stored click are
        # nobody's but the owner's.
        query = query.join(clicks, clicks.c.click_id == postback_log.c.click_id).where(
            clicks.c[within[0]].in_(within[1])
        )
    if click_id is not None:
        query = query.where(postback_log.c.click_id == click_id)
    if txid is not None:
        query = query.where(postback_log.c.txid == txid)
    if decision is not None:
        query = query.where(postback_log.c.decision == decision)
    page = _newest_first(
        query, time_column=postback_log.c.received_at, id_column=postback_log.c.id, start=start, end=end,
        before=before, limit=limit,
    )  # fmt: skip
    return connection.execute(page).all()


_RAW_TYPES: dict[str, Any] = {"cost": BigInteger, "revenue": BigInteger, "payout": BigInteger,
                              "is_bot": Integer, "is_unique": Integer}  # fmt: skip


def _plain(column: Any) -> Any:
    """The column as the driver returns it (micros; UTC text or naive timestamp; 0/1 or bool), skipping
    the Python-side conversions: the analytics feed writes values straight out."""
    return type_coerce(column, _RAW_TYPES.get(column.name, String)).label(column.name)


def click_rows_between(
    connection: Connection, low_id: str, high_id: str, names: Sequence[str]
) -> Iterator[Row[Any]]:
    """The named columns of clicks whose IDs (so whose times) fall in [low_id, high_id), streamed."""
    query = select(*(_plain(clicks.c[name]) for name in names)).where(
        clicks.c.click_id >= low_id, clicks.c.click_id < high_id
    )
    rows: Result[Any] = connection.execution_options(yield_per=5000).execute(query)
    yield from rows


def first_click_id(connection: Connection) -> str | None:
    return connection.execute(select(func.min(clicks.c.click_id))).scalar_one_or_none()


def conversion_rows_between(
    connection: Connection, start: datetime, end: datetime, names: Sequence[str]
) -> Iterator[Row[Any]]:
    """The named columns of conversions last changed in [start, end), streamed; names the conversion
    does not carry (device, OS…) come from its click."""
    columns = [_plain(conversions.c[name] if name in conversions.c else clicks.c[name]) for name in names]
    query = (
        select(*columns)
        .join(clicks, clicks.c.click_id == conversions.c.click_id)
        .where(conversions.c.updated_at >= start, conversions.c.updated_at < end)
    )
    rows: Result[Any] = connection.execution_options(yield_per=5000).execute(query)
    yield from rows


def first_conversion_change(connection: Connection) -> datetime | None:
    value = connection.execute(select(func.min(conversions.c.updated_at))).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
