"""Group commit: many concurrent requests share one transaction, and each waits for it.

A request appends its row and awaits; one flush at a time takes everything waiting (up to the
batch size), writes it in one transaction and commits it. The commit function returns a `Staged`:
a result per row (a click has none; a postback has its decision) and, optionally, the commit itself
left to the writer's thread.

By default the whole commit runs in the writer's thread while the event loop keeps accepting
requests, so the next batch fills during this one. With `on_loop` the rows are written on the event
loop itself, after letting the loop read every request already waiting so the batch is as large as
it can be, and only the final commit (the fsync) goes to the thread: for SQLite that measured faster
(BENCHMARKS.md), because a thread doing per-row Python takes the GIL back from the busy loop once per
row, while a thread waiting on the disk does not hold it.

Until 2026-12-06 PostgreSQL postbacks were written in threads, two batches in flight; on the loop,
one at a time, they cost the server 17% less CPU and their p99 fell by 29% (BENCHMARKS.md, "Session
of 2026-12-06"): each of a batch's round trips had a thread give the GIL back and take it again from
the busy loop.

On PostgreSQL (`cooperative`) the batch, commit included, runs on the loop through
storage/cooperative.py: a round trip that takes more than a few milliseconds gives the loop back
while it waits, so the worker reads and answers other requests meanwhile (a postback batch waiting
for a locked conversion no longer stops the worker's clicks), and the commit needs no thread. At the
same offered postback rate the rate reached rose 18%, the p99 fell 16% and the CPU per postback 13%;
the closed-loop maximum fell 4% (scripts/cpu_per_request.py; BENCHMARKS.md, "Session of 2026-12-06
(08:47 UTC)"). One batch at a time still: two at once made
batches smaller and cost 23% more CPU.

A request is answered only after its row is committed, and the queue is bounded: past the limit new
rows are refused (the caller answers 503) instead of growing memory without end.

A caller either awaits `write`, or hands `submit` a `Waiter` of its own that the writer calls with the
row's result: the click's and the postback's direct paths answer from there, without a task, a
coroutine chain or a future per request (web/protocol.py).
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from clicktrail.errors import StorageError
from clicktrail.storage.cooperative import run_cooperatively
from clicktrail.storage.write_turn import WriteTurn

Row = TypeVar("Row")
Result = TypeVar("Result")
Result_contra = TypeVar("Result_contra", contravariant=True)
log = logging.getLogger(__name__)

# With `on_loop`, how many loop turns a flush waits at most for more rows before it writes: enough
# for every ready connection to be read, few enough that a steady trickle cannot hold a batch open.
_FILL_TURNS = 16


class Overloaded(StorageError):
    code = "overloaded"


@dataclass(frozen=True, slots=True)
class Staged(Generic[Result]):
    """What a commit function did with a batch: one result per row, in order, and the commit still to
    run (in the writer's thread) if it left one."""

    results: Sequence[Result]
    finish: Callable[[], None] | None = None


class Prepared(Protocol[Result]):
    """A batch read and decided before the writer's turn (GroupCommitWriter's `prepare`)."""

    def write(self, later: Sequence[Any]) -> Staged[Result]:
        """Write the batch in the turn, then read, decide and write `later` (the rows that came while
        the writer waited for the turn) in the same transaction: the results of both, in order, and
        the commit left to run."""

    def discard(self) -> None:
        """Give up the batch unwritten (taking the turn failed)."""


class Waiter(Protocol[Result_contra]):
    """Told a row's fate once: its result after the commit, or the error that failed its batch. An
    asyncio.Future is one; so is an object that answers the request itself."""

    def done(self) -> bool:
        """True once told (a future also when cancelled): the writer then tells it nothing more."""

    def set_result(self, result: Result_contra, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class GroupCommitWriter(Generic[Row, Result]):
    def __init__(
        self,
        commit: Callable[[Sequence[Row]], Staged[Result]],
        *,
        batch_size: int,
        queue_limit: int,
        name: str,
        on_loop: bool = False,
        cooperative: bool = False,
        turn: WriteTurn | None = None,
        prepare: Callable[[Sequence[Row]], Prepared[Result]] | None = None,
    ) -> None:
        """`prepare`, with a turn: reads and decides a batch on the loop before the turn is taken,
        and its `write` runs in the turn instead of `commit` (postbacks on SQLite, whose reading and
        deciding then no longer hold up the other workers' writes)."""
        self._commit = commit
        self._prepare = prepare
        self._cooperative = cooperative
        self._batch_size = batch_size
        self._queue_limit = queue_limit
        self._on_loop = on_loop or cooperative  # a cooperative batch runs on the loop too
        self._turn = turn
        self._waiting: list[tuple[Row, Waiter[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.committed = 0

    async def write(self, row: Row) -> Result:
        """Return `row`'s result once it is committed; raise StorageError if it could not be."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.submit(row, future)
        return await future

    def submit(self, row: Row, waiter: Waiter[Result]) -> None:
        """Queue `row`; `waiter` is told its result once it is committed, or the StorageError that
        failed it, from the event loop. Raises Overloaded (nothing queued) past the queue limit."""
        if len(self._waiting) >= self._queue_limit:
            raise Overloaded("too many writes are waiting for the database; retry shortly")
        self._waiting.append((row, waiter))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())

    async def _flush_all(self) -> None:
        try:
            while self._waiting:
                if self._on_loop:
                    # Before the turn, not after: a writer that gave the turn back takes it again only
                    # after other processes' writers, woken by its release, have had their chance.
                    await self._let_the_batch_fill()
                await self._flush_one()
        finally:
            self._flusher = None

    async def _flush_one(self) -> None:
        """Take the write turn (if any), then commit the next batch; a failure of either fails the
        batch's writes, never leaves them waiting. The batch is cut after the wait for the turn, when
        it has grown; with `prepare` its first part is cut, read and decided before the wait, and
        the rest (what came meanwhile) is decided in the turn, in the same transaction."""
        first: list[tuple[Row, Waiter[Result]]] = []
        prepared: Prepared[Result] | None = None
        if self._prepare is not None:
            first = self._next_batch()
            try:
                prepared = self._prepare([row for row, _ in first])
            except Exception as exc:
                log.exception("a batch of %d rows could not be prepared", len(first))
                self._fail(
                    first, exc if isinstance(exc, StorageError) else StorageError(f"could not store: {exc}")
                )
                return
        try:
            await self._take_turn()
        except OSError as exc:
            log.exception("could not take the write turn")
            if prepared is not None:
                prepared.discard()
            self._fail(first or self._next_batch(), StorageError(f"could not take the write turn: {exc}"))
            return
        try:
            rest = self._next_batch(self._batch_size - len(first))
            await self._commit_and_answer(first, rest, prepared)
        finally:
            if self._turn is not None:
                self._turn.give_back()

    async def _commit_and_answer(
        self,
        first: list[tuple[Row, Waiter[Result]]],
        rest: list[tuple[Row, Waiter[Result]]],
        prepared: Prepared[Result] | None = None,
    ) -> None:
        batch = first + rest
        try:
            results = await self._commit_batch([row for row, _ in batch], prepared, len(first))
        except Exception as exc:
            log.exception("group commit of %d rows failed", len(batch))
            self._fail(
                batch, exc if isinstance(exc, StorageError) else StorageError(f"could not store: {exc}")
            )
        else:
            self.committed += len(batch)
            for (_, waiter), result in zip(batch, results, strict=True):
                if not waiter.done():
                    try:
                        waiter.set_result(result)
                    except Exception:  # a waiter's own failure must not keep the rest unanswered
                        log.exception("a waiter failed on its committed row's result")

    async def _take_turn(self) -> None:
        """With a WriteTurn, wait for it in the writer's thread: the loop goes on filling the batch."""
        if self._turn is not None and not self._turn.try_take():
            await asyncio.get_running_loop().run_in_executor(self._executor, self._turn.take)

    def _next_batch(self, size: int | None = None) -> list[tuple[Row, Waiter[Result]]]:
        size = self._batch_size if size is None else size
        batch = self._waiting[:size]
        del self._waiting[:size]
        return batch

    @staticmethod
    def _fail(batch: Sequence[tuple[Row, Waiter[Result]]], error: StorageError) -> None:
        for _, waiter in batch:
            if not waiter.done():
                try:
                    waiter.set_exception(error)
                except Exception:
                    log.exception("a waiter failed on its batch's error")

    async def _commit_batch(
        self, rows: list[Row], prepared: "Prepared[Result] | None" = None, prepared_rows: int = 0
    ) -> Sequence[Result]:
        loop = asyncio.get_running_loop()
        if prepared is not None:
            staged = prepared.write(rows[prepared_rows:])  # on the loop, as `on_loop`'s commit
        elif self._cooperative:  # on the loop, which runs other work while the database answers
            staged = await run_cooperatively(self._commit, rows)
        elif self._on_loop:
            staged = self._commit(rows)  # blocks the loop while the rows are written: see the note
        else:
            staged = await loop.run_in_executor(self._executor, self._commit, rows)
        if staged.finish is not None:
            if self._cooperative:
                await run_cooperatively(staged.finish)
            else:
                await loop.run_in_executor(self._executor, self._finish_and_give_back, staged.finish)
        if len(staged.results) != len(rows):
            raise StorageError(f"a batch of {len(rows)} rows gave {len(staged.results)} results")
        return staged.results

    def _finish_and_give_back(self, finish: Callable[[], None]) -> None:
        """Commit, and give the turn back from this thread as soon as the commit returns: handing it
        back on the loop waited for the loop to come round to the result, a few milliseconds on a
        busy one, while every other worker's commit waited too. (_flush_one's own give_back then
        unlocks an unlocked file: a no-op.)"""
        try:
            finish()
        finally:
            if self._turn is not None:
                self._turn.give_back()

    async def _let_the_batch_fill(self) -> None:
        """Yield to the loop until a turn adds no row (or the batch is full, or _FILL_TURNS passed)."""
        seen = -1
        for _ in range(_FILL_TURNS):
            if len(self._waiting) == seen or len(self._waiting) >= self._batch_size:
                return
            seen = len(self._waiting)
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._turn is not None:
            self._turn.close()
