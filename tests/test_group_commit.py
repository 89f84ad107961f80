"""Group commit: concurrent writers share transactions, each returns only after its row is
committed, failures reach every waiter, and the queue is bounded."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from clicktrail.config import Settings
from clicktrail.errors import StorageError
from clicktrail.storage.batch import GroupCommitWriter, Overloaded, Staged
from clicktrail.storage.database import Database
from clicktrail.storage.write_turn import WriteTurn
from tests.support import SECRET_KEY, fresh_postgres_database


def _sqlite_sink(path: Path) -> tuple[list[int], Callable[[Sequence[int]], Staged[None]]]:
    batches: list[int] = []
    lock = threading.Lock()

    def commit(rows: Sequence[int]) -> Staged[None]:
        with lock, sqlite3.connect(path) as connection:
            connection.executemany("INSERT INTO t(v) VALUES (?)", [(row,) for row in rows])
        batches.append(len(rows))
        return Staged([None] * len(rows))

    return batches, commit


def test_concurrent_writes_share_commits_and_all_land(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    sqlite3.connect(path).execute("CREATE TABLE t(v INTEGER)").connection.close()
    batches, commit = _sqlite_sink(path)

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            commit,
            batch_size=100,
            queue_limit=10_000,
            name="t",
        )
        await asyncio.gather(*(writer.write(n) for n in range(1000)))
        writer.close()

    asyncio.run(main())
    with sqlite3.connect(path) as connection:
        stored = sorted(v for (v,) in connection.execute("SELECT v FROM t"))
    assert stored == list(range(1000))
    assert sum(batches) == 1000
    assert len(batches) < 1000 / 5, "writes should be grouped, not committed one by one"
    assert max(batches) <= 100


def test_a_write_returns_only_after_its_commit() -> None:
    committed: list[int] = []
    gate = threading.Event()

    def slow_commit(rows: Sequence[int]) -> Staged[None]:
        gate.wait(5)
        committed.extend(rows)
        return Staged([None] * len(rows))

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            slow_commit, batch_size=10, queue_limit=10, name="t"
        )
        task = asyncio.create_task(writer.write(1))
        await asyncio.sleep(0.05)
        assert not task.done()
        gate.set()
        await task
        assert committed == [1]
        writer.close()

    asyncio.run(main())


def test_a_failed_commit_fails_every_write_in_its_batch() -> None:
    def broken(rows: Sequence[int]) -> Staged[None]:
        raise RuntimeError("disk full")

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            broken, batch_size=10, queue_limit=100, name="t"
        )
        results = await asyncio.gather(*(writer.write(n) for n in range(5)), return_exceptions=True)
        assert all(isinstance(result, StorageError) for result in results)
        writer.close()

    asyncio.run(main())


def test_past_the_queue_limit_writes_are_refused_not_buffered() -> None:
    gate = threading.Event()

    def blocked(rows: Sequence[int]) -> Staged[None]:
        gate.wait(5)
        return Staged([None] * len(rows))

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            blocked, batch_size=1, queue_limit=2, name="t"
        )
        in_flight = asyncio.create_task(writer.write(0))
        await asyncio.sleep(0.05)  # row 0 is being committed (blocked)
        waiting = [in_flight, *(asyncio.create_task(writer.write(n)) for n in (1, 2))]
        await asyncio.sleep(0.05)  # rows 1 and 2 wait: the queue is full
        with pytest.raises(Overloaded):
            await writer.write(99)
        gate.set()
        await asyncio.gather(*waiting)
        await writer.drain()
        writer.close()

    asyncio.run(main())


class _Told:
    """A waiter that is not a future: it records what the writer tells it, and can fail when told."""

    def __init__(self, log: list[tuple[int, object]], row: int, *, fails: bool = False) -> None:
        self._log, self._row, self._fails = log, row, fails
        self.told = False

    def done(self) -> bool:
        return self.told

    def set_result(self, result: object) -> None:
        self.told = True
        self._log.append((self._row, result))
        if self._fails:
            raise RuntimeError("the waiter's own failure")

    def set_exception(self, exception: BaseException) -> None:
        self.told = True
        self._log.append((self._row, exception))
        if self._fails:
            raise RuntimeError("the waiter's own failure")


def test_a_submitted_rows_waiter_is_told_after_its_commit_even_when_another_waiter_fails() -> None:
    """The click's direct path hands the writer a waiter of its own instead of awaiting a future: it
    hears its row's result only once the batch is committed, and a waiter that fails when told (a bug
    in one answer) leaves no other waiter of its batch, or of the next, unanswered."""
    committed: list[list[int]] = []

    def commit(rows: Sequence[int]) -> Staged[str]:
        committed.append(list(rows))
        return Staged([f"stored {row}" for row in rows])

    async def main() -> list[tuple[int, object]]:
        told: list[tuple[int, object]] = []
        writer: GroupCommitWriter[int, str] = GroupCommitWriter(
            commit, batch_size=10, queue_limit=100, name="t"
        )
        for row in range(4):
            writer.submit(row, _Told(told, row, fails=row == 1))
        assert told == []
        assert committed == []
        await writer.drain()
        writer.submit(4, _Told(told, 4))
        await writer.drain()
        writer.close()
        return told

    told = asyncio.run(main())
    assert committed == [[0, 1, 2, 3], [4]]
    assert told == [(row, f"stored {row}") for row in range(5)]


def test_a_failed_batch_tells_each_submitted_waiter_its_error_and_a_full_queue_refuses_at_once() -> None:
    def broken(rows: Sequence[int]) -> Staged[None]:
        raise StorageError("the disk is full")

    async def main() -> list[tuple[int, object]]:
        told: list[tuple[int, object]] = []
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            broken, batch_size=10, queue_limit=2, name="t"
        )
        writer.submit(0, _Told(told, 0, fails=True))
        writer.submit(1, _Told(told, 1))
        with pytest.raises(Overloaded):
            writer.submit(2, _Told(told, 2))  # refused when submitted, never queued or told
        await writer.drain()
        writer.close()
        return told

    told = asyncio.run(main())
    assert [row for row, _ in told] == [0, 1]
    assert all(isinstance(error, StorageError) and "disk is full" in str(error) for _, error in told)


def test_each_write_gets_its_own_rows_result_in_order() -> None:
    def doubled(rows: Sequence[int]) -> Staged[int]:
        return Staged([row * 2 for row in rows])

    async def main() -> None:
        writer: GroupCommitWriter[int, int] = GroupCommitWriter(
            doubled, batch_size=7, queue_limit=1000, name="t", on_loop=True
        )
        assert await asyncio.gather(*(writer.write(n) for n in range(50))) == [n * 2 for n in range(50)]
        writer.close()

    asyncio.run(main())


def test_on_the_loop_the_final_commit_waits_in_a_thread_while_the_loop_keeps_serving() -> None:
    disk = threading.Event()
    finished: list[int] = []

    def stage(rows: Sequence[int]) -> Staged[None]:
        def fsync() -> None:
            disk.wait(5)
            finished.extend(rows)

        return Staged([None] * len(rows), fsync)

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            stage, batch_size=100, queue_limit=1000, name="t", on_loop=True
        )
        first = asyncio.create_task(writer.write(1))
        ticks = 0
        for _ in range(20):  # the loop turns while the commit waits for the disk
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20
        assert not first.done()
        assert finished == []
        later = asyncio.create_task(writer.write(2))  # queued behind the commit, not lost
        disk.set()
        await asyncio.gather(first, later)
        assert finished == [1, 2]
        writer.close()

    asyncio.run(main())


def test_a_writer_whose_turn_another_holds_waits_off_the_loop_and_writes_once_it_is_given_back(
    tmp_path: Path,
) -> None:
    """Workers of one SQLite file take turns on a lock file (storage/write_turn.py): the waiting
    writer's loop keeps serving, and its rows are written only once the other writer is done."""
    database = tmp_path / "clicks.db"
    other_worker = WriteTurn(database)
    other_worker.take()
    written_at: list[float] = []
    released_at: list[float] = []

    def commit(rows: Sequence[int]) -> Staged[None]:
        written_at.append(time.monotonic())
        return Staged([None] * len(rows))

    async def main() -> int:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            commit, batch_size=100, queue_limit=1000, name="t", on_loop=True, turn=WriteTurn(database)
        )
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        def give_back() -> None:
            released_at.append(time.monotonic())
            other_worker.give_back()

        ticker = asyncio.create_task(tick())
        asyncio.get_running_loop().call_later(0.3, give_back)
        await asyncio.gather(*(writer.write(n) for n in range(10)))
        ticker.cancel()
        writer.close()
        return ticks

    ticks = asyncio.run(main())
    assert len(written_at) == 1
    assert written_at[0] >= released_at[0]
    assert ticks >= 10, "the loop stalled while the writer waited for its turn"
    other_worker.close()


