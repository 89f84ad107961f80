"""SQL for the event tables: clicks, conversions and their history, the postback log, the outbox."""

import collections
import csv
import functools
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Integer,
    Row,
    Select,
    String,
    Table,
    func,
    select,
    type_coerce,
)

from clicktrail.storage.database import copy_out, counted_executemany, pipeline
from clicktrail.storage.inserts import RowConverter, insert_rows
from clicktrail.storage.schema import (
    CATALOG_VERSION,
    clicks,
    conversion_status_history,
    conversions,
    deliveries,
    meta,
    postback_log,
)

Scope = tuple[str, tuple[int, ...]] | None
"""Only rows whose source_id or offer_id is one of these IDs (an account's scope); None: every row."""


def get_click(connection: Connection, click_id: str) -> Row[Any] | None:
    return connection.execute(select(clicks).where(clicks.c.click_id == click_id)).one_or_none()


_CONVERSION_NAMES = ("conversion_id", "click_id", "event", "txid", "status", "revenue")


def conversions_of_clicks(connection: Connection, click_ids: Sequence[str]) -> Sequence[Any]:
    """Every conversion of these clicks, unlocked: a status change written from it says which
    status it expects to replace (set_conversion_statuses)."""
    if not click_ids:
        return []
    return select_rows(connection, conversions, _CONVERSION_NAMES, "click_id", click_ids)


class BatchReads(NamedTuple):
    clicks: dict[str, Any]
    """The clicks found, by ID, with the columns asked for (as attributes: `row.offer_id`)."""
    conversions: Sequence[Any]
    """Every conversion of those clicks, as conversions_of_clicks reads it."""
    catalog_version: str | None
    """The catalog's version as stored now: a snapshot of this version knows every source's rule."""


def postback_batch_reads(
    connection: Connection, click_ids: Sequence[str], columns: Sequence[str]
) -> BatchReads:
    """What a postback batch reads first, on PostgreSQL in one round trip: the clicks found among
    `click_ids` (their ID and `columns`), every conversion of them, and the catalog's version."""
    lookups: list[Query] = [
        (clicks, ("click_id", *columns), "click_id", click_ids),
        (conversions, _CONVERSION_NAMES, "click_id", click_ids),
    ]
    # A batch none of whose postbacks names a well-formed click looks nothing up (`IN ()` is no SQL).
    *found, version = select_together(
        connection, [*(lookups if click_ids else []), (meta, ("value",), "name", [CATALOG_VERSION])]
    )
    found_clicks, found_conversions = found or ([], [])
    return BatchReads(
        {row.click_id: row for row in found_clicks},
        found_conversions,
        str(version[0].value) if version else None,
    )


def select_rows(
    connection: Connection,
    table: Table,
    names: tuple[str, ...],
    key: str,
    values: Sequence[Any],
) -> list[Any]:
    """The named columns of the rows whose `key` is one of `values`, as named tuples, read by the
    driver.

    Like insert_rows: SQLAlchemy's compiled select (cache key, expanding IN, result metadata) cost
    more per batch of postbacks than the query did; this applies the same column types' result
    conversions, so the values are the ones a Core select gives."""
    return select_together(connection, [(table, names, key, values)])[0]


Query = tuple[Table, tuple[str, ...], str, Sequence[Any]]
"""For select_together: the table, the names, the key and its values (select_rows)."""


def select_together(connection: Connection, queries: Sequence[Query]) -> list[list[Any]]:
    """select_rows for each query, all sent before any answer is read (on PostgreSQL, one round
    trip: storage/database.py, `pipeline`). The driver's own cursors: SQLAlchemy's result would read
    a pipelined query's description before its answer came, and close it as one with no rows."""
    plans = [_select_plan(connection.dialect, table, names, key) for table, names, key, _ in queries]
    driver = connection.connection
    with pipeline(connection):
        cursors = []
        for plan, (_, _, _, values) in zip(plans, queries, strict=True):
            cursor = driver.cursor()
            cursor.execute(f"{plan.head}{', '.join([plan.marker] * len(values))})", tuple(values))
            cursors.append(cursor)
        try:
            return [
                [plan.make(row) for row in cursor.fetchall()]
                for plan, cursor in zip(plans, cursors, strict=True)
            ]
        finally:
            for cursor in cursors:
                cursor.close()


RowMaker = Callable[[Sequence[Any]], Any]


class _SelectPlan(NamedTuple):
    head: str  # up to the IN list's opening parenthesis
    marker: str
    make: RowMaker


@functools.cache
def _select_plan(dialect: Dialect, table: Table, names: tuple[str, ...], key: str) -> _SelectPlan:
    columns = [table.c[name] for name in names]  # a KeyError for a name that is not a column
    table.c[key]  # the same check for the key
    # Only the table's own names reach this text (looked up above); every value is bound.
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    # One marker per value, as SQLAlchemy's expanding IN gave (PostgreSQL's `= ANY(array)` measured
    # no better under the postback bench).
    head = f"SELECT {', '.join(names)} FROM {table.name} WHERE {key} IN ("  # noqa: S608
    processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
    converters = [(index, process) for index, process in enumerate(processors) if process is not None]
    record = collections.namedtuple(f"{table.name}_row", names)  # type: ignore[misc]
    build = record._make

    def make(row: Sequence[Any]) -> Any:
        if not converters:
            return build(row)
        values = list(row)
        for index, process in converters:
            values[index] = process(values[index])
        return build(values)

    return _SelectPlan(head, marker, make)


