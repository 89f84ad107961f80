"""A fixed-size hash table in memory that every worker process of one server shares: the unique-click
memory and the rate limits, so that N workers count a repeat visitor once and give a client its
allowance once, not N times (docs/architecture.md, "Processes").

The table lives in a file on tmpfs (`/dev/shm`) that `clicktrail serve` creates for its workers and
each worker maps; with one process (`private`) it is an anonymous mapping instead, the same code. An
entry is a 64-bit key and two floats: a value and the time it was last touched. Keys hash to a bucket
of 8 slots; a key missing from its full bucket takes the slot touched longest ago (least recently
used within the bucket: with 8 slots a bucket forgets nearly what a global LRU would). 24 bytes an
entry against ~280 for a Python dict's (key tuple, datetime, links), and pages never touched stay
unallocated.

Each read-change-write of a bucket holds a lock on that bucket alone: an `fcntl` record lock on one
byte of the file, so workers only wait for each other on the same bucket, and a worker killed while
holding one releases it with its death (the kernel drops a dead process's record locks). Record
locks belong to the process, not the thread, so a thread lock orders the threads of one process
first. Cost: the two `fcntl` calls, ~1.7 µs a change (3.5 against 1.8 µs unshared; a throwaway timeit
harness, BENCHMARKS.md "Session of 2026-12-03").
"""

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

R = TypeVar("R")

_SLOT = struct.Struct("<Qdd")
_BUCKET_SLOTS = 8
_M64 = (1 << 64) - 1

Change = Callable[[float | None, float], tuple[float, R]]
"""Given the entry's value and when it was last touched (None and 0.0 for a key not held), the new
value and what the caller is told."""


def string_key(text: str) -> int:
    """A stable 64-bit key for a string: the same in every process (Python's own hash is not)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest())


class SharedTable:
    def __init__(self, buffer: mmap.mmap, fd: int | None, buckets: int, slots: int) -> None:
        self._buffer = buffer
        self._fd = fd
        self._buckets = buckets
        self._slots = slots
        self._bucket_bytes = slots * _SLOT.size
        self._bucket = struct.Struct("<" + "Qdd" * slots)
        self._thread_lock = threading.Lock()

    @staticmethod
    def _geometry(capacity: int) -> tuple[int, int]:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        slots = min(_BUCKET_SLOTS, capacity)
        buckets = 1
        while buckets * slots < capacity:
            buckets *= 2
        return buckets, slots

    @classmethod
    def private(cls, capacity: int) -> "SharedTable":
        """A table for this process alone (one worker, or tests)."""
        buckets, slots = cls._geometry(capacity)
        return cls(mmap.mmap(-1, buckets * slots * _SLOT.size), None, buckets, slots)

    @classmethod
    def in_directory(cls, directory: Path, name: str, capacity: int) -> "SharedTable":
        """The table `name` that every process opening it in `directory` shares; created empty by the
        first. The geometry is in the file name, so processes started with other settings never read
        one another's layout."""
        buckets, slots = cls._geometry(capacity)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # serve made it; one set by hand may not
        path = directory / f"{name}-{buckets}x{slots}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = buckets * slots * _SLOT.size
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)  # zero-filled: every slot empty; the same size again changes nothing
        return cls(mmap.mmap(fd, size), fd, buckets, slots)

    @classmethod
    def open(cls, directory: Path | None, name: str, capacity: int) -> "SharedTable":
        return cls.private(capacity) if directory is None else cls.in_directory(directory, name, capacity)

    def update(self, key: int, now: float, change: "Change[R]") -> R:
        """Apply `change` to `key`'s entry (touched at `now` afterwards) with its bucket locked."""
        key = (key & _M64) or 1  # 0 marks an empty slot
        bucket = key & (self._buckets - 1)
        offset = bucket * self._bucket_bytes
        with self._thread_lock:
            if self._fd is not None:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, bucket)
            try:
                entries = self._bucket.unpack_from(self._buffer, offset)
                chosen, value, touched = -1, None, 0.0
                oldest, oldest_touched = 0, float("inf")
                for slot in range(self._slots):
                    held = entries[3 * slot]
                    if held == key:
                        chosen, value, touched = slot, entries[3 * slot + 1], entries[3 * slot + 2]
                        break
                    slot_touched = entries[3 * slot + 2] if held else float("-inf")
                    if slot_touched < oldest_touched:
                        oldest, oldest_touched = slot, slot_touched
                if chosen < 0:
                    chosen = oldest
                new_value, result = change(value, touched)
                _SLOT.pack_into(self._buffer, offset + chosen * _SLOT.size, key, new_value, now)
            finally:
                if self._fd is not None:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, bucket)
        return result

    def __len__(self) -> int:
        """Entries held (reads the whole table: for tests and diagnostics)."""
        table = self._buffer[:]
        return sum(1 for offset in range(0, len(table), _SLOT.size) if any(table[offset : offset + 8]))

    def close(self) -> None:
        self._buffer.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
