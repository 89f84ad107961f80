"""The report engine in a process of its own, and the workers' way to it.

A worker that answered reports itself kept DuckDB's memory for good: after a few reports over 10
million clicks each worker of `clicktrail serve` peaked at 452 MB (130 MB before, measured by
scripts/server_memory.py), against issue 8's 150 MB a worker, and every worker paid it again with
its own DuckDB, its own `report_memory_limit` and its own copy of the segments' metadata.
`clicktrail serve` now starts one report engine process beside the workers (a `Companion`, as the
report feed is); a worker sends it the parsed request and waits for the result (`RemoteReports`).
The workers never import DuckDB, one memory limit covers every report of the server, and the engine
runs at the report feed's lower priority, so a long report steps back for the redirects.

The transport is a Unix socket in a directory only serve's user can enter, and the engine also
refuses a peer of another user (SO_PEERCRED). One report per connection: a length-prefixed pickle of
the request and its cost updates, then one of the answer. Every wait has a deadline (socket
timeouts), so a stuck or stopped engine is a 503 to retry, never a worker thread waiting forever.
"""

import contextlib
import functools
import logging
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clicktrail.errors import ClicktrailError, StorageError
from clicktrail.reports.costs import CostUpdate
from clicktrail.reports.request import ReportRequest
from clicktrail.reports.result import AbandonableEngine, ReportAbandoned, ReportResult

log = logging.getLogger(__name__)

ADDRESS_VARIABLE = "CLICKTRAIL_REPORTS_ADDRESS"
"""Set by `clicktrail serve` for its workers and its report engine; not a setting a user gives."""

CONNECT_WAIT_SECONDS = 15.0
"""How long a report waits for the engine to listen: a restarted engine is back within a few
seconds (the supervisor waits 1 s, then Python starts), and a report asked meanwhile should be
answered late rather than refused."""

CONCURRENT_REPORTS = 4
"""Reports run at once in the engine; more wait for a slot (and are dropped if their worker stops
waiting meanwhile). DuckDB spreads each over its threads."""

DRAIN_SECONDS = 8.0
"""Asked to stop, the engine finishes the reports in hand for up to this long (serve kills a companion
after 10 s): systemd's stop and Ctrl-C signal every process of the server at once, and the workers
drain their requests, reports included, for longer than an instant."""

_ATTEMPTS = 3
_RETRY_PAUSE_SECONDS = 0.2
"""Long enough for a dying engine to be gone, so the next attempt waits for the new one."""
_LENGTH = struct.Struct("!I")
_MAX_REQUEST_BYTES = 1 << 20
_MAX_ANSWER_BYTES = 1 << 30
_REQUEST_READ_SECONDS = 10.0


class ReportsUnavailable(StorageError):
    """The report engine process cannot be reached (restarting, stopped, or stuck); retry (503)."""

    code = "reports_unavailable"


class ReportFailed(ClicktrailError):
    """The engine failed on a report for a reason of its own (in its log); the server's fault (500)."""


def _send(connection: socket.socket, message: object, limit: int) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > limit:
        raise ValueError(f"a message of {len(data):,} bytes (at most {limit:,})")
    connection.sendall(_LENGTH.pack(len(data)) + data)


def _receive(connection: socket.socket, limit: int) -> Any:
    (length,) = _LENGTH.unpack(_exactly(connection, _LENGTH.size))
    if length > limit:
        raise ValueError(f"a message of {length:,} bytes (at most {limit:,})")
    return pickle.loads(_exactly(connection, length))  # noqa: S301 -- a peer of our own user only


