"""The event tables' bulk insert (straight to the driver, for speed) stores exactly what SQLAlchemy's
own insert stores: same text for times on SQLite, same integers for money, same booleans."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.dialects import sqlite

from clicktrail.config import Settings
from clicktrail.storage import event_store
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from clicktrail.storage.schema import clicks
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
        event_store.insert_clicks(connection, fast)
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
        event_store.insert_clicks(connection, [_click(moment)])
        found = connection.execute(
            select(clicks.c.click_id).where(clicks.c.created_at >= moment, clicks.c.created_at <= moment)
        ).all()
    assert len(found) == 1


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
    assert event_store.sqlite_utc_text(moment) == reference(moment)
