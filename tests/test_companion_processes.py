"""The report feed and the report engine run in processes of their own beside the workers: reports
fill and are answered while no worker ever loads DuckDB, both run at a lower priority than the
workers, and each is restarted when it dies and stopped with the server."""

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.dashboard.test_sign_in_accounts import sign_in
from tests.reports.test_reports_api import _report_when
from tests.support import ADMIN_TOKEN, ServerProcess, Tracker, a_pid_nobody_has, fresh_database, start_server


def _children(pid: int) -> list[int]:
    """Children of every thread (a restarted feed is the child of the thread that watches it)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue
    return found


def _command(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _companion_pids(server: ServerProcess, command: bytes) -> list[int]:
    return [pid for pid in _children(server.process.pid) if command in _command(pid)]


def _worker_pids(server: ServerProcess) -> list[int]:
    """The processes that answer requests: serve itself with one worker, its spawned children with more."""
    spawned = [
        pid
        for pid in _children(server.process.pid)
        if any(b"spawn_main" in part for part in _command(pid))
        and not any(b"resource_tracker" in part for part in _command(pid))
    ]
    return spawned or [server.process.pid]


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _loads_duckdb(pid: int) -> bool:
    return "duckdb" in Path(f"/proc/{pid}/maps").read_text()


def _alive(pid: int) -> bool:
    """Running (a zombie no longer runs), as seen by /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _one(server: ServerProcess, command: bytes, *, other_than: int | None = None) -> int:
    """The pid of the server's one `feed` or `report-engine` process (once it is not `other_than`)."""
    found: list[int] = []

    def one() -> bool:
        found[:] = _companion_pids(server, command)
        return len(found) == 1 and found[0] != other_than

    assert _eventually(one), f"{command!r} processes: {found}\n{server.log()}"
    return found[0]


def _one_feed(server: ServerProcess, *, other_than: int | None = None) -> int:
    return _one(server, b"feed", other_than=other_than)


def _one_engine(server: ServerProcess, *, other_than: int | None = None) -> int:
    return _one(server, b"report-engine", other_than=other_than)


@pytest.mark.parametrize("workers", [1, 2])
def test_reports_fill_from_the_feed_process_and_are_answered_by_the_engine_process_not_a_worker(
    tmp_path: Path, workers: int
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=workers)
    tracker = Tracker(server)
    try:
        feed, engine = _one_feed(server), _one_engine(server)
        campaign = tracker.campaign()
        for sub in ("a", "b", "c"):
            tracker.click(campaign["key"], sub1=sub)
        segments = tmp_path / "analytics" / "clicks"
        assert _eventually(lambda: any(segments.glob("*.parquet"))), server.log()

        workers_pids = _worker_pids(server)
        assert len(workers_pids) == workers
        # Both step back for the workers (CLICKTRAIL_ANALYTICS_NICENESS, 10 by default).
        assert _niceness(feed) == _niceness(engine) == min(_niceness(workers_pids[0]) + 10, 19)

        params = {"group_by": "sub1", "campaign_id": str(campaign["id"])}
        assert _report_when(tracker, params, lambda b: b["totals"]["clicks"] == 3)["totals"]["clicks"] == 3
        for _ in range(4 * workers):  # a new connection each: the kernel spreads them over the workers
            response = tracker.api("GET", "/reports", params=params, headers={"connection": "close"})
            assert response.status_code == 200, response.text
            assert response.json()["totals"]["clicks"] == 3
        assert not any(_loads_duckdb(pid) for pid in workers_pids)
        assert _loads_duckdb(engine)
    finally:
        tracker.close()
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_on_postgresql_serve_holds_the_feed_to_its_share_and_reports_still_fill(
    tmp_path: Path, backend: str
) -> None:
    """On SQLite the feed rests by itself instead: stopped from outside while it held a lock of the
    database file's shared memory, it would stop the workers' writes too."""
    with fresh_database(backend, tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        tracker = Tracker(server)
        try:
            feed = _one_feed(server)
            assert (b"--cpu-held-by-parent" in _command(feed)) == (backend == "postgres")
            # Held, it leads a process group of its own (supervisor.Companion): serve holds it, not
            # only tells it not to rest.
            assert (os.getpgid(feed) == feed) == (backend == "postgres")
            campaign = tracker.campaign()
            for sub in ("a", "b"):
                tracker.click(campaign["key"], sub1=sub)
            params = {"campaign_id": str(campaign["id"])}
            assert (
                _report_when(tracker, params, lambda b: b["totals"]["clicks"] == 2)["totals"]["clicks"] == 2
            )
        finally:
            tracker.close()
            assert server.stop() == 0, server.log()
        assert not _alive(feed)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_feed_process_is_restarted_and_sigterm_stops_it_with_the_server(
    tmp_path: Path, workers: int
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=workers)
    tracker = Tracker(server)
    try:
        first = _one_feed(server)
        os.kill(first, signal.SIGKILL)
        second = _one_feed(server, other_than=first)

        campaign = tracker.campaign()
        tracker.click(campaign["key"])
        params = {"campaign_id": str(campaign["id"])}
        assert _report_when(tracker, params, lambda b: b["totals"]["clicks"] == 1)["totals"]["clicks"] == 1
    finally:
        tracker.close()
        assert server.stop() == 0, server.log()
    assert not _alive(second)
    assert "report feed process exited with status -9; restarting it" in server.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_report_asked_while_the_killed_engine_restarts_is_answered_once_it_is_back(
    tmp_path: Path, workers: int
) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=workers)
    tracker = Tracker(server)
    try:
        campaign = tracker.campaign()
        tracker.click(campaign["key"])
        params = {"campaign_id": str(campaign["id"])}
        assert _report_when(tracker, params, lambda b: b["totals"]["clicks"] == 1)["totals"]["clicks"] == 1
        first = _one_engine(server)

        os.kill(first, signal.SIGKILL)
        assert _eventually(lambda: not _alive(first), timeout=5)
        # Asked at once: the worker waits for the engine the supervisor starts again after 1 s.
        response = tracker.api("GET", "/reports", params=params, timeout=30)

        assert response.status_code == 200, response.text
        assert response.json()["totals"]["clicks"] == 1
        second = _one_engine(server, other_than=first)
    finally:
        tracker.close()
        assert server.stop() == 0, server.log()
    assert not _alive(second)
    assert "report engine process exited with status -9; restarting it" in server.log()


