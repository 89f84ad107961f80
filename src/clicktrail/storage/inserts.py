"""Rows into the event tables, fast: the conversions the columns' types would apply, done once per
batch's plan, and the values handed to the driver's own cursor. Apart from event_store.py (which
builds on it) because it runs for every click and is compiled with mypyc (clicktrail/compiled.py);
the queries there return SQLAlchemy rows, which mypyc would check against their stub's tuple type.
"""

import functools
import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from clicktrail.storage.database import driver_cursor
from clicktrail.storage.schema import clicks
from clicktrail.storage.types import UtcDateTime

ClickRow = Mapping[str, Any]


def insert_clicks(connection: Connection, rows: Sequence[ClickRow]) -> None:
    """On PostgreSQL through COPY, on SQLite through insert_rows.

    Clicks are the one table written in batches of a hundred rows outside a pipeline (COPY cannot run
    in one). COPY is one statement for the whole batch instead of a Bind and Execute per row: with
    2 workers a click cost the server 129 → 108 µs of CPU and PostgreSQL 34 → 17 µs, 10,356 →
    13,233 clicks/s (scripts/cpu_per_request.py; BENCHMARKS.md, "PostgreSQL clicks through COPY")."""
    if connection.dialect.name == "postgresql":
        copy_rows(connection, clicks, rows)
    else:
        insert_rows(connection, clicks, rows)


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Many rows, one statement per set of keys (a missing key takes the column's default), executed
    by the driver; rows with the same keys keep their order.

    SQLAlchemy's compiled insert spent more time preparing each row's parameters than the database
    spent storing it (py-spy and cProfile, BENCHMARKS.md); this applies the same column types'
    conversions, so the stored values are identical, and hands them to the driver's own cursor:
    on SQLite as plain tuples to executemany, on PostgreSQL as one JSON array for the whole set,
    which `json_populate_recordset` turns back into rows of the table's own types. In a pipeline,
    psycopg's executemany sends each row as a statement of its own and flushes the socket after
    each: a batch of 16 postbacks wrote some 50 rows in 50 sends. Errors leave as SQLAlchemy's, as
    from a statement run through it."""
    postgres = connection.dialect.name == "postgresql"
    with driver_cursor(connection) as cursor:
        for plan, same_keys in _by_keys(connection.dialect, table, rows):
            if postgres:
                records = [plan.json_record(row) for row in same_keys]
                cursor.execute(plan.insert_from_json, (json.dumps(records, ensure_ascii=False),))
            else:
                cursor.executemany(plan.insert, [plan.convert(row) for row in same_keys])


def copy_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """insert_rows through PostgreSQL's COPY (text format, every value escaped by psycopg): the same
    values, converted by the same plan, and the driver's errors raised as SQLAlchemy's, as from
    insert_rows. Not inside a pipeline (psycopg refuses COPY there)."""
    with driver_cursor(connection) as cursor:
        for plan, same_keys in _by_keys(connection.dialect, table, rows):
            with cursor.copy(plan.copy) as copy:
                for row in same_keys:
                    copy.write_row(plan.convert(row))


RowConverter = Callable[[Mapping[str, Any]], tuple[Any, ...]]


class _InsertPlan(NamedTuple):
    insert: str
    """INSERT … VALUES with one marker per column, for executemany."""
    copy: str
    """COPY … FROM STDIN for the same columns, in the same order."""
    insert_from_json: str
    """On PostgreSQL: INSERT … SELECT the same columns FROM a JSON array of objects (one marker)."""
    convert: RowConverter
    """A row's values for those columns, converted as the columns' types would bind them."""
    json_record: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The same values by column name, times as ISO 8601 text (which JSON carries and PostgreSQL
    reads back), for insert_from_json."""


def _by_keys(
    dialect: Dialect, table: Table, rows: Sequence[Mapping[str, Any]]
) -> Iterator[tuple[_InsertPlan, list[Mapping[str, Any]]]]:
    """The rows grouped by their set of keys, in order, each group with its plan."""
    by_keys: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_keys.setdefault(tuple(row), []).append(row)
    for names, same_keys in by_keys.items():
        yield _insert_plan(dialect, table, names), same_keys


@functools.cache
def _insert_plan(dialect: Dialect, table: Table, names: tuple[str, ...]) -> _InsertPlan:
    given = [table.c[name] for name in names]  # a KeyError for a name that is not a column
    # Columns the rows leave out but SQLAlchemy would fill with a Python-side default (is_bot=False).
    defaults = [
        (column, column.default.arg)
        for column in table.columns
        if column.name not in names and isinstance(column.default, ScalarElementColumnDefault)
    ]
    columns = given + [column for column, _ in defaults]
    default_values = tuple(value for _, value in defaults)
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    column_list = ", ".join(column.name for column in columns)
    # Only the table's own names reach this text (looked up above); every value is bound.
    insert = (
        f"INSERT INTO {table.name} ({column_list}) "  # noqa: S608
        f"VALUES ({', '.join([marker] * len(columns))})"
    )
    copy = f"COPY {table.name} ({column_list}) FROM STDIN"
    insert_from_json = (
        f"INSERT INTO {table.name} ({column_list}) "  # noqa: S608
        f"SELECT {column_list} FROM json_populate_recordset(NULL::{table.name}, {marker})"
    )
    # The dialect's own processors: SQLite stores times as text in SQLAlchemy's format, which
    # `sqlite_utc_text` writes directly (each click has its own time: the two layers of SQLAlchemy's
    # processors were 9 of a click row's 11 µs of conversion).
    processors = [
        sqlite_utc_text
        if dialect.name == "sqlite" and isinstance(column.type, UtcDateTime)
        else column.type.dialect_impl(dialect).bind_processor(dialect)
        for column in columns
    ]
    converters = [
        (index, _remembering(process)) for index, process in enumerate(processors) if process is not None
    ]
    values = operator.itemgetter(*names)

    def convert(row: Mapping[str, Any]) -> tuple[Any, ...]:
        converted = [*(values(row) if len(names) > 1 else (values(row),)), *default_values]
        for index, process in converters:
            converted[index] = process(converted[index])
        return tuple(converted)

    column_names = [column.name for column in columns]
    times = [column.name for column in columns if isinstance(column.type, UtcDateTime)]
    as_text = _remembering(_iso_text)

    def json_record(row: Mapping[str, Any]) -> dict[str, Any]:
        record = dict(zip(column_names, convert(row), strict=True))
        for name in times:
            record[name] = as_text(record[name])
        return record

    return _InsertPlan(insert, copy, insert_from_json, convert, json_record)


def _iso_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def sqlite_utc_text(value: datetime | None) -> str | None:
    """What UtcDateTime and SQLAlchemy's SQLite DATETIME store for an aware time: the UTC time as
    `YYYY-MM-DD HH:MM:SS.ffffff` (tests/test_event_store.py holds the two to the same text)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("refusing a naive datetime: all times are UTC and aware")
        value = value.astimezone(UTC)
    text = value.isoformat(" ")[:-6]  # without "+00:00"
    return text if value.microsecond else text + ".000000"


def _remembering(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`process` that converts a value it has just converted only once: the rows of one batch share
    their time (`now` in every created_at, updated_at, received_at...), and formatting a datetime
    was most of a postback row's conversion (py-spy). Identity, not equality: only the same object."""
    last: tuple[Any, Any] = (object(), None)

    def remembered(value: Any) -> Any:
        nonlocal last
        seen, converted = last  # one tuple, replaced whole: safe when two threads share the plan
        if value is seen:
            return converted
        converted = process(value)
        last = (value, converted)
        return converted

    return remembered
