"""The event tables' bulk insert (straight to the driver, for speed; clicks through COPY on
PostgreSQL) stores exactly what SQLAlchemy's own insert stores: same text for times on SQLite, same
integers for money, same booleans, same text whatever characters it holds."""

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from clicktrail.config import Settings
from clicktrail.errors import StorageError
from clicktrail.storage import event_store, inserts
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from clicktrail.storage.schema import clicks, conversions, postback_log
from clicktrail.storage.types import UtcDateTime
from tests.support import codec, fresh_database


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(backend, tmp_path) as url:
        db = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(db.engine)
        yield db
        db.dispose()


def _click(moment: datetime, **values: Any) -> dict[str, Any]:
    return {
        "click_id": codec().mint(moment),
        "created_at": moment,
        "campaign_id": 1,
        "offer_id": 2,
        "source_id": 3,
        **values,
    }


def test_bulk_inserted_clicks_are_stored_as_sqlalchemy_would_store_them(database: Database) -> None:
    on_the_second = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)  # zero microseconds: the format's edge
    with_micros = datetime(2026, 11, 12, 9, 0, 0, 120, tzinfo=UTC)
    fast = [
        _click(on_the_second, cost=Decimal("0.05"), is_bot=True, is_unique=False, sub1="a"),
        _click(with_micros, cost=None, is_bot=False, is_unique=True, sub1=None),
        _click(on_the_second, is_bot=False, is_unique=True),  # other keys: column defaults
    ]
    reference = [{**row, "click_id": codec().mint(row["created_at"])} for row in fast]
    with database.begin() as connection:
        inserts.insert_clicks(connection, fast)
        for row in reference:
            connection.execute(insert(clicks).values(**row))
    with database.begin() as connection:
        raw = {
            row[0]: row[1:]
            for row in connection.exec_driver_sql(
                "SELECT click_id, created_at, cost, is_bot, is_unique, sub1 FROM clicks"
            )
        }
        typed = {row.click_id: row for row in connection.execute(select(clicks))}
    for ours, theirs in zip(fast, reference, strict=True):
        assert raw[ours["click_id"]] == raw[theirs["click_id"]]
        assert typed[ours["click_id"]].created_at == ours["created_at"]
        assert typed[ours["click_id"]].cost == ours.get("cost")
    assert len(raw) == 6


def test_a_time_range_query_finds_bulk_inserted_rows_at_its_edges(database: Database) -> None:
    moment = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    with database.begin() as connection:
        inserts.insert_clicks(connection, [_click(moment)])
        found = connection.execute(
            select(clicks.c.click_id).where(clicks.c.created_at >= moment, clicks.c.created_at <= moment)
        ).all()
    assert len(found) == 1


# Characters COPY's text format gives a meaning to (tab, newline, backslash, its "\\N" for NULL),
# quotes, and text beyond ASCII: a visitor's sub IDs and user agent can hold any of them.
AWKWARD_TEXTS = ["a\tb", "line\nbreak\r", "back\\slash", "\\N", "", "'quoted\" ; --", "Zürich 東京 🎯"]


def test_bulk_inserted_clicks_keep_every_character_of_their_text(database: Database) -> None:
    moment = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    rows = [
        _click(moment, sub1=text, sub2=None, external_id=text, user_agent=f"Mozilla/5.0 {text}")
        for text in AWKWARD_TEXTS
    ]
    with database.begin() as connection:
        inserts.insert_clicks(connection, rows)
    with database.begin() as connection:
        stored = {row.click_id: row for row in connection.execute(select(clicks))}
    for row in rows:
        assert stored[row["click_id"]].sub1 == row["sub1"]
        assert stored[row["click_id"]].external_id == row["external_id"]
        assert stored[row["click_id"]].user_agent == row["user_agent"]
        assert stored[row["click_id"]].sub2 is None


def test_a_bulk_insert_that_fails_raises_sqlalchemys_error_and_stores_none_of_the_batch(
    database: Database,
) -> None:
    moment = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    first = _click(moment)
    with database.begin() as connection:
        inserts.insert_clicks(connection, [first])
    batch = [_click(moment), {**first, "sub1": "again"}, _click(moment)]
    with pytest.raises(IntegrityError), database.begin() as connection:
        inserts.insert_clicks(connection, batch)
    with database.begin() as connection:
        stored = connection.execute(select(clicks.c.click_id, clicks.c.sub1)).all()
    assert [tuple(row) for row in stored] == [(first["click_id"], None)]


def test_a_click_batch_whose_connection_dies_fails_as_unavailable_and_the_next_is_stored(
    database: Database, backend: str
) -> None:
    """What the click writer sees when PostgreSQL drops its connection before the batch's COPY (run
    as its own transaction: Database.run_alone): the batch fails as 'unavailable' (its visitors get
    a 503), and the next batch is stored."""
    if backend == "sqlite":
        pytest.skip("an SQLite file has no connection to lose")
    moment = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    lost, kept = [_click(moment), _click(moment)], [_click(moment)]

    def lose_the_connection_then_insert(connection: Any) -> None:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with database.begin() as other:
            other.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
        inserts.insert_clicks(connection, lost)

    with pytest.raises(StorageError, match="unavailable"):
        database.run_alone(lose_the_connection_then_insert)
    database.run_alone(lambda connection: inserts.insert_clicks(connection, kept))
    with database.begin() as connection:
        stored = connection.execute(select(clicks.c.click_id)).scalars().all()
    assert stored == [kept[0]["click_id"]]