def test_a_write_turn_that_cannot_be_taken_fails_the_batch_instead_of_leaving_it_waiting(
    tmp_path: Path,
) -> None:
    unreachable = WriteTurn(tmp_path / "no-such-folder" / "clicks.db")  # its lock file cannot be created
    committed: list[int] = []

    def commit(rows: Sequence[int]) -> Staged[None]:
        committed.extend(rows)
        return Staged([None] * len(rows))

    async def main() -> list[BaseException | None]:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            commit, batch_size=100, queue_limit=1000, name="t", on_loop=True, turn=unreachable
        )
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(writer.write(n) for n in range(5)), return_exceptions=True), 5
        )
        writer.close()
        return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, StorageError) for outcome in outcomes)
    assert committed == []


def test_the_turn_is_given_back_when_the_commit_returns_not_when_the_busy_loop_gets_round_to_it(
    tmp_path: Path,
) -> None:
    """Another worker's writer waits for the turn: it must not also wait for this worker's loop."""
    database = tmp_path / "clicks.db"
    other_worker = WriteTurn(database)
    loop_free_at: list[float] = []
    other_took_at: list[float] = []

    def other_writer() -> None:
        other_worker.take()
        other_took_at.append(time.monotonic())
        other_worker.give_back()

    def busy_loop() -> None:
        time.sleep(0.5)  # a loop answering a burst of requests
        loop_free_at.append(time.monotonic())

    waiting = threading.Thread(target=other_writer)

    def commit(rows: Sequence[int]) -> Staged[None]:
        waiting.start()  # while this writer holds the turn
        asyncio.get_running_loop().call_soon(busy_loop)
        return Staged([None] * len(rows), finish=lambda: time.sleep(0.05))

    async def main() -> None:
        writer: GroupCommitWriter[int, None] = GroupCommitWriter(
            commit, batch_size=100, queue_limit=1000, name="t", on_loop=True, turn=WriteTurn(database)
        )
        await writer.write(1)
        writer.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    waiting.join(5)
    assert other_took_at[0] < loop_free_at[0], "the other worker's writer waited for this one's loop"
    other_worker.close()


