"""The workers' way to the report engine process (reports/remote.py), over its real socket: what the
engine answers, refuses or fails on reaches the worker as the same answer or a clear error, and an
engine that is not there, or dies during a report, is a 503 to retry, never a hang."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from clicktrail.errors import InvalidQuery
from clicktrail.reports import remote
from clicktrail.reports.costs import CostUpdate
from clicktrail.reports.request import ReportRequest, parse_report_request
from clicktrail.reports.result import AbandonableEngine, ReportAbandoned, ReportResult
from clicktrail.web.errors import status_for

TIMEOUT = 30.0
TODAY = date(2026, 12, 1)
REQUEST = parse_report_request(
    {"group_by": "campaign", "from": "2026-11-01", "to": "2026-11-30"}, today=TODAY
)
ANSWER = ReportResult(
    columns=["campaign", "clicks"], rows=[{"campaign": 1, "clicks": 3}], totals={"clicks": 3}, total_rows=1
)


class _Engine:
    """An engine that answers with `answer(request)` (which may raise, as a real one can)."""

    def __init__(self, answer: Callable[[ReportRequest], ReportResult]) -> None:
        self._answer = answer
        self.asked: list[tuple[ReportRequest, tuple[CostUpdate, ...]]] = []

    def run(
        self,
        request: ReportRequest,
        updates: Sequence[CostUpdate] = (),
        *,
        abandoned: Callable[[], bool] | None = None,
    ) -> ReportResult:
        self.asked.append((request, tuple(updates)))
        return self._answer(request)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Callable[[AbandonableEngine], str]]:
    """Start a ReportServer (in a thread of this process) on an engine; its address."""
    stops: list[threading.Event] = []
    threads: list[threading.Thread] = []

    def start(engine: AbandonableEngine) -> str:
        address = remote.address_in(tmp_path)
        server = remote.ReportServer(address, lambda: engine)
        stop = threading.Event()
        thread = threading.Thread(target=server.serve_until, args=(stop, lambda: True), daemon=True)
        thread.start()
        stops.append(stop)
        threads.append(thread)
        return address

    yield start
    for stop in stops:
        stop.set()
    for thread in threads:
        thread.join(5)


def test_a_report_and_its_cost_updates_go_to_the_engine_and_its_answer_comes_back(
    serving: Callable[[AbandonableEngine], str],
) -> None:
    engine = _Engine(lambda _request: ANSWER)
    address = serving(engine)
    update = CostUpdate(7, 1, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC),
                        Decimal("12.50"), datetime(2026, 11, 3, tzinfo=UTC))  # fmt: skip

    result = remote.RemoteReports(address, TIMEOUT).run(REQUEST, [update])

    assert result == ANSWER
    assert engine.asked == [(REQUEST, (update,))]


def test_a_request_the_engine_refuses_is_refused_with_the_engines_own_reason(
    serving: Callable[[AbandonableEngine], str],
) -> None:
    def refuse(_request: ReportRequest) -> ReportResult:
        raise InvalidQuery("group_by: no such dimension", {"group_by": "no such dimension"})

    address = serving(_Engine(refuse))

    with pytest.raises(InvalidQuery) as refused:
        remote.RemoteReports(address, TIMEOUT).run(REQUEST)
    assert refused.value.detail == "group_by: no such dimension"
    assert status_for(refused.value.code) == 400


def test_an_engine_failure_is_said_and_the_engine_answers_the_next_report(
    serving: Callable[[AbandonableEngine], str],
) -> None:
    failed: list[bool] = []

    def flaky(_request: ReportRequest) -> ReportResult:
        if not failed:
            failed.append(True)
            raise RuntimeError("segment file is corrupt")
        return ANSWER

    address = serving(_Engine(flaky))
    reports = remote.RemoteReports(address, TIMEOUT)

    with pytest.raises(remote.ReportFailed, match="the report engine's log says why") as said:
        reports.run(REQUEST)
    assert "corrupt" not in said.value.detail  # the engine's own words stay in its log
    assert reports.run(REQUEST) == ANSWER


_SLOW_ENGINE = """
import sys, threading, time
from clicktrail.reports import remote

class Slow:
    def run(self, request, updates=(), abandoned=None):
        time.sleep(60)

