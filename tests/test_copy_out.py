"""PostgreSQL's COPY … TO STDOUT read straight from libpq (the report feed's copy of a window): every
row as the server sent it, and a copy that fails, on the server or on our side, leaves as an error
and leaves the pool able to serve the next transaction: a connection the server failed is kept, one
left mid-copy is discarded."""

import signal
import time
from collections.abc import Iterator
from types import FrameType

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


def _still_serves(database: Database) -> int:
    """Runs a statement; the server process behind the connection it got."""
    with database.begin() as connection:
        assert connection.exec_driver_sql("SELECT 41 + 1").scalar_one() == 42
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_every_row_arrives_as_the_server_wrote_it_and_the_rests_come_every_256_rows(
    database: Database,
) -> None:
    rows: list[memoryview] = []
    rests: list[int] = []
    with database.begin() as connection:
        count = copy_out(connection, NUMBERS.format(n=1000), rows.append, lambda: rests.append(len(rows)))
    assert count == 1000
    assert b"".join(rows) == b"".join(f"{i},row {i}\n".encode() for i in range(1, 1001))
    assert rests == [256, 512, 768]
    _still_serves(database)


def test_an_empty_copy_writes_nothing(database: Database) -> None:
    rows: list[memoryview] = []
    with database.begin() as connection:
        assert copy_out(connection, NUMBERS.format(n=0), rows.append, lambda: None) == 0
    assert rows == []


def test_a_copy_the_server_fails_midway_raises_its_error_and_its_connection_serves_on(
    database: Database,
) -> None:
    backend = _still_serves(database)
    rows: list[memoryview] = []
    failing = "COPY (SELECT 1 / (300 - i) FROM generate_series(1, 100000) AS i) TO STDOUT (FORMAT csv)"
    with pytest.raises(ValidationFailed, match="division by zero"), database.begin() as connection:
        copy_out(connection, failing, rows.append, lambda: None)
    assert 0 < len(rows) < 300  # what came before the error, no more
    assert _still_serves(database) == backend  # read to its end, rolled back, pooled again


def test_a_statement_the_server_refuses_raises_its_error(database: Database) -> None:
    with pytest.raises(DBAPIError, match="no_such_table"), database.begin() as connection:
        copy_out(connection, "COPY (SELECT * FROM no_such_table) TO STDOUT", print, lambda: None)
    _still_serves(database)


def test_a_write_that_fails_midway_leaves_as_raised_and_the_pool_serves_on(database: Database) -> None:
    backend = _still_serves(database)
    written: list[memoryview] = []

    def write(row: memoryview) -> None:
        if len(written) == 500:
            raise OSError(28, "No space left on device")
        written.append(row)

    with pytest.raises(OSError, match="No space left"), database.begin() as connection:
        copy_out(connection, NUMBERS.format(n=100_000), write, lambda: None)
    assert len(written) == 500
    assert _still_serves(database) != backend  # left mid-copy: discarded, a new one serves


def test_a_signal_is_handled_while_the_copy_waits_for_the_server(database: Database) -> None:
    """`clicktrail feed` stops on SIGTERM: its handler must run while a copy waits for rows."""

    def stop(_signal: int, _frame: FrameType | None) -> None:
        raise TimeoutError("stopped while waiting")

    slow = "COPY (SELECT pg_sleep(3)) TO STDOUT (FORMAT csv)"
    previous = signal.signal(signal.SIGALRM, stop)
    began = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(TimeoutError), database.begin() as connection:
            copy_out(connection, slow, print, lambda: None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - began < 2
    _still_serves(database)


@pytest.mark.parametrize("encoding", ["LATIN1", "UTF8"])
def test_text_beyond_ascii_reaches_the_server_and_comes_back_in_utf8(encoding: str) -> None:
    with fresh_postgres_database(encoding=encoding) as url:
        database = Database(url)
        try:
            rows: list[memoryview] = []
            with database.begin() as connection:
                sql = "COPY (SELECT 'Café Zürich') TO STDOUT (FORMAT csv, ENCODING 'UTF8')"
                copy_out(connection, sql, rows.append, lambda: None)
            assert b"".join(rows) == "Café Zürich\n".encode()
        finally:
            database.dispose()