def _exactly(connection: socket.socket, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = connection.recv(min(missing, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


class RemoteReports:
    """ReportEngine, answered by the report engine process at `address`; a report not answered
    within `timeout` seconds is given up (the engine stuck, or the report absurd)."""

    def __init__(self, address: str, timeout: float, *, connect_wait: float = CONNECT_WAIT_SECONDS) -> None:
        self._address = address
        self._timeout = timeout
        self._connect_wait = connect_wait

    def run(self, request: ReportRequest, updates: Sequence[CostUpdate] = ()) -> ReportResult:
        for attempt in range(_ATTEMPTS):
            try:
                outcome, value = self._ask(request, updates)
                break
            except (EOFError, OSError) as exc:
                # The engine went down with the report (killed, out of memory), or was dying as we
                # connected: a killed process's socket takes connections until its last thread is
                # gone. A report only reads, so it is asked again, of the engine serve starts again.
                if attempt == _ATTEMPTS - 1:
                    stopped = "the report engine stopped during the report; retry shortly"
                    raise ReportsUnavailable(stopped) from exc
                time.sleep(_RETRY_PAUSE_SECONDS)
        if outcome == "result" and isinstance(value, ReportResult):
            return value
        if outcome == "refused" and isinstance(value, ClicktrailError):
            raise value
        raise ReportFailed("the report failed; the report engine's log says why")

    def _ask(self, request: ReportRequest, updates: Sequence[CostUpdate]) -> tuple[str, Any]:
        with self._connect() as connection:
            try:
                connection.settimeout(self._timeout)
                _send(connection, (request, tuple(updates)), _MAX_REQUEST_BYTES)
                answer: tuple[str, Any] = _receive(connection, _MAX_ANSWER_BYTES)
                return answer
            except TimeoutError as exc:
                raise ReportsUnavailable(
                    f"the report engine did not answer within {self._timeout:.0f} s; try a shorter period"
                    " or fewer dimensions, or retry shortly"
                ) from exc
            except (EOFError, OSError):
                raise
            except Exception as exc:  # an answer that does not unpickle: said, not a traceback
                log.exception("the report engine's answer could not be read")
                raise ReportFailed("the report failed; the server's log says why") from exc

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + self._connect_wait
        while True:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.settimeout(max(deadline - time.monotonic(), 0.1))
                connection.connect(self._address)
                return connection
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                # Not listening yet (starting, or being restarted): wait for it a little.
                connection.close()
                if time.monotonic() >= deadline:
                    raise ReportsUnavailable("the report engine is not running; retry shortly") from exc
                time.sleep(0.1)
            except OSError as exc:
                connection.close()
                raise ReportsUnavailable(f"the report engine could not be reached: {exc}") from exc


class ReportServer:
    """Answers RemoteReports on `address` with the engine `make_engine` builds at the first report
    (DuckDB is imported then: an idle server's engine process stays small). A report whose worker
    stops waiting (its timeout, or the worker gone) is stopped, running or not yet started."""

    def __init__(
        self,
        address: str,
        make_engine: Callable[[], AbandonableEngine],
        *,
        concurrent: int = CONCURRENT_REPORTS,
    ) -> None:
        Path(address).unlink(missing_ok=True)  # left by an engine that was killed: bind would refuse it
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(address)
        self._listener.listen(64)
        self._listener.settimeout(0.5)  # accept() looks at `_closing` this often
        self._address = address
        self._make_engine = make_engine
        self._engine: AbandonableEngine | None = None
        self._engine_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrent)
        self._closing = threading.Event()
        self._answering = 0
        self._answering_changed = threading.Condition()

    def serve_until(self, stop: threading.Event, keep_going: Callable[[], bool]) -> None:
        """Answer reports until `stop` is set or `keep_going()` is false (checked every second), then
        finish those in hand (DRAIN_SECONDS at most). Raises if the accepting thread died, so the
        process exits with a failure and serve starts another."""
        accepting = threading.Thread(target=self._accept_all, name="report connections", daemon=True)
        accepting.start()
        while not stop.wait(1.0) and keep_going() and accepting.is_alive():
            pass
        self._closing.set()
        accepting.join()
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self._address)
        with self._answering_changed:
            self._answering_changed.wait_for(lambda: self._answering == 0, DRAIN_SECONDS)
        if not stop.is_set() and keep_going():
            raise RuntimeError("the report engine stopped accepting connections")

    def _accept_all(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # out of file descriptors, say: the next one may work
                log.warning("the report engine could not accept a connection: %s", exc)
                time.sleep(0.1)
                continue
            with self._answering_changed:
                self._answering += 1
            threading.Thread(target=self._answer, args=(connection,), name="report", daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with connection:
                if not _same_user(connection):
                    log.warning("a process of another user connected to the report engine: refused")
                    return
                connection.settimeout(_REQUEST_READ_SECONDS)
                try:
                    request, updates = _receive(connection, _MAX_REQUEST_BYTES)
                except Exception as exc:  # the worker gave up, or sent no report
                    log.warning("a report request could not be read: %s", exc)
                    return
                with self._slots:
                    # A report its worker gave up on (while it waited for a slot, or while it runs)
                    # would only make the next reports wait longer.
                    gone = functools.partial(_gone, connection)
                    answer = None if gone() else self._report(request, updates, gone)
                if answer is None:
                    log.info("a report was stopped: its worker stopped waiting for it")
                    return
                connection.settimeout(None)
                self._tell(connection, answer)
        finally:
            with self._answering_changed:
                self._answering -= 1
                self._answering_changed.notify_all()

    @staticmethod
    def _tell(connection: socket.socket, answer: tuple[str, Any]) -> None:
        try:
            _send(connection, answer, _MAX_ANSWER_BYTES)
        except OSError:
            pass  # the worker gave up waiting: nobody to tell
        except Exception:  # an answer that cannot be sent (too large, not picklable): say it failed
            log.exception("a report's answer could not be sent")
            with contextlib.suppress(OSError):
                _send(connection, ("failed", None), _MAX_ANSWER_BYTES)

    def _report(
        self, request: ReportRequest, updates: Sequence[CostUpdate], abandoned: Callable[[], bool]
    ) -> tuple[str, Any] | None:
        """The answer to send, or None for a report stopped because nobody waits for it."""
        try:
            return "result", self._engine_now().run(request, updates, abandoned=abandoned)
        except ReportAbandoned:
            return None
        except ClicktrailError as refused:  # the request's own fault, said as the engine said it
            return "refused", refused
        except Exception:
            log.exception("a report failed")
            return "failed", None

    def _engine_now(self) -> AbandonableEngine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._make_engine()
            return self._engine


def _gone(connection: socket.socket) -> bool:
    """The other side closed the connection (a look at it, not a wait)."""
    timeout = connection.gettimeout()
    connection.setblocking(False)  # with a timeout, recv would first wait up to it for data
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # open, and nothing sent: still waiting for its answer
    except OSError:
        return True
    finally:
        connection.settimeout(timeout)


def _same_user(connection: socket.socket) -> bool:
    """The peer runs as this process's user (Linux's SO_PEERCRED; elsewhere the directory's mode
    alone keeps others out)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    credentials = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return bool(uid == os.getuid())


def address_in(directory: Path) -> str:
    """The engine's socket in serve's private directory for it."""
    return str(directory / "reports.sock")