remote.ReportServer(sys.argv[1], Slow).serve_until(threading.Event(), lambda: True)
"""


def _kill_during_a_report(address: str, reports: remote.RemoteReports, restart: bool) -> list[object]:
    """Ask `reports` for a report, kill the (slow) engine while it runs it, and start a quick one on the
    same socket if `restart` (as serve's supervisor would); what the report came to."""
    engine = subprocess.Popen([sys.executable, "-c", _SLOW_ENGINE, address])
    stop = threading.Event()
    outcome: list[object] = []

    def ask() -> None:
        try:
            outcome.append(reports.run(REQUEST))
        except remote.ReportsUnavailable as unavailable:
            outcome.append(unavailable)

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        deadline = time.monotonic() + 10
        while not _connected_to(engine.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        engine.kill()
        engine.wait()
        if restart:
            quick = remote.ReportServer(address, lambda: _Engine(lambda _request: ANSWER))
            threading.Thread(target=quick.serve_until, args=(stop, lambda: True), daemon=True).start()
        asking.join(15)
        assert not asking.is_alive()
        return outcome
    finally:
        stop.set()
        engine.kill()
        engine.wait()


def test_a_report_the_engine_dies_during_is_asked_again_of_the_engine_started_again(tmp_path: Path) -> None:
    reports = remote.RemoteReports(remote.address_in(tmp_path), TIMEOUT, connect_wait=10)

    assert _kill_during_a_report(remote.address_in(tmp_path), reports, restart=True) == [ANSWER]


def test_an_engine_killed_during_a_report_and_not_back_is_a_503_to_retry_not_a_hang(tmp_path: Path) -> None:
    reports = remote.RemoteReports(remote.address_in(tmp_path), TIMEOUT, connect_wait=1)

    outcome = _kill_during_a_report(remote.address_in(tmp_path), reports, restart=False)

    assert len(outcome) == 1
    assert isinstance(outcome[0], remote.ReportsUnavailable)
    assert "not running" in outcome[0].detail
    assert status_for(outcome[0].code) == 503


def _connected_to(pid: int) -> bool:
    """The engine process has a report's connection open (a socket beyond its listener)."""
    try:
        sockets = [link for link in Path(f"/proc/{pid}/fd").iterdir() if "socket:" in os.readlink(link)]
    except OSError:
        return False
    return len(sockets) >= 2


def test_no_engine_listening_is_a_503_once_the_wait_for_a_restart_is_over(tmp_path: Path) -> None:
    reports = remote.RemoteReports(remote.address_in(tmp_path), TIMEOUT, connect_wait=0.3)

    with pytest.raises(remote.ReportsUnavailable, match="not running") as unavailable:
        reports.run(REQUEST)
    assert status_for(unavailable.value.code) == 503


def test_a_report_asked_before_the_engine_listens_is_answered_once_it_does(tmp_path: Path) -> None:
    address = remote.address_in(tmp_path)
    stop = threading.Event()

    def start_late() -> None:
        stop.wait(0.5)
        remote.ReportServer(address, lambda: _Engine(lambda _request: ANSWER)).serve_until(stop, lambda: True)

    late = threading.Thread(target=start_late, daemon=True)
    late.start()
    try:
        assert remote.RemoteReports(address, TIMEOUT, connect_wait=10).run(REQUEST) == ANSWER
    finally:
        stop.set()
        late.join(5)


def test_a_stuck_engine_is_a_503_once_the_report_timeout_is_over_not_a_hang(tmp_path: Path) -> None:
    address = remote.address_in(tmp_path)
    engine = subprocess.Popen([sys.executable, "-c", _SLOW_ENGINE, address])
    try:
        reports = remote.RemoteReports(address, timeout=1, connect_wait=10)
        started = time.monotonic()

        with pytest.raises(remote.ReportsUnavailable, match="did not answer within 1 s"):
            reports.run(REQUEST)
        assert time.monotonic() - started < 10
    finally:
        engine.kill()
        engine.wait()


def test_a_connection_that_sends_no_report_does_not_stop_the_engine(
    serving: Callable[[AbandonableEngine], str],
) -> None:
    address = serving(_Engine(lambda _request: ANSWER))
    for garbage in (b"", b"\xff\xff\xff\xff", b"\x00\x00\x00\x0512345", b"GET / HTTP/1.1\r\n\r\n"):
        with socket.socket(socket.AF_UNIX) as stranger:
            stranger.connect(address)
            stranger.sendall(garbage)

    assert remote.RemoteReports(address, TIMEOUT).run(REQUEST) == ANSWER


def test_asked_to_stop_the_engine_finishes_the_report_in_hand(tmp_path: Path) -> None:
    def slow(_request: ReportRequest) -> ReportResult:
        time.sleep(1)
        return ANSWER

    address = remote.address_in(tmp_path)
    server = remote.ReportServer(address, lambda: _Engine(slow))
    stop = threading.Event()
    serving = threading.Thread(target=server.serve_until, args=(stop, lambda: True))
    serving.start()
    answers: list[ReportResult] = []
    reports = remote.RemoteReports(address, TIMEOUT)
    asking = threading.Thread(target=lambda: answers.append(reports.run(REQUEST)))
    asking.start()
    time.sleep(0.3)

    stop.set()  # SIGTERM to every process of the server at once: the workers are draining too
    asking.join(10)
    serving.join(10)

    assert answers == [ANSWER]
    assert not serving.is_alive()
    assert not Path(address).exists()


def test_the_socket_left_by_a_killed_engine_does_not_stop_the_next_one(
    tmp_path: Path, serving: Callable[[AbandonableEngine], str]
) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(remote.address_in(tmp_path))  # bound and never closed cleanly: the file stays
    stale.close()
    assert Path(remote.address_in(tmp_path)).exists()

    address = serving(_Engine(lambda _request: ANSWER))

    assert remote.RemoteReports(address, TIMEOUT).run(REQUEST) == ANSWER


def test_a_report_its_worker_stopped_waiting_for_is_not_run(tmp_path: Path) -> None:
    def slow(_request: ReportRequest) -> ReportResult:
        time.sleep(1.5)
        return ANSWER

    engine = _Engine(slow)
    address = remote.address_in(tmp_path)
    server = remote.ReportServer(address, lambda: engine, concurrent=1)
    stop = threading.Event()
    serving = threading.Thread(target=server.serve_until, args=(stop, lambda: True))
    serving.start()
    try:
        answers: list[ReportResult] = []
        first = threading.Thread(
            target=lambda: answers.append(remote.RemoteReports(address, TIMEOUT).run(REQUEST))
        )
        first.start()
        time.sleep(0.3)  # the first report holds the engine's only slot

        with pytest.raises(remote.ReportsUnavailable, match="did not answer within"):
            remote.RemoteReports(address, timeout=0.5).run(REQUEST)  # gives up while queued
        first.join(10)

        assert answers == [ANSWER]
        time.sleep(0.3)  # the slot is free: the abandoned report would start now
        assert len(engine.asked) == 1
    finally:
        stop.set()
        serving.join(10)


def test_a_running_report_its_worker_stopped_waiting_for_is_stopped(tmp_path: Path) -> None:
    started, stopped = threading.Event(), threading.Event()

    class Running:
        """A long report that looks, as the real engine does, whether anyone still waits for it."""

        def run(
            self,
            request: ReportRequest,
            updates: Sequence[CostUpdate] = (),
            *,
            abandoned: Callable[[], bool] | None = None,
        ) -> ReportResult:
            assert abandoned is not None
            if started.is_set():
                return ANSWER  # the next report: quick
            started.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if abandoned():
                    stopped.set()
                    raise ReportAbandoned("nobody waits")
                time.sleep(0.05)
            return ANSWER

    address = remote.address_in(tmp_path)
    server = remote.ReportServer(address, Running, concurrent=1)
    stop = threading.Event()
    serving = threading.Thread(target=server.serve_until, args=(stop, lambda: True))
    serving.start()
    try:
        with pytest.raises(remote.ReportsUnavailable, match="did not answer within"):
            remote.RemoteReports(address, timeout=0.5).run(REQUEST)

        assert started.is_set()
        assert stopped.wait(2), "the report ran on after its worker gave up"
        # The engine's only slot is free again: the next report does not wait for the first's end.
        assert remote.RemoteReports(address, timeout=2).run(REQUEST) == ANSWER
    finally:
        stop.set()
        serving.join(10)
