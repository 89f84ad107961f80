"""Pooled PostgreSQL connections: one that rested is checked before it is used, one used a moment ago
is trusted, and a connection lost while trusted costs one batch, never a second one."""

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection

from clicktrail.errors import StorageError
from clicktrail.storage.database import Database, driver_cursor
from tests.support import fresh_postgres_database

pytestmark = pytest.mark.postgres
REST = 0.3
"""The rest after which a pooled connection is pinged, shortened for the tests."""


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_postgres_database() as fresh:
        yield fresh


def _backend_pid(connection: Connection) -> int:
    return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _two_pooled_connections(database: Database) -> list[int]:
    """Check out two connections at once and return both to the pool; their server process IDs."""
    with database.begin() as first, database.begin() as second:
        return [_backend_pid(first), _backend_pid(second)]


def _terminate(url: str, pids: list[int]) -> None:
    admin = Database(url)
    try:
        with admin.begin() as connection:
            for pid in pids:
                connection.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        admin.dispose()


def test_connections_the_server_closed_while_they_rested_are_replaced_without_an_error(url: str) -> None:
    database = Database(url, ping_after_rest_seconds=REST)
    try:
        closed = _two_pooled_connections(database)
        _terminate(url, closed)  # as a PostgreSQL restart or an idle timeout would
        time.sleep(REST + 0.1)

        with database.begin() as first, database.begin() as second:
            now_serving = {_backend_pid(first), _backend_pid(second)}
        assert now_serving.isdisjoint(closed)
    finally:
        database.dispose()


def test_a_connection_lost_a_moment_after_use_fails_one_batch_and_the_others_are_checked(url: str) -> None:
    """Not pinged (it was used a moment ago): the first use fails as 'unavailable', a retryable 503 for
    the request, with nothing stored; the pool's other connection, returned before that loss, is then
    pinged and replaced instead of failing a second batch."""
    database = Database(url, ping_after_rest_seconds=60)
    try:
        closed = _two_pooled_connections(database)
        _terminate(url, closed)

        # Through the driver's cursor, as the batches' reads and writes run.
        with (
            pytest.raises(StorageError, match="unavailable"),
            database.begin() as c,
            driver_cursor(c) as cursor,
        ):
            cursor.execute("SELECT 1")
        with database.begin() as first, database.begin() as second:
            now_serving = {_backend_pid(first), _backend_pid(second)}
        assert now_serving.isdisjoint(closed)
    finally:
        database.dispose()


def test_clicktrails_sessions_ask_postgresql_to_write_their_pages_out_as_they_go(url: str) -> None:
    """backend_flush_after (storage/database.py): no burst of dirty pages for the commits to wait behind."""
    database = Database(url)
    try:
        with database.begin() as connection:
            assert connection.exec_driver_sql("SHOW backend_flush_after").scalar_one() == "256kB"
    finally:
        database.dispose()


def test_a_database_url_that_sets_backend_flush_after_keeps_its_own_value(url: str) -> None:
    database = Database(f"{url}?options=-c%20backend_flush_after%3D0")
    try:
        with database.begin() as connection:
            assert connection.exec_driver_sql("SHOW backend_flush_after").scalar_one() == "0"
    finally:
        database.dispose()