def test_a_click_batch_run_as_its_own_transaction_is_stored_whole_or_not_at_all(database: Database) -> None:
    """On PostgreSQL a click batch is one COPY outside BEGIN … COMMIT (Database.run_alone; on SQLite
    a transaction as any other): a row the database refuses (a click ID stored before) fails the
    whole batch, none of it stored, and the connection goes back to the pool ready for the next."""
    moment = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    first = _click(moment)
    batch = [_click(moment), dict(first)]
    database.run_alone(lambda connection: inserts.insert_clicks(connection, [first]))

    with pytest.raises(IntegrityError):
        database.run_alone(lambda connection: inserts.insert_clicks(connection, batch))
    later = _click(moment)
    database.run_alone(lambda connection: inserts.insert_clicks(connection, [later]))

    def write_then_fail() -> None:
        with database.begin() as connection:
            inserts.insert_clicks(connection, [_click(moment)])
            raise RuntimeError("the rest of the work failed")

    # The pooled connection is back in a transaction's hands: what a failed one wrote is undone.
    with pytest.raises(RuntimeError):
        write_then_fail()

    with database.begin() as connection:
        stored = connection.execute(select(clicks.c.click_id)).scalars().all()
    assert sorted(stored) == sorted([first["click_id"], later["click_id"]])


@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_the_fast_sqlite_time_text_is_the_text_sqlalchemys_own_processors_give(moment: datetime) -> None:
    dialect = sqlite.dialect()
    column_type = clicks.c.created_at.type
    assert isinstance(column_type, UtcDateTime)
    reference = column_type.dialect_impl(dialect).bind_processor(dialect)
    assert reference is not None
    assert inserts.sqlite_utc_text(moment) == reference(moment)


def _log_row(moment: datetime, **values: Any) -> dict[str, Any]:
    return {"received_at": moment, "method": "GET", "query": "click_id=x", "decision": "malformed", **values}


def _stored_as_the_driver_reads_them(database: Database, table: Table, order: str) -> list[tuple[Any, ...]]:
    """Every column but a generated `id`, as the driver returns it (no SQLAlchemy conversion)."""
    names = ", ".join(column.name for column in table.columns if column.name != "id")
    with database.begin() as connection:
        query = f"SELECT {names} FROM {table.name} ORDER BY {order}"  # noqa: S608 (the schema's own names)
        return [tuple(row) for row in connection.exec_driver_sql(query)]


def _stored_both_ways(
    database: Database,
    table: Table,
    order: str,
    bulk_insert: Callable[[Connection, Sequence[dict[str, Any]]], None],
    rows: Sequence[dict[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows as `bulk_insert` stores them, then (the table emptied) as SQLAlchemy's insert does."""
    with database.begin() as connection:
        bulk_insert(connection, rows)
    ours = _stored_as_the_driver_reads_them(database, table, order)
    with database.begin() as connection:
        connection.execute(delete(table))
        for row in rows:
            connection.execute(insert(table).values(**row))
    return ours, _stored_as_the_driver_reads_them(database, table, order)


def test_bulk_inserted_postback_log_rows_are_stored_as_sqlalchemys_own_insert_stores_them(
    database: Database,
) -> None:
    """On PostgreSQL the rows travel as one JSON array; whatever the text, time or missing value, the
    row stored is the one SQLAlchemy's insert stores."""
    on_the_second = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)
    with_micros = datetime(2026, 11, 12, 9, 0, 0, 120, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        _log_row(on_the_second, event=text, txid=text, detail=f"detail {text}", ip="2001:db8::1", via="pixel")
        for text in AWKWARD_TEXTS
    ] + [
        _log_row(with_micros, click_id=None, event=None, txid=None, ip=None, error="bad_click_id"),
        _log_row(with_micros, detail='{"json": ["in", "text"]}', conversion_id="01JXYZ"),  # via: default
    ]
    ours, sqlalchemys = _stored_both_ways(
        database, postback_log, "id", event_store.insert_postback_logs, rows
    )
    assert ours == sqlalchemys
    assert len(ours) == len(rows)


def test_bulk_inserted_conversions_keep_money_booleans_and_defaults_exact(database: Database) -> None:
    moment = datetime(2026, 11, 12, 9, 0, 0, 999_999, tzinfo=UTC)
    common = {"created_at": moment, "updated_at": moment, "click_time": moment, "event": "sale"}
    common |= {"status": "approved", "currency": "EUR", "campaign_id": 1, "offer_id": 2, "source_id": 3}
    most = Decimal("999999999999.999999")
    rows = [
        {**common, "conversion_id": "a", "click_id": "c1", "txid": "t", "revenue": most,
         "payout": Decimal("0"), "cost": Decimal("0.000001"), "is_bot": True, "sub1": "Zürich 東京 🎯"},
        {**common, "conversion_id": "b", "click_id": "c2", "txid": "", "revenue": Decimal("12.5"),
         "payout": Decimal("4.00")},  # cost (the server's default) and is_bot (SQLAlchemy's) left out
    ]  # fmt: skip
    ours, sqlalchemys = _stored_both_ways(
        database, conversions, "conversion_id", event_store.insert_conversions, rows
    )
    assert ours == sqlalchemys
    with database.begin() as connection:
        stored = event_store.conversions_of_clicks(connection, ["c1", "c2"])
    assert sorted(row.revenue for row in stored) == [Decimal("12.5"), most]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(text=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=300))
def test_any_text_a_bulk_insert_stores_reads_back_the_same(database: Database, text: str) -> None:
    """NUL and lone surrogates excepted: PostgreSQL's text holds neither (the intake cleans them out)."""
    row = _log_row(datetime(2026, 11, 12, 9, 0, tzinfo=UTC), detail=text, txid=text[:255])
    with database.begin() as connection:
        connection.execute(delete(postback_log))
        event_store.insert_postback_logs(connection, [row])
        stored = connection.execute(select(postback_log.c.detail, postback_log.c.txid)).one()
    assert tuple(stored) == (text, text[:255])