@pytest.mark.postgres
def test_a_cooperative_batch_lets_the_loop_serve_while_postgresql_answers_and_its_errors_stay_in_it() -> None:
    """A cooperative writer's batch runs its synchronous SQL on the loop; while PostgreSQL takes its
    time (here `pg_sleep`), the loop runs other work. A database error inside the batch fails that
    batch's writes and leaves the next batch unharmed."""
    ticks: list[float] = []

    def sink(database: Database) -> Callable[[Sequence[int]], Staged[int]]:
        def commit(rows: Sequence[int]) -> Staged[int]:
            if -1 in rows:
                _, finish = database.stage(lambda connection: connection.execute(text("SELECT 1/0")))
                return Staged([0] * len(rows), finish)
            seven, finish = database.stage(
                lambda connection: connection.execute(text("SELECT 7 FROM pg_sleep(0.3)")).scalar_one()
            )
            return Staged([seven * row for row in rows], finish)

        return commit

    async def tick_until(done: "asyncio.Future[Any]") -> None:
        while not done.done():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main(database: Database) -> tuple[list[int], StorageError | None, list[int]]:
        writer: GroupCommitWriter[int, int] = GroupCommitWriter(
            sink(database), batch_size=10, queue_limit=100, name="t", on_loop=True, cooperative=True
        )
        batch = asyncio.gather(*(writer.write(n) for n in (1, 2, 3)))
        await tick_until(batch)
        failed: StorageError | None = None
        try:
            await writer.write(-1)
        except StorageError as exc:
            failed = exc
        after = await asyncio.gather(writer.write(4))
        writer.close()
        return list(await batch), failed, list(after)

    with fresh_postgres_database() as url:
        database = Database(Settings(database_url=url, secret_key=SECRET_KEY).sqlalchemy_url)
        try:
            results, failed, after = asyncio.run(main(database))
        finally:
            database.dispose()
    assert results == [7, 14, 21]
    assert len(ticks) >= 10  # the loop ran all along the 0.3 s the batch waited for PostgreSQL
    assert failed is not None
    assert "division by zero" in str(failed)
    assert after == [28]


