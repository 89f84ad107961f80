"""Several workers behave as one server: a repeat visitor is unique once and a client's allowance is
given once, whichever worker the kernel hands each connection to, because the workers share those
tables (storage/shared_table.py)."""

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from clicktrail.storage.shared_table import SharedTable
from tests.support import Tracker, a_pid_nobody_has, fresh_database, start_server

# Every request below opens a connection of its own, and the kernel spreads new connections across
# the workers' sockets: the chance that all of them reach one worker (and so that these tests pass
# with unshared memory) is 2 * 2^-N.
FRESH_CONNECTIONS = 24


def _count(value: float | None, _touched: float) -> tuple[float, None]:
    return (value or 0.0) + 1, None


# Robust process-shared mutexes where the C library has them (Linux), fcntl record locks elsewhere:
# both kinds are run here.
LOCK_KINDS = [pytest.param(True, id="robust-mutexes"), pytest.param(False, id="record-locks")]


def _add_many(directory: Path, robust: bool, times: int, start: Any) -> None:
    start.wait(30)  # all at once, from opening the new table on: one after another never overlap
    table = SharedTable.in_directory(directory, "counter", 64, robust=robust)
    for _ in range(times):
        table.update(7, time.time(), _count)


def _die_while_changing(directory: Path, robust: bool) -> None:
    def killed_midway(_value: float | None, _touched: float) -> tuple[float, None]:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("still alive after SIGKILL")

    table = SharedTable.in_directory(directory, "counter", 64, robust=robust)
    table.update(7, time.time(), _count)
    table.update(7, time.time(), killed_midway)


def _count_once_more(directory: Path, robust: bool) -> None:
    table = SharedTable.in_directory(directory, "counter", 64, robust=robust)
    table.update(7, time.time(), _count)


def _die_holding(directory: Path, robust: bool, holding: Any) -> None:
    def hold_until_killed(_value: float | None, _touched: float) -> tuple[float, None]:
        holding.set()
        time.sleep(60)
        raise AssertionError("not killed")

    SharedTable.in_directory(directory, "counter", 64, robust=robust).update(
        7, time.time(), hold_until_killed
    )


def _finish(process: Any, seconds: float) -> int | None:
    """The process's exit code, or None after killing it when it has not ended within `seconds`."""
    process.join(seconds)
    if process.is_alive():
        process.kill()
        process.join()
        return None
    code: int | None = process.exitcode
    return code


def _read(table: SharedTable, key: int) -> float | None:
    seen: list[float | None] = []

    def keep(value: float | None, _touched: float) -> tuple[float, None]:
        seen.append(value)
        return value or 0.0, None

    table.update(key, time.time(), keep)
    return seen[0]


@pytest.mark.parametrize("robust", LOCK_KINDS)
def test_processes_changing_one_entry_at_once_lose_no_change(tmp_path: Path, robust: bool) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    workers = [context.Process(target=_add_many, args=(tmp_path, robust, 20_000, start)) for _ in range(3)]
    for worker in workers:
        worker.start()
    assert [_finish(worker, 60) for worker in workers] == [0, 0, 0]
    assert _read(SharedTable.in_directory(tmp_path, "counter", 64, robust=robust), 7) == 60_000


def test_on_linux_shared_tables_lock_with_robust_mutexes(tmp_path: Path) -> None:
    """Where the C library has them the robust mutexes are taken, not the fallback, so the tests
    named for them test them."""
    if not sys.platform.startswith("linux"):
        pytest.skip("robust mutexes are looked for on Linux only")
    SharedTable.in_directory(tmp_path, "counter", 64).close()
    assert [path.name for path in tmp_path.iterdir()] == ["counter-8x8-mutex-locks"]


