"""PostgreSQL's COPY … TO STDOUT read straight from libpq (the report feed's copy of a window): every
row as the server sent it, and a copy that fails, on the server or on our side, leaves as an error
and leaves the pool able to serve the next transaction."""

from collections.abc import Iterator

import pytest
from sqlalchemy.exc import DBAPIError

from clicktrail.errors import ValidationFailed
from clicktrail.storage.database import Database, copy_out
from tests.support import fresh_postgres_database

pytestmark = pytest.mark.postgres

NUMBERS = "COPY (SELECT i, 'row ' || i FROM generate_series(1, {n}) AS i) TO STDOUT (FORMAT csv)"


@pytest.fixture
def database() -> Iterator[Database]:
    with fresh_postgres_database() as url:
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


def _still_serves(database: Database) -> None:
    with database.begin() as connection:
        assert connection.exec_driver_sql("SELECT 41 + 1").scalar_one() == 42


def test_every_row_arrives_as_the_server_wrote_it_and_the_rests_come_every_256_rows(
    database: Database,
) -> None:
    rows: list[bytes] = []
    rests: list[int] = []
    with database.begin() as connection:
        count = copy_out(connection, NUMBERS.format(n=1000), rows.append, lambda: rests.append(len(rows)))
    assert count == 1000
    assert b"".join(rows) == b"".join(f"{i},row {i}\n".encode() for i in range(1, 1001))
    assert rests == [256, 512, 768]
    _still_serves(database)


def test_an_empty_copy_writes_nothing(database: Database) -> None:
    rows: list[bytes] = []
    with database.begin() as connection:
        assert copy_out(connection, NUMBERS.format(n=0), rows.append, lambda: None) == 0
    assert rows == []


def test_a_copy_the_server_fails_midway_raises_its_error_and_the_pool_serves_on(database: Database) -> None:
    rows: list[bytes] = []
    failing = "COPY (SELECT 1 / (300 - i) FROM generate_series(1, 100000) AS i) TO STDOUT (FORMAT csv)"
    with pytest.raises(ValidationFailed, match="division by zero"), database.begin() as connection:
        copy_out(connection, failing, rows.append, lambda: None)
    assert 0 < len(rows) < 300  # what came before the error, no more
    _still_serves(database)


def test_a_statement_the_server_refuses_raises_its_error(database: Database) -> None:
    with pytest.raises(DBAPIError, match="no_such_table"), database.begin() as connection:
        copy_out(connection, "COPY (SELECT * FROM no_such_table) TO STDOUT", print, lambda: None)
    _still_serves(database)


def test_a_write_that_fails_midway_leaves_as_raised_and_the_pool_serves_on(database: Database) -> None:
    written: list[bytes] = []

    def write(row: bytes) -> None:
        if len(written) == 500:
            raise OSError(28, "No space left on device")
        written.append(row)

    with pytest.raises(OSError, match="No space left"), database.begin() as connection:
        copy_out(connection, NUMBERS.format(n=100_000), write, lambda: None)
    assert len(written) == 500
    _still_serves(database)
