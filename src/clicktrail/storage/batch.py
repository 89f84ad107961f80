"""Group commit: many concurrent requests share one transaction, and each waits for it.

A request appends its row and awaits; one flush at a time takes everything waiting (up to the
batch size) and commits it. By default the commit runs in a worker thread while the event loop keeps
accepting requests, so the next batch fills during this commit. With `on_loop` it runs on the event
loop itself, after letting the loop read every request already waiting so the batch is as large as
it can be: for SQLite that measured faster (BENCHMARKS.md: 4 of 4 paired runs, +2.5 points of
nginx's rate), because a commit in a thread takes the GIL back from the busy loop once per row.

A request is answered only after its row is committed, and the queue is bounded: past the limit new
rows are refused (the caller answers 503) instead of growing memory without end.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from clicktrail.errors import StorageError

Row = TypeVar("Row")
log = logging.getLogger(__name__)

# With `on_loop`, how many loop turns a flush waits at most for more rows before it commits: enough
# for every ready connection to be read, few enough that a steady trickle cannot hold a batch open.
_FILL_TURNS = 16


class Overloaded(StorageError):
    code = "overloaded"


class GroupCommitWriter(Generic[Row]):
    def __init__(
        self,
        commit: Callable[[Sequence[Row]], None],
        *,
        batch_size: int,
        queue_limit: int,
        name: str,
        on_loop: bool = False,
    ) -> None:
        self._commit = commit
        self._batch_size = batch_size
        self._queue_limit = queue_limit
        self._waiting: list[tuple[Row, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor = None if on_loop else ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.committed = 0

    async def write(self, row: Row) -> None:
        """Return once `row` is committed; raise StorageError if it could not be."""
        if len(self._waiting) >= self._queue_limit:
            raise Overloaded("too many writes are waiting for the database; retry shortly")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all())
        await future

    async def _flush_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                if self._executor is None:
                    await self._let_the_batch_fill()
                batch = self._waiting[: self._batch_size]
                del self._waiting[: self._batch_size]
                rows = [row for row, _ in batch]
                try:
                    if self._executor is None:
                        self._commit(rows)  # blocks the loop for one commit: see the module's note
                    else:
                        await loop.run_in_executor(self._executor, self._commit, rows)
                except Exception as exc:
                    log.exception("group commit of %d rows failed", len(rows))
                    error = exc if isinstance(exc, StorageError) else StorageError(f"could not store: {exc}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                else:
                    self.committed += len(rows)
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flusher = None

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
        if self._executor is not None:
            self._executor.shutdown(wait=True)