def test_sigterm_to_the_whole_process_group_stops_the_feed_and_the_engine_without_a_restart(
    tmp_path: Path,
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=2, own_process_group=True
    )
    feed, engine = _one_feed(server), _one_engine(server)

    assert server.stop(group=True) == 0, server.log()

    assert not _alive(feed)
    assert not _alive(engine)
    assert "restarting" not in server.log()


def test_the_feed_and_the_engine_stop_by_themselves_when_serve_is_killed(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=1)
    feed, engine = _one_feed(server), _one_engine(server)

    server.stop(signal.SIGKILL)  # only serve: nobody is left to stop them

    assert _eventually(lambda: not _alive(feed) and not _alive(engine), timeout=5)


def test_a_feed_held_to_its_share_dies_with_serve_even_while_it_is_stopped(tmp_path: Path) -> None:
    """Stopped (SIGSTOP) it could not look for its parent: it leads its own process group, which
    serve's death orphans, and the kernel ends a stopped member of an orphaned group (SIGHUP)."""
    with fresh_database("postgres", tmp_path) as url:
        server = start_server(url, tmp_path, workers=1)
        feed = _one_feed(server)
        assert b"--cpu-held-by-parent" in _command(feed)
        os.kill(feed, signal.SIGSTOP)  # as serve's CpuShare does, a few milliseconds at a time

        server.stop(signal.SIGKILL)

        assert _eventually(lambda: not _alive(feed), timeout=5)


def test_the_engines_socket_directory_is_removed_on_stop_and_a_killed_servers_at_the_next_start(
    tmp_path: Path,
) -> None:
    temporary = Path(tempfile.gettempdir())
    dead_pid = a_pid_nobody_has()
    left_behind = temporary / f"clicktrail-reports-{dead_pid}-test"
    left_behind.mkdir()
    (left_behind / "reports.sock").write_bytes(b"")
    server = start_server(f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=1)
    try:
        _one_engine(server)
        assert not left_behind.exists()
        ours = list(temporary.glob(f"clicktrail-reports-{server.process.pid}-*"))
        assert len(ours) == 1
        assert ours[0].stat().st_mode & 0o777 == 0o700
    finally:
        assert server.stop() == 0, server.log()
    assert not ours[0].exists()


def test_a_stuck_engine_is_said_by_the_api_and_the_dashboard_and_reports_come_back_with_it(
    tmp_path: Path,
) -> None:
    server = start_server(
        f"sqlite:///{tmp_path / 'clicktrail.db'}", tmp_path, workers=1,
        extra_env={"CLICKTRAIL_REPORT_TIMEOUT_SECONDS": "2"},
    )  # fmt: skip
    tracker = Tracker(server)
    browser = sign_in(server, "", ADMIN_TOKEN)
    try:
        engine = _one_engine(server)
        os.kill(engine, signal.SIGSTOP)  # alive, its socket listening, answering nothing
        try:
            api = tracker.api("GET", "/reports", params={"group_by": "campaign"})
            page = browser.get("/reports", timeout=30)
            export = browser.get("/reports.csv", timeout=30)
        finally:
            os.kill(engine, signal.SIGCONT)

        assert api.status_code == 503
        assert api.json()["error"] == "reports_unavailable"
        assert "did not answer within 2 s" in api.json()["detail"]
        assert page.status_code == 200  # the page itself, saying why its table is empty
        assert "did not answer within 2 s" in page.text
        assert export.status_code == 503
        assert "did not answer within 2 s" in export.text
        assert tracker.api("GET", "/reports", params={"group_by": "campaign"}).status_code == 200
    finally:
        browser.close()
        tracker.close()
        assert server.stop() == 0, server.log()
