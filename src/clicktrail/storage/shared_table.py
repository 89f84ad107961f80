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

Each read-change-write of a bucket holds one of the table's locks (one per bucket, or per stripe of
buckets in a large table), so workers only wait for each other on the same stripe, and a worker
killed while holding one must not stop the others for good. On Linux the locks are robust
process-shared pthread mutexes in the file's first pages, called through cffi: taken and given back
in user space when nobody waits (~0.5 µs a change for the pair), and the kernel marks a dead
holder's mutex so the next taker gets it (EOWNERDEAD) and goes on. Elsewhere they are `fcntl` record
locks on one byte of the file each, which the kernel drops when their process dies: two system calls
a change (~2.5 µs; 9.7% of the workers' samples under wrk went to the table's changes with them,
6.3 to 6.9% with the mutexes: scripts/profile_clicks.py, BENCHMARKS.md "Session of 2026-12-07 (14:41
UTC)"). A bucket whose changer died mid-write may hold one torn entry: a visitor judged once more,
an allowance counted once more or less.
"""

import errno
import fcntl
import hashlib
import mmap
import os
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import cffi

R = TypeVar("R")

_SLOT = struct.Struct("<Qdd")
_BUCKET_SLOTS = 8
_M64 = (1 << 64) - 1

_MAX_STRIPES = 1024
"""Locks of a shared table: with a few workers, two changes at once on one stripe are rare anyway."""
_MUTEX_BYTES = 64
"""Room for a pthread_mutex_t, a cache line: glibc's is 40 bytes on x86-64 and 48 on arm64, musl's 40."""
_READY = b"ctlocks1"
"""Written into the first bytes once the mutexes are set up; a file without it is set up again."""

Change = Callable[[float | None, float], tuple[float, R]]
"""Given the entry's value and when it was last touched (None and 0.0 for a key not held), the new
value and what the caller is told."""


def string_key(text: str) -> int:
    """A stable 64-bit key for a string: the same in every process (Python's own hash is not)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest())


class _Locks:
    """One lock per stripe of buckets, held around each read-change-write."""

    def hold(self, stripe: int) -> None:
        raise NotImplementedError

    def let_go(self, stripe: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Gives back what the locks hold of the table's file or mapping."""


class _ThreadLock(_Locks):
    """A private table's: only this process's threads to order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def hold(self, stripe: int) -> None:
        self._lock.acquire()

    def let_go(self, stripe: int) -> None:
        self._lock.release()


_RECORD_LOCKED_FILES: dict[tuple[int, int], threading.Lock] = {}
"""The thread lock of each file (device, inode) this process holds record locks on."""
_RECORD_LOCKED_FILES_GUARD = threading.Lock()


class _RecordLocks(_Locks):
    """`fcntl` record locks on byte `stripe` of the file. They belong to the process, not the thread
    or the descriptor, so a thread lock orders the threads of one process first: one lock for every
    table of the process open on the file, or two threads with a table each would both get in."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        opened = os.fstat(fd)
        with _RECORD_LOCKED_FILES_GUARD:
            self._thread_lock = _RECORD_LOCKED_FILES.setdefault(
                (opened.st_dev, opened.st_ino), threading.Lock()
            )

    def hold(self, stripe: int) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, stripe)
        except BaseException:
            self._thread_lock.release()
            raise

    def let_go(self, stripe: int) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, stripe)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        if self._fd >= 0:  # once: the number may belong to another file afterwards
            os.close(self._fd)
            self._fd = -1


class _RobustMutexes(_Locks):
    """Robust process-shared pthread mutexes, `_MUTEX_BYTES` apart after the first `_MUTEX_BYTES` of
    `buffer`. They belong to the thread holding them, so the threads of one process need no other
    lock; cffi lets go of the GIL while a thread waits for one."""

    def __init__(self, buffer: mmap.mmap, stripes: int) -> None:
        self._start = _FFI.from_buffer(buffer)
        self._mutexes = [self._start + _MUTEX_BYTES * (1 + stripe) for stripe in range(stripes)]
        self._lock = _PTHREAD.pthread_mutex_lock
        self._unlock = _PTHREAD.pthread_mutex_unlock

    def set_up(self) -> None:
        """Initialise every mutex of a table nobody uses yet (under the file's lock)."""
        attributes = _FFI.new("char[]", 64)  # a pthread_mutexattr_t is 4 bytes in glibc and musl
        for outcome in (
            _PTHREAD.pthread_mutexattr_init(attributes),
            _PTHREAD.pthread_mutexattr_setpshared(attributes, 1),  # PTHREAD_PROCESS_SHARED
            _PTHREAD.pthread_mutexattr_setrobust(attributes, 1),  # PTHREAD_MUTEX_ROBUST
            *(_PTHREAD.pthread_mutex_init(mutex, attributes) for mutex in self._mutexes),
        ):
            if outcome:
                raise OSError(outcome, f"could not set up the shared table's locks: {os.strerror(outcome)}")

    def hold(self, stripe: int) -> None:
        mutex = self._mutexes[stripe]
        outcome = self._lock(mutex)
        if outcome:
            self._take_over(mutex, outcome)

    def _take_over(self, mutex: Any, outcome: int) -> None:
        """After a lock call that did not simply succeed: a dead holder's mutex is ours and usable
        again, its bucket as it was left; anything else is an error, with the mutex not held."""
        if outcome == errno.EOWNERDEAD:
            outcome = _PTHREAD.pthread_mutex_consistent(mutex)
            if not outcome:
                return
            self._unlock(mutex)
        raise OSError(outcome, f"could not lock the shared table: {os.strerror(outcome)}")

    def let_go(self, stripe: int) -> None:
        self._unlock(self._mutexes[stripe])

    def close(self) -> None:
        if self._mutexes:
            self._mutexes = []
            _FFI.release(self._start)  # or the mapping could not close: cffi holds its buffer