@pytest.mark.parametrize("robust", LOCK_KINDS)
def test_threads_of_one_process_changing_one_entry_at_once_lose_no_change(
    tmp_path: Path, robust: bool
) -> None:
    start = threading.Barrier(3)

    def add_many() -> None:
        start.wait(30)  # each opens the new table at once: setting it up is one thread's job
        table = SharedTable.in_directory(tmp_path, "counter", 64, robust=robust)
        for _ in range(20_000):
            table.update(7, time.time(), _count)

    threads = [threading.Thread(target=add_many) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a change waited for good"
    assert _read(SharedTable.in_directory(tmp_path, "counter", 64, robust=robust), 7) == 60_000


def test_closing_a_table_twice_closes_nothing_else(tmp_path: Path) -> None:
    table = SharedTable.in_directory(tmp_path, "counter", 64, robust=False)
    table.close()
    unrelated = os.open(tmp_path / "unrelated", os.O_RDWR | os.O_CREAT)
    table.close()
    os.fstat(unrelated)  # still open
    os.close(unrelated)


@pytest.mark.parametrize("robust", LOCK_KINDS)
def test_a_worker_killed_while_changing_an_entry_does_not_stop_the_others(
    tmp_path: Path, robust: bool
) -> None:
    """The lock it held goes with it: the next change of the bucket goes ahead (in a process of its
    own, so that a lock left held fails the test on a deadline instead of hanging it)."""
    context = multiprocessing.get_context("spawn")
    doomed = context.Process(target=_die_while_changing, args=(tmp_path, robust))
    doomed.start()
    doomed.join(60)
    assert doomed.exitcode == -signal.SIGKILL
    survivor = context.Process(target=_count_once_more, args=(tmp_path, robust))
    survivor.start()
    assert _finish(survivor, 30) == 0, "the change waited on the dead worker's lock"
    assert _read(SharedTable.in_directory(tmp_path, "counter", 64, robust=robust), 7) == 2


@pytest.mark.parametrize("robust", LOCK_KINDS)
def test_a_change_waiting_on_a_worker_that_is_killed_goes_ahead(tmp_path: Path, robust: bool) -> None:
    """The kernel wakes a waiter when the holder dies, not only the next one to come."""
    context = multiprocessing.get_context("spawn")
    holding = context.Event()
    doomed = context.Process(target=_die_holding, args=(tmp_path, robust, holding))
    doomed.start()
    assert holding.wait(30)
    waiter = context.Process(target=_count_once_more, args=(tmp_path, robust))
    waiter.start()
    time.sleep(0.5)  # long enough for it to block on the lock
    assert waiter.is_alive(), "the change did not wait for the holder"
    doomed.kill()
    assert _finish(waiter, 30) == 0, "the waiter was not woken when the holder died"
    assert _finish(doomed, 5) == -signal.SIGKILL
    assert _read(SharedTable.in_directory(tmp_path, "counter", 64, robust=robust), 7) == 1


def test_a_table_in_a_folder_not_made_yet_makes_it(tmp_path: Path) -> None:
    table = SharedTable.in_directory(tmp_path / "not" / "yet", "t", 8)
    table.update(1, 1.0, _count)
    assert _read(SharedTable.in_directory(tmp_path / "not" / "yet", "t", 8), 1) == 1


def test_a_full_bucket_forgets_the_entry_touched_longest_ago() -> None:
    table = SharedTable.private(capacity=3)
    for key, at in ((1, 10.0), (2, 20.0), (3, 30.0)):
        table.update(key, at, _count)
    table.update(1, 40.0, _count)  # 1 touched again: 2 is now the oldest
    table.update(4, 50.0, _count)
    assert len(table) == 3
    assert _read(table, 1) == 2
    assert _read(table, 3) == 1
    assert _read(table, 2) is None


def test_with_two_workers_a_repeat_visitor_is_unique_once(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        try:
            tracker = Tracker(server)
            campaign = tracker.campaign()
            for n in range(FRESH_CONNECTIONS):  # no cookie jar: the visitor is its IP and user agent
                answer = httpx.get(f"{campaign['tracking_url']}?sub1={n}", headers={"user-agent": "same"})
                assert answer.status_code == 302
            deadline = time.monotonic() + 10
            while True:
                clicks = tracker.api("GET", "/clicks", params={"campaign_id": campaign["id"]}).json()["items"]
                if len(clicks) == FRESH_CONNECTIONS or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(clicks) == FRESH_CONNECTIONS
            assert sum(click["is_unique"] for click in clicks) == 1
            tracker.close()
        finally:
            assert server.stop() == 0, server.log()


def test_with_two_workers_the_per_address_cap_is_one_allowance(tmp_path: Path) -> None:
    limits = {"CLICKTRAIL_EDGE_IP_RATE_PER_SECOND": "0.01", "CLICKTRAIL_EDGE_IP_BURST": "3"}
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, workers=2, extra_env=limits)
        try:
            answers = [
                httpx.get(f"{server.base_url}/postback", params={"click_id": "x"}).status_code
                for _ in range(FRESH_CONNECTIONS)
            ]
            assert answers.count(400) == 3  # the burst: malformed postbacks, answered
            assert answers.count(429) == FRESH_CONNECTIONS - 3
        finally:
            assert server.stop() == 0, server.log()


def test_the_workers_shared_directory_is_removed_on_stop_and_a_dead_servers_at_the_next_start(
    tmp_path: Path,
) -> None:
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    if shm is None:
        pytest.skip("no writable /dev/shm here")
    dead_pid = a_pid_nobody_has()
    left_behind = shm / f"clicktrail-shared-{dead_pid}-test"
    left_behind.mkdir()
    (left_behind / "unique-visitors-1x8").write_bytes(b"\0" * 192)
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        try:
            assert not left_behind.exists()
            ours = list(shm.glob(f"clicktrail-shared-{server.process.pid}-*"))
            assert len(ours) == 1
        finally:
            assert server.stop() == 0, server.log()
    assert not ours[0].exists()
