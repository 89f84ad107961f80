"""The database handle: one SQLAlchemy engine for SQLite or PostgreSQL, tuned for each."""

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from select import POLLIN, POLLOUT, poll
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from sqlalchemy import Connection, Engine, create_engine, event, insert, select
from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from clicktrail.errors import StorageError, ValidationFailed
from clicktrail.storage import cooperative
from clicktrail.storage.schema import meta
from clicktrail.storage.write_turn import WriteTurn

T = TypeVar("T")

PING_AFTER_REST_SECONDS = 1.0
"""A pooled PostgreSQL connection is checked (a `SELECT 1`) before use only when it has rested this
long since it was last returned: see `_ping_rested_connections`."""


def _tune_sqlite(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before its redirect leaves; group commit keeps the fsyncs few.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _bind_null(_value: None) -> None:
    return None


# sqlite3 binds None as NULL only after looking for an adapter for it, and with none registered it
# asks its PrepareProtocol type for `__adapt__`: an AttributeError with its message formatted, then
# dropped, for every None a statement binds, ~0.2 µs each (a click row binds ten or more: the empty
# sub IDs, referrer, lander…). An adapter found in the registry answers at once, with the same NULL.
# The registry is the sqlite3 module's, for the whole process: only None's binding changes, not its
# result (BENCHMARKS.md, "Session of 2026-12-07 (11:46 UTC)").
sqlite3.register_adapter(type(None), _bind_null)


def _ping_rested_connections(engine: Engine, rest_seconds: float) -> None:
    """Before a pooled connection is used, ping it (`SELECT 1`) if it has rested `rest_seconds` or more
    since it was returned, or was returned before another connection was found lost; a dead one is
    replaced by a fresh connection (SQLAlchemy's checkout protocol).

    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip before every batch. With the
    postback batches on the event loop, that round trip held the loop at every batch; pinging only
    rested connections took the server's CPU per PostgreSQL postback 291 → 259 µs and the rate 3,260
    → 3,681/s (scripts/cpu_per_request.py, 3 pairs; BENCHMARKS.md). A connection that rested, across
    a PostgreSQL restart or an idle timeout, is still checked. One returned a moment ago is trusted:
    if the server went away in that moment, its batch fails as unavailable (a 503 the client retries,
    nothing stored), and from then on every connection returned before that loss is pinged first, so
    one lost connection costs one batch, not one per pooled connection."""
    returned_at = "clicktrail_returned_at"
    last_loss = [float("-inf")]

    def remember_return(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[returned_at] = time.monotonic()

    def remember_loss(_dbapi_connection: Any, _record: ConnectionPoolEntry, _error: object) -> None:
        last_loss[0] = time.monotonic()

    def ping_if_in_doubt(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object) -> None:
        returned = record.info.get(returned_at)
        if returned is None:
            return  # connected just now
        if time.monotonic() - returned < rest_seconds and returned > last_loss[0]:
            return  # in use a moment ago, and no connection was lost since
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("a pooled connection was gone; connecting afresh") from exc

    event.listen(engine, "checkin", remember_return)
    event.listen(engine, "invalidate", remember_loss)
    event.listen(engine, "checkout", ping_if_in_doubt)


@contextmanager
def pipeline(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, send the statements run inside without waiting for each one's answer (psycopg's
    pipeline mode): the answers come back together, in one round trip, at the first read or at the
    end, and an error is raised there, as SQLAlchemy's exception for it (the transaction is then
    rolled back as after any failed statement). On SQLite (in the process: no round trips) the
    statements run as they come. On both, an error of a statement run on the driver's own cursor
    inside leaves as SQLAlchemy's exception, as one run through SQLAlchemy would.

    The COMMIT stays outside: committing inside the pipeline saved one more round trip, but a batch
    that failed there left the connection's transaction aborted behind SQLAlchemy's back.

    A batch of postbacks made ten round trips one after another, and on a 2-core machine shared with
    the server each one also waited to be scheduled (BENCHMARKS.md, "PostgreSQL postbacks in four
    round trips")."""
    if connection.dialect.name != "postgresql":
        with as_sqlalchemy_errors(connection):
            yield
        return
    error = connection.dialect.loaded_dbapi.Error
    driver: Any = connection.connection.driver_connection
    failure: Exception | None = None
    try:
        with driver.pipeline():
            try:
                yield
            except (DBAPIError, error) as exc:
                # A statement's error reached a later statement of the block. Leave the pipeline
                # first (its end reports the same aborted batch), so that psycopg does not log the
                # second error as "ignored" when a handled race is nothing to report.
                failure = exc
    except error as exc:
        failure = failure or exc
    if failure is not None:
        raise (_driver_error(connection, failure) if isinstance(failure, error) else failure)


@contextmanager
def unprepared(connection: Connection) -> Iterator[None]:
    """On PostgreSQL, statements run inside are never prepared by psycopg (which prepares one run five
    times on a connection), so PostgreSQL plans each with its values rather than switching to a
    generic plan. psycopg decides this in the client: no round trip."""
    if connection.dialect.name != "postgresql":
        yield
        return
    driver: Any = connection.connection.driver_connection
    threshold = driver.prepare_threshold
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = threshold


@contextmanager
def as_sqlalchemy_errors(connection: Connection) -> Iterator[None]:
    """Statements run on the driver's own cursor inside raise SQLAlchemy's exception for the driver's
    error (IntegrityError, OperationalError...), as if they had run through SQLAlchemy."""
    try:
        yield
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, exc) from exc


def counted_executemany(connection: Connection, sql: str, rows: Sequence[Any]) -> Callable[[], int]:
    """`sql` run for each of `rows` on the driver's own cursor (its errors leave as SQLAlchemy's);
    returns the function that counts the rows the statements changed, to call once they have been
    answered (after the pipeline they run in)."""
    with as_sqlalchemy_errors(connection):
        # Not closed until counted: psycopg counts a pipelined executemany's rows as its answers are
        # read, and a cursor closed before then reports only those read so far.
        cursor = connection.connection.cursor()
        cursor.executemany(sql, rows)

    def changed() -> int:
        try:
            return max(int(cursor.rowcount), 0)
        finally:
            cursor.close()

    return changed


@contextmanager
def driver_cursor(connection: Connection) -> Iterator[Any]:
    """The driver's own cursor in `connection`'s transaction, closed afterwards; the driver's errors
    leave as SQLAlchemy's (as_sqlalchemy_errors). For statements whose SQLAlchemy layer cost more
    than the statement (event_store's bulk inserts and updates)."""
    with as_sqlalchemy_errors(connection):
        cursor = connection.connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


def copy_out(
    connection: Connection, sql: str, write: Callable[[memoryview], object], every: Callable[[], None]
) -> int:
    """Run `sql`, a PostgreSQL `COPY … TO STDOUT`, on `connection`: `write` each row as the server
    sent it, call `every` every few hundred rows, and say how many rows there were. The driver's
    errors leave as SQLAlchemy's; a connection left mid-statement (a failed `write`, an interrupt)
    is discarded by the pool, one whose statement the server failed is left ready for the rollback.

    On libpq directly, where psycopg's `Copy` hands out one row per call of its connection's `wait`
    (and the cooperative connection's own `wait`, storage/cooperative.py, adds to each): the report
    feed's CPU over 400,000 clicks and 12,000 conversions 1.46-1.49 -> 1.18 s, 20% less
    (`scripts/bench_reports.py --clicks 400000 --runs 1 --database-url …`, its `feed_cpu_s`;
    BENCHMARKS.md, "Session of 2026-12-07 (11:46 UTC)"). Rows already received are taken without
    waiting; for more it waits in `poll`, the GIL free and signal handlers running (the feed stops
    on SIGTERM), so it blocks its thread: the feed's own process runs it, never an event loop.
    psycopg's implicit BEGIN is not sent for it: as the first statement of a transaction it runs as
    a statement of its own, with its own snapshot, which is all one COPY needs."""
    driver: Any = connection.connection.dbapi_connection
    encoding, pgconn = driver.info.encoding, driver.pgconn
    in_flight, copied, count = False, False, 0
    try:
        with as_sqlalchemy_errors(connection):
            in_flight = True  # from the statement sent until its last result is read
            pgconn.send_query(sql.encode(encoding))
            while pgconn.flush():
                _wait_for(pgconn.socket, POLLOUT)
            first = _next_result(pgconn)
            if first is not None and first.status == pq.ExecStatus.COPY_OUT:
                copied, count = True, _copy_rows(pgconn, write, every)
                first = _next_result(pgconn)
            while _next_result(pgconn) is not None:  # to the end: then the connection is ready
                pass
            in_flight = False
            _check_result(first, pq.ExecStatus.COMMAND_OK if copied else pq.ExecStatus.COPY_OUT, encoding)
    except BaseException:
        # Left mid-statement, the connection could not run another one, not even the rollback.
        if in_flight and not connection.invalidated:
            connection.invalidate()
        raise
    return count


_CALL_EVERY = 256


def _copy_rows(pgconn: Any, write: Callable[[memoryview], object], every: Callable[[], None]) -> int:
    get_row, count = pgconn.get_copy_data, 0
    while True:
        size, row = get_row(1)  # 1: a row already received, or 0 at once
        if size > 0:
            write(row)
            count += 1
            if count % _CALL_EVERY == 0:
                every()
        elif size == 0:
            _wait_for(pgconn.socket, POLLIN)
            pgconn.consume_input()
        else:  # -1: the end (a lost connection raises instead)
            return count


def _next_result(pgconn: Any) -> Any:
    """The statement's next libpq result, None after the last, waiting in `poll` for it."""
    pgconn.consume_input()
    while pgconn.is_busy():
        _wait_for(pgconn.socket, POLLIN)
        pgconn.consume_input()
    return pgconn.get_result()


def _wait_for(fileno: int, events: int) -> None:
    poller = poll()
    poller.register(fileno, events)
    poller.poll()


def _check_result(result: pq.abc.PGresult | None, expected: pq.ExecStatus, encoding: str) -> None:
    """A libpq result of the status expected, or the driver's error for the server's (the class for
    its SQLSTATE, as psycopg raises it)."""
    if result is None:
        raise psycopg.OperationalError("the server sent no result")
    if result.status == expected:
        return
    primary = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    message = (primary or b"").decode(encoding, "replace").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    error_class: type[psycopg.Error] = psycopg.DatabaseError
    if sqlstate:
        with suppress(KeyError):
            error_class = psycopg.errors.lookup(sqlstate.decode("ascii"))
    raise error_class(message or f"unexpected {pq.ExecStatus(result.status).name}")


def _driver_error(connection: Connection, exc: Exception) -> Exception:
    """The driver's exception as SQLAlchemy's (IntegrityError, OperationalError...), as a statement
    run through SQLAlchemy would have raised it; a lost connection is invalidated as SQLAlchemy would
    (otherwise the rollback that follows fails on the dead connection and hides the error)."""
    driver_error: Any = exc  # the driver's Error class, which only the dialect knows
    lost = connection.dialect.is_disconnect(driver_error, connection.connection.dbapi_connection, None)
    if lost:
        connection.invalidate(exc)
    wrapped = DBAPIError.instance(
        None,
        None,
        exc,
        connection.dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=connection.dialect,
    )
    return wrapped if isinstance(wrapped, Exception) else exc


def _refused_value(exc: DataError) -> ValidationFailed:
    """A value the database refused (PostgreSQL: a NUL in text, a number out of range...) that no
    validation caught before it: the caller's input, so a 422 with the database's reason, not a 500."""
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
    return ValidationFailed(f"a value the database cannot store: {reason}")


BACKEND_FLUSH_AFTER = "256kB"
"""PostgreSQL's `backend_flush_after` for clicktrail's own sessions (off, 0, by default): each backend
asks the kernel to write its data pages out as it goes, instead of leaving them dirty (under the
click load the kernel's dirty memory rose to 250-275 MB and went out within ~150 ms, while every
commit's WAL flush waited 40-70 ms). Paced PostgreSQL clicks after a burst
(scripts/feed_interference.py, three pairs alternating the server's setting with `ALTER SYSTEM`):
the run with the report feed's first catch-up had a p99 of 11-14 ms instead of 30-73, the run some
60 s after the burst 6-31 instead of 44-49 (BENCHMARKS.md, "Session of 2026-12-07 (22:56 UTC)").
A database URL whose `options` name `backend_flush_after` keeps its own value."""


def _cooperative_connection(_dialect: object, _record: object, cargs: Any, cparams: Any) -> Any:
    options = str(cparams.get("options") or "")
    if "backend_flush_after" not in options:
        cparams["options"] = f"{options} -c backend_flush_after={BACKEND_FLUSH_AFTER}".strip()
    return cooperative.connect(*cargs, **cparams)


class OpenTransaction:
    """Database.open_transaction's transaction. Any failure closes it (rolled back); database
    failures leave as StorageError, as from Database.stage."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._transaction = self.run(lambda connection: connection.begin())

    def run(self, work: Callable[[Connection], T]) -> T:
        try:
            return work(self._connection)
        except OperationalError as exc:
            self._connection.close()
            raise StorageError(f"the database is unavailable: {exc.orig}") from exc
        except BaseException:
            self._connection.close()
            raise

    def commit(self) -> None:
        try:
            self._transaction.commit()
        except OperationalError as exc:
            raise StorageError(f"the database is unavailable: {exc.orig}") from exc
        finally:
            self._connection.close()

    def close(self) -> None:
        """Roll back what was run, if anything, and give the connection back."""
        self._connection.close()


class Database:
    def __init__(
        self, url: str, *, pool_size: int = 8, ping_after_rest_seconds: float = PING_AFTER_REST_SECONDS
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._sqlite_file: Path | None = None
        if self.is_sqlite:
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                self._sqlite_file = Path(path)
                self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, poolclass=QueuePool, pool_size=pool_size, connect_args={"check_same_thread": False}
            )
            event.listen(self.engine, "connect", _tune_sqlite)
            self.cooperative = False
        else:
            # Clicks are written from the event loop: a server that cannot be reached must fail the
            # batch (a 503 the client retries) within seconds, not hold the loop for TCP's retries.
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=4,
                connect_args={"connect_timeout": 5},
            )
            event.listen(self.engine, "do_connect", _cooperative_connection)
            self.cooperative = True
            """Its connections, used in `cooperative.run_cooperatively`, wait for a slow answer through
            the loop: the batch writers run their batches that way (storage/batch.py)."""
            _ping_rested_connections(self.engine, ping_after_rest_seconds)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; database failures leave as StorageError (retryable), integrity errors unchanged."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except OperationalError as exc:
            raise StorageError(f"the database is unavailable: {exc.orig}") from exc
        except DataError as exc:
            raise _refused_value(exc) from exc

    def stage(self, work: Callable[[Connection], T]) -> tuple[T, Callable[[], None]]:
        """Run `work` in a new transaction; return its result and the function that commits it.

        The commit waits for the disk (an fsync on SQLite), so a caller on the event loop can run it
        in a thread while the loop goes on reading requests. Failures leave as StorageError."""
        transaction = self.open_transaction()
        return transaction.run(work), transaction.commit

    def open_transaction(self) -> "OpenTransaction":
        """A transaction on a connection of its own, to run work in now and later, then commit (or
        close, which rolls back): a postback batch on SQLite is read and decided before its writer's
        turn and written in it (conversions/intake.py, `prepare_batch`)."""
        return OpenTransaction(self.engine.connect())

    def run_alone(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, one statement, as its own transaction, committed on return (`alone`)."""
        with self.alone() as connection:
            return work(connection)

    @contextmanager
    def alone(self) -> Iterator[Connection]:
        """A connection on which each statement is a transaction of its own, committed before it
        answers: on PostgreSQL outside BEGIN … COMMIT (autocommit), so its answer says it is
        durable, and a block of statements each atomic by itself saves the two round trips. On
        SQLite (where an executemany is many statements) one transaction for the block, as `begin`
        makes. Failures leave as StorageError, as from stage."""
        try:
            with self.engine.connect() as connection:
                if self.is_sqlite:
                    with connection.begin():
                        yield connection
                else:
                    yield connection.execution_options(isolation_level="AUTOCOMMIT")
        except OperationalError as exc:
            raise StorageError(f"the database is unavailable: {exc.orig}") from exc

    def write_turn(self) -> WriteTurn | None:
        """A turn of its own for one batch writer on an SQLite file (storage/write_turn.py); None on
        PostgreSQL, whose writers do not exclude each other."""
        return WriteTurn(self._sqlite_file) if self._sqlite_file is not None else None

    def dispose(self) -> None:
        self.engine.dispose()

    def meta_value(self, name: str, make: Callable[[], str]) -> str:
        """Read a stored setting, creating it with `make()` if absent; safe when workers race."""
        with self.begin() as connection:
            found = connection.execute(select(meta.c.value).where(meta.c.name == name)).scalar_one_or_none()
            if found is not None:
                return str(found)
        try:
            with self.begin() as connection:
                connection.execute(insert(meta).values(name=name, value=make()))
        except IntegrityError:
            pass  # another process created it first: read theirs
        with self.begin() as connection:
            return str(connection.execute(select(meta.c.value).where(meta.c.name == name)).scalar_one())

    def set_meta_value(self, connection: Connection, name: str, value: str) -> None:
        updated = connection.execute(meta.update().where(meta.c.name == name).values(value=value))
        if updated.rowcount == 0:
            connection.execute(insert(meta).values(name=name, value=value))

    def read_meta_value(self, name: str) -> str | None:
        with self.begin() as connection:
            found = connection.execute(select(meta.c.value).where(meta.c.name == name)).scalar_one_or_none()
        return None if found is None else str(found)