def insert_conversions(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    insert_rows(connection, conversions, rows)


def set_conversion_statuses(
    connection: Connection, changes: Sequence[Mapping[str, Any]]
) -> Callable[[], int]:
    """Each change: {"id": conversion ID, "status": ..., "updated_at": ..., "old_status": the status
    it replaces}, applied in order (one executemany on the driver's cursor, the columns' own
    conversions applied, as insert_rows does), and only where the conversion still has its
    `old_status`. Returns the function that counts the changes applied, to call once the statement
    has been answered (after the pipeline it runs in): fewer than asked means another transaction
    changed one of these conversions since it was read.

    Optimistic, where the read used to lock the batch's conversions (FOR UPDATE): two workers'
    batches then waited for each other whenever they shared a click, duplicates included (456 reads
    over 10 ms, up to 34, in two minutes of paced postbacks: BENCHMARKS.md, "Session of 2026-12-06
    (11:29 UTC)"); now only two changes of one conversion at once wait, and the later is decided
    again."""
    if not changes:
        return lambda: 0
    sql, convert = _status_update_plan(connection.dialect)
    return counted_executemany(connection, sql, [convert(change) for change in changes])


@functools.cache
def _status_update_plan(dialect: Dialect) -> tuple[str, RowConverter]:
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    # Fixed names; every value is bound.
    sql = (
        f"UPDATE conversions SET status = {marker}, updated_at = {marker} "  # noqa: S608
        f"WHERE conversion_id = {marker} AND status = {marker}"
    )
    processors = [
        conversions.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in ("status", "updated_at", "conversion_id")
    ]
    process_status, process_time, process_id = (_same if p is None else p for p in processors)

    def convert(change: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            process_status(change["status"]),
            process_time(change["updated_at"]),
            process_id(change["id"]),
            process_status(change["old_status"]),
        )

    return sql, convert


def _same(value: Any) -> Any:
    return value


def insert_status_changes(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    insert_rows(connection, conversion_status_history, rows)


def insert_deliveries(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    insert_rows(connection, deliveries, rows)


def insert_postback_logs(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    insert_rows(connection, postback_log, rows)


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


plain_column = _plain  # for the other event tables' feeds (storage/routing_store.py)


def clicks_between(low_id: str, high_id: str, names: Sequence[str]) -> Select[Any]:
    """The named columns of clicks whose IDs (so whose times) fall in [low_id, high_id), for the feed
    (write_csv)."""
    return select(*(_plain(clicks.c[name]) for name in names)).where(
        clicks.c.click_id >= low_id, clicks.c.click_id < high_id
    )


def first_click_id(connection: Connection) -> str | None:
    return connection.execute(select(func.min(clicks.c.click_id))).scalar_one_or_none()


def conversions_changed_between(start: datetime, end: datetime, names: Sequence[str]) -> Select[Any]:
    """The named columns of conversions last changed in [start, end), for the feed (write_csv); names
    the conversion does not carry (device, OS…) come from its click."""
    columns = [_plain(conversions.c[name] if name in conversions.c else clicks.c[name]) for name in names]
    return (
        select(*columns)
        .join(clicks, clicks.c.click_id == conversions.c.click_id)
        .where(conversions.c.updated_at >= start, conversions.c.updated_at < end)
    )


def write_csv(
    connection: Connection, query: Select[Any], out: IO[bytes], *, every: Callable[[], None] = lambda: None
) -> int:
    """Write the query's rows to `out` as CSV (no header; NULL as an empty field, text quoted where it
    must be, lines ended by LF) and say how many there were: the analytics feed's copy of a window.

    On PostgreSQL the server writes the CSV itself (`COPY (query) TO STDOUT`): the rows never become
    Python objects (`scripts/bench_reports.py --clicks 400000 --runs 1 --database-url …`: feed_s
    4.3-4.5 -> 1.5-1.8 s; BENCHMARKS.md). The query's
    values are bound into its text (COPY takes no parameters): they are the feed's own window
    bounds. `every` is called every few hundred rows (the feed rests there: reports/feed.py,
    WorkShare).

    On SQLite the rows are streamed through the csv module, without `every`: a read left open over
    rests keeps SQLite's log from starting over after a checkpoint, so it grows meanwhile, and paced
    clicks' p99 was no better with the rests there (BENCHMARKS.md, "Session of 2026-12-07 (05:50
    UTC)"); the feed rests between windows."""
    if connection.dialect.name == "postgresql":
        statement = query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        # UTF-8 whatever the connection's encoding: DuckDB reads UTF-8.
        sql = f"COPY ({statement}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')"
        return copy_out(connection, sql, out.write, every)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text, lineterminator="\n")  # as PostgreSQL ends its lines
        count = 0
        for row in connection.execution_options(yield_per=5000).execute(query):
            writer.writerow(row)
            count += 1
        return count
    finally:
        text.flush()
        text.detach()  # `out` stays open: it is the caller's


def first_conversion_change(connection: Connection) -> datetime | None:
    value = connection.execute(select(func.min(conversions.c.updated_at))).scalar_one_or_none()
    return value if isinstance(value, datetime) else None
