"""The report engine in a process of its own, and the workers' way to it.

A worker that answered reports itself kept DuckDB's memory for good: after a few reports over 10
million clicks each worker of `clicktrail serve` held about 475 MB resident (137 MB before), against
issue 8's 150 MB a worker, and every worker paid it again with its own DuckDB, its own
`report_memory_limit` and its own copy of the segments' metadata. `clicktrail serve` now starts one
report engine process beside the workers (a `Companion`, as the report feed is); a worker sends it
the parsed request and waits for the result (`RemoteReports`). The workers never import DuckDB, one
memory limit covers every report of the server, and the engine runs at the report feed's lower
priority, so a long report steps back for the redirects.

The transport is multiprocessing's connections over a Unix socket in a private directory serve
makes, with an HMAC challenge on a key only serve and its children know: requests and results are
pickled dataclasses, as between any of our own processes.
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from clicktrail.errors import ClicktrailError, StorageError
from clicktrail.reports.costs import CostUpdate
from clicktrail.reports.request import ReportRequest
from clicktrail.reports.result import ReportEngine, ReportResult

log = logging.getLogger(__name__)

ADDRESS_VARIABLE = "CLICKTRAIL_REPORTS_ADDRESS"
KEY_VARIABLE = "CLICKTRAIL_REPORTS_KEY"
"""Set by `clicktrail serve` for its workers and its report engine; not settings a user gives."""

CONNECT_WAIT_SECONDS = 15.0
"""How long a report waits for the engine to listen: a restarted engine is back within a few
seconds (the supervisor waits 1 s, then Python starts), and a report asked meanwhile should be
answered late rather than refused."""

REPORT_TIMEOUT_SECONDS = 300.0
"""A report not answered by then is given up (the engine is stuck, or the report is absurd)."""

CONCURRENT_REPORTS = 4
"""Reports run at once in the engine; more wait for a slot. DuckDB spreads each over its threads."""


class ReportsUnavailable(StorageError):
    """The report engine process cannot be reached (restarting, or stopped); retry shortly (503)."""

    code = "reports_unavailable"


class ReportFailed(ClicktrailError):
    """The engine failed on a report for a reason of its own (logged there); the server's fault."""


class RemoteReports:
    """ReportEngine, answered by the report engine process at `address`."""

    def __init__(self, address: str, key: bytes, *, connect_wait: float = CONNECT_WAIT_SECONDS) -> None:
        self._address = address
        self._key = key
        self._connect_wait = connect_wait

    def run(self, request: ReportRequest, updates: Sequence[CostUpdate] = ()) -> ReportResult:
        with self._connect() as connection:
            try:
                connection.send((request, tuple(updates)))
                if not connection.poll(REPORT_TIMEOUT_SECONDS):
                    raise ReportsUnavailable(f"the report took more than {REPORT_TIMEOUT_SECONDS:.0f} s")
                answer = connection.recv()
            except (EOFError, OSError) as exc:
                # The engine died with the report (killed, or out of memory): it is being restarted.
                stopped = "the report engine stopped during the report; retry shortly"
                raise ReportsUnavailable(stopped) from exc
        outcome, value = answer
        if outcome == "result":
            assert isinstance(value, ReportResult)
            return value
        if outcome == "refused":
            assert isinstance(value, ClicktrailError)
            raise value
        raise ReportFailed(f"the report failed: {value}")

    def _connect(self) -> Connection:
        deadline = time.monotonic() + self._connect_wait
        while True:
            try:
                return Client(self._address, family="AF_UNIX", authkey=self._key)
            except (FileNotFoundError, ConnectionError, EOFError) as exc:
                # Not listening yet, or going down as we connected (refused, or reset in the handshake).
                if time.monotonic() >= deadline:
                    raise ReportsUnavailable("the report engine is not running; retry shortly") from exc
                time.sleep(0.1)
            except (AuthenticationError, OSError) as exc:
                raise ReportsUnavailable(f"the report engine could not be reached: {exc}") from exc


class ReportServer:
    """Answers RemoteReports on `address` with the engine `make_engine` builds at the first report
    (DuckDB is imported then: an idle server's engine process stays small)."""

    def __init__(self, address: str, key: bytes, make_engine: Callable[[], ReportEngine]) -> None:
        Path(address).unlink(missing_ok=True)  # left by an engine that was killed: bind would refuse it
        self._listener = Listener(address, family="AF_UNIX", authkey=key)
        self._make_engine = make_engine
        self._engine: ReportEngine | None = None
        self._engine_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(CONCURRENT_REPORTS)
        self._closed = threading.Event()

    def serve_until(self, stop: threading.Event, keep_going: Callable[[], bool]) -> None:
        """Answer reports until `stop` is set or `keep_going()` is false (checked every second)."""
        accepting = threading.Thread(target=self._accept_all, name="report connections", daemon=True)
        accepting.start()
        while not stop.wait(1.0) and keep_going():
            pass
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()  # accept() fails in its thread; the socket file is removed

    def _accept_all(self) -> None:
        while not self._closed.is_set():
            try:
                connection = self._listener.accept()
            except (AuthenticationError, EOFError, ConnectionError) as exc:
                log.warning("a connection to the report engine was refused: %s", exc)
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(connection,), name="report", daemon=True).start()

    def _answer(self, connection: Connection) -> None:
        with connection:
            try:
                request, updates = connection.recv()
            except (EOFError, OSError):
                return  # the worker gave up before asking
            with self._slots:
                answer = self._report(request, updates)
            with contextlib.suppress(OSError):  # the worker gave up waiting: nobody to tell
                connection.send(answer)

    def _report(self, request: ReportRequest, updates: Sequence[CostUpdate]) -> tuple[str, Any]:
        try:
            return "result", self._engine_now().run(request, updates)
        except ClicktrailError as refused:  # the request's own fault, said as the engine said it
            return "refused", refused
        except Exception as exc:
            log.exception("a report failed")
            return "failed", f"{type(exc).__name__}: {exc}"

    def _engine_now(self) -> ReportEngine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._make_engine()
            return self._engine


def address_in(directory: Path) -> str:
    """The engine's socket in serve's private directory for it."""
    return str(directory / "reports.sock")


def key_from_environment() -> bytes | None:
    key = os.environ.get(KEY_VARIABLE)
    return bytes.fromhex(key) if key else None