@pytest.mark.postgres
def test_a_connection_lost_while_a_cooperative_batch_waits_fails_that_batch_as_unavailable() -> None:
    """PostgreSQL drops the batch's connection while the loop waits for its answer (a restart, an
    idle-in-transaction timeout): the batch's writes fail as 'the database is unavailable' (a 503 the
    client retries), and the next batch is stored on a fresh connection."""

    def sink(database: Database) -> Callable[[Sequence[int]], Staged[int]]:
        def commit(rows: Sequence[int]) -> Staged[int]:
            sleep = "SELECT 7 FROM pg_sleep(30)" if 0 in rows else "SELECT 7"
            seven, finish = database.stage(lambda connection: connection.execute(text(sleep)).scalar_one())
            return Staged([seven] * len(rows), finish)

        return commit

    async def main(database: Database, admin: str) -> tuple[StorageError | None, list[int]]:
        writer: GroupCommitWriter[int, int] = GroupCommitWriter(
            sink(database), batch_size=10, queue_limit=100, name="t", on_loop=True, cooperative=True
        )
        lost = asyncio.ensure_future(writer.write(0))
        while True:  # the batch waits for its pg_sleep; the loop is free to cut its connection
            await asyncio.sleep(0.05)
            with psycopg.connect(admin, autocommit=True) as other:
                cut = other.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE '%pg_sleep(30)%'"
                ).fetchall()
            if cut:
                break
        failed: StorageError | None = None
        try:
            await lost
        except StorageError as exc:
            failed = exc
        after = [await writer.write(1)]
        writer.close()
        return failed, after

    with fresh_postgres_database() as url:
        database = Database(Settings(database_url=url, secret_key=SECRET_KEY).sqlalchemy_url)
        try:
            failed, after = asyncio.run(asyncio.wait_for(main(database, url), 20))
        finally:
            database.dispose()
    assert failed is not None
    assert "the database is unavailable" in str(failed)
    assert after == [7]


class _PreparedRows:
    """A batch prepared before the turn: records when it is written, and whether it was discarded."""

    def __init__(self, rows: Sequence[int], log: list[str], turn_held: Callable[[], bool]) -> None:
        self.rows = list(rows)
        self._log = log
        self._turn_held = turn_held
        log.append(f"prepared {self.rows}")

    def write(self, later: Sequence[int]) -> Staged[int]:
        then = f" and then {list(later)}" if later else ""
        self._log.append(f"written {self.rows}{then}, turn held: {self._turn_held()}")
        return Staged([row * 10 for row in [*self.rows, *later]], lambda: self._log.append("committed"))

    def discard(self) -> None:
        self._log.append(f"discarded {self.rows}")