def _load_pthread() -> tuple[Any, Any]:
    """cffi's view of the C library's robust mutex functions, or Nones where the C library has none
    (macOS)."""
    if not sys.platform.startswith("linux"):
        return None, None
    ffi = cffi.FFI()
    ffi.cdef(
        """
        int pthread_mutexattr_init(void *attributes);
        int pthread_mutexattr_setpshared(void *attributes, int shared);
        int pthread_mutexattr_setrobust(void *attributes, int robust);
        int pthread_mutex_init(void *mutex, void *attributes);
        int pthread_mutex_lock(void *mutex);
        int pthread_mutex_unlock(void *mutex);
        int pthread_mutex_consistent(void *mutex);
        """
    )
    try:
        pthread: Any = ffi.dlopen(None)  # the C library the interpreter already runs on
        pthread.pthread_mutex_consistent  # noqa: B018 -- looked up now: missing where robust mutexes are
    except (OSError, AttributeError):
        return None, None
    return ffi, pthread


_FFI, _PTHREAD = _load_pthread()


class SharedTable:
    def __init__(self, buffer: mmap.mmap, locks: _Locks, data_offset: int, buckets: int, slots: int) -> None:
        self._buffer = buffer
        self._locks = locks
        self._data_offset = data_offset
        self._buckets = buckets
        self._stripe_mask = _stripes(buckets) - 1
        self._slots = slots
        self._bucket_bytes = slots * _SLOT.size
        # A bucket's keys alone, and their times alone: a key found (most clicks of a returning
        # visitor) reads 8 keys and its own entry, not the 24 numbers of the bucket.
        self._keys = struct.Struct("<" + "Q16x" * slots)
        self._times = struct.Struct("<" + "16xd" * slots)

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
        return cls(mmap.mmap(-1, buckets * slots * _SLOT.size), _ThreadLock(), 0, buckets, slots)

    @classmethod
    def in_directory(cls, directory: Path, name: str, capacity: int, *, robust: bool = True) -> "SharedTable":
        """The table `name` that every process opening it in `directory` shares; created empty by the
        first. The geometry and the kind of lock are in the file name, so processes started with other
        settings never read one another's layout. `robust=False` takes the record locks even where
        the C library has robust mutexes (the tests of both kinds)."""
        buckets, slots = cls._geometry(capacity)
        stripes = _stripes(buckets)
        robust = robust and _PTHREAD is not None
        header = _MUTEX_BYTES * (1 + stripes) if robust else 0
        size = header + buckets * slots * _SLOT.size
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # serve made it; one set by hand may not
        path = directory / f"{name}-{buckets}x{slots}-{'mutex' if robust else 'record'}-locks"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # One opener at a time sets the file up. flock, not a record lock: it belongs to this
            # descriptor, so two threads of one process opening the table take turns too, and taking
            # or dropping it leaves the fallback's record locks on the same file alone.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)  # zero-filled: every slot empty; the same size changes nothing
                buffer = mmap.mmap(fd, size)
                locks: _Locks
                if robust:
                    locks = mutexes = _RobustMutexes(buffer, stripes)
                    if buffer[: len(_READY)] != _READY:
                        mutexes.set_up()
                        buffer[: len(_READY)] = _READY
                else:
                    locks = _RecordLocks(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        if robust:
            os.close(fd)  # the mapping stays
        return cls(buffer, locks, header, buckets, slots)

    @classmethod
    def open(cls, directory: Path | None, name: str, capacity: int) -> "SharedTable":
        return cls.private(capacity) if directory is None else cls.in_directory(directory, name, capacity)

    def update(self, key: int, now: float, change: "Change[R]") -> R:
        """Apply `change` to `key`'s entry (touched at `now` afterwards) with its bucket locked."""
        key = (key & _M64) or 1  # 0 marks an empty slot
        bucket = key & (self._buckets - 1)
        offset = self._data_offset + bucket * self._bucket_bytes
        stripe = bucket & self._stripe_mask
        self._locks.hold(stripe)
        try:
            keys = self._keys.unpack_from(self._buffer, offset)
            value: float | None = None
            touched = 0.0
            if key in keys:
                chosen = keys.index(key)
                _, value, touched = _SLOT.unpack_from(self._buffer, offset + chosen * _SLOT.size)
            else:  # the slot touched longest ago, an empty one first
                times = self._times.unpack_from(self._buffer, offset)
                chosen, oldest_touched = 0, float("inf")
                for slot in range(self._slots):
                    slot_touched = times[slot] if keys[slot] else float("-inf")
                    if slot_touched < oldest_touched:
                        chosen, oldest_touched = slot, slot_touched
            new_value, result = change(value, touched)
            _SLOT.pack_into(self._buffer, offset + chosen * _SLOT.size, key, new_value, now)
        finally:
            self._locks.let_go(stripe)
        return result

    def __len__(self) -> int:
        """Entries held (reads the whole table: for tests and diagnostics)."""
        table = self._buffer[self._data_offset :]
        return sum(1 for offset in range(0, len(table), _SLOT.size) if any(table[offset : offset + 8]))

    def close(self) -> None:
        self._locks.close()
        self._buffer.close()


def _stripes(buckets: int) -> int:
    return min(buckets, _MAX_STRIPES)
