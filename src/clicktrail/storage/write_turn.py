"""Taking turns to write one SQLite file: the group-commit writers of every worker process queue on a
lock file beside the database instead of on SQLite's own write lock.

SQLite lets one transaction write at a time, and a writer that finds the file locked sleeps in its
busy handler (1, 2, 5, 10… ms) and tries again. The click and postback writers start their
transactions on the event loop (storage/batch.py), so with several workers a loop could sleep there
while another process's commit waited for its fsync: a paced p99 of 62 ms with 2 workers against
7 ms with one, and 109 → 31 ms with the turn (BENCHMARKS.md, "Several workers on SQLite").
Waiting for a turn on a lock file instead happens in the writer's thread, while the loop goes on
reading requests (and the batch grows).

Each WriteTurn opens the file on its own, so two writers of one process also take turns (an flock
belongs to the open file, not to the process). The lock dies with its process: a killed worker
never leaves the others waiting.
"""

import fcntl
import os
from pathlib import Path


class WriteTurn:
    def __init__(self, database_path: Path) -> None:
        self._path = database_path.with_name(database_path.name + "-writer.lock")
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    def try_take(self) -> bool:
        """Take the turn if nobody holds it; never waits."""
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def take(self) -> None:
        """Wait for the turn (call it off the event loop)."""
        fcntl.flock(self._file(), fcntl.LOCK_EX)

    def give_back(self) -> None:
        fcntl.flock(self._file(), fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