def _prepared_writer(
    prepare: Callable[[Sequence[int]], _PreparedRows], turn: WriteTurn | None = None
) -> GroupCommitWriter[int, int]:
    """A writer that writes only through `prepare` (its plain commit fails the test if called)."""

    def unprepared(rows: Sequence[int]) -> Staged[int]:
        raise AssertionError("a writer with `prepare` writes through it")

    return GroupCommitWriter(
        unprepared, batch_size=100, queue_limit=1000, name="t", on_loop=True, turn=turn, prepare=prepare
    )


def test_a_prepared_batch_is_decided_while_another_worker_holds_the_turn_and_written_once_it_has_it(
    tmp_path: Path,
) -> None:
    """Postbacks on SQLite: a batch is read and decided before its writer waits for the turn, so the
    deciding no longer waits for the other workers' writes. In the turn it is written, and the rows
    that came while it waited are decided and written after it, in one commit with it."""
    database = tmp_path / "events.db"
    other_worker = WriteTurn(database)
    other_worker.take()
    log: list[str] = []

    def turn_held() -> bool:
        return not other_worker.try_take()  # this writer holds it: the other cannot have it

    async def main() -> list[int]:
        writer = _prepared_writer(lambda rows: _PreparedRows(rows, log, turn_held), WriteTurn(database))
        first = [asyncio.ensure_future(writer.write(n)) for n in (1, 2)]
        await asyncio.sleep(0.2)
        assert log == ["prepared [1, 2]"], "decided before the turn, not after it"
        later = [asyncio.ensure_future(writer.write(n)) for n in (3, 4)]
        await asyncio.sleep(0.1)
        log.append("the other worker gives the turn back")
        other_worker.give_back()
        results = await asyncio.gather(*first, *later)
        writer.close()
        return results

    assert asyncio.run(main()) == [10, 20, 30, 40]
    assert log == [
        "prepared [1, 2]",
        "the other worker gives the turn back",
        "written [1, 2] and then [3, 4], turn held: True",
        "committed",
    ]
    other_worker.close()


def test_a_prepared_batch_whose_turn_cannot_be_taken_is_discarded_and_fails_its_writes(
    tmp_path: Path,
) -> None:
    unreachable = WriteTurn(tmp_path / "no-such-folder" / "events.db")
    log: list[str] = []

    async def main() -> list[BaseException | int]:
        writer = _prepared_writer(lambda rows: _PreparedRows(rows, log, lambda: False), unreachable)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(writer.write(n) for n in range(3)), return_exceptions=True), 5
        )
        writer.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, StorageError) for outcome in outcomes)
    assert log == ["prepared [0, 1, 2]", "discarded [0, 1, 2]"]


def test_a_batch_that_cannot_be_prepared_fails_its_writes_and_the_next_batch_is_written() -> None:
    log: list[str] = []

    def prepare(rows: Sequence[int]) -> _PreparedRows:
        if 0 in rows:
            raise StorageError("the database is unavailable: disk I/O error")
        return _PreparedRows(rows, log, lambda: False)

    async def main() -> tuple[list[BaseException | int], int]:
        writer = _prepared_writer(prepare)
        failed = await asyncio.gather(*(writer.write(n) for n in range(3)), return_exceptions=True)
        later = await writer.write(7)
        writer.close()
        return failed, later

    failed, later = asyncio.run(main())
    assert [str(outcome) for outcome in failed] == ["the database is unavailable: disk I/O error"] * 3
    assert later == 70
    assert log == ["prepared [7]", "written [7], turn held: False", "committed"]
