"""Running the server: one process, or a supervisor with several workers, and beside them the
companion processes that must not run in a worker (the report feed, the report engine).

Each worker listens on a socket of its own, all of them in one SO_REUSEPORT group, so the kernel
spreads new connections across the workers. With one shared socket, whichever worker woke first
accepted a whole burst: a load generator's 128 connections all went to one worker while the other
idled (1 run in 7 under `wrk -c128`, half the rate; a throwaway harness, BENCHMARKS.md "Workers, and
how connections reach them"). The supervisor keeps no copy of any worker's
socket: a worker that dies takes its socket with it, so the kernel stops routing connections to it,
and on SIGTERM each worker closes its own when it stops accepting, so the port is refused at once
and a load balancer moves on, while requests already read are drained.
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from clicktrail.reports import remote
from clicktrail.web.protocol import EdgeProtocol

log = logging.getLogger(__name__)

FIRST_RESTART_DELAY = 1.0
LAST_RESTART_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a companion that ran this long before dying is restarted after the first delay


class _WorkerSockets:
    """Listening sockets for one address, a new one for each worker, in one SO_REUSEPORT group."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        # A plain bind first: it fails if anything holds the port, another clicktrail's reuse-port
        # group included, which would otherwise let a second server silently share the traffic.
        with socket.socket(self._family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((config.host, config.port))
            except OSError as exc:
                log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
                raise SystemExit(STARTUP_FAILURE) from exc
            self.address = probe.getsockname()[:2]  # the port the kernel chose, when asked for 0
        self._handed_out: list[socket.socket] = []

    def new(self) -> socket.socket:
        sock = socket.socket(self._family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(self.address)
        sock.set_inheritable(True)
        self._handed_out.append(sock)
        return sock

    def close_handed_out(self) -> None:
        """Close the supervisor's copies once the workers are started: the spawned worker inherited
        its own descriptor, and a copy left here would take connections that no process reads."""
        while self._handed_out:
            self._handed_out.pop().close()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, with a socket of its own for every worker it starts."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._listeners = _WorkerSockets(config)
        super().__init__(config, sockets=[])
        log.info(
            "clicktrail listening on http://%s:%d with %d workers", *self._listeners.address, config.workers
        )

    @property  # uvicorn reads `self.sockets` once for each worker it starts
    def sockets(self) -> list[socket.socket]:
        return [self._listeners.new()]

    @sockets.setter
    def sockets(self, _given: list[socket.socket]) -> None:
        """uvicorn's __init__ stores the shared list it was given; there is none here."""

    # The three places uvicorn starts workers; each closes the copies it handed out, even if it fails.
    def init_processes(self) -> None:
        try:
            super().init_processes()
        finally:
            self._listeners.close_handed_out()

    def restart_all(self) -> None:
        try:
            super().restart_all()
        finally:
            self._listeners.close_handed_out()

    def keep_subprocess_alive(self) -> None:
        try:
            super().keep_subprocess_alive()
        finally:
            self._listeners.close_handed_out()


class Companion:
    """A process that runs beside the workers for as long as the server does: started before them,
    restarted when it dies (killed, or failed), stopped after they have drained.

    A companion that exits with status 0 was asked to stop (SIGTERM or SIGINT sent to the whole
    process group, as systemd or Ctrl-C do) and is not restarted. Restarts wait 1 s, doubling up to
    30 s while it keeps dying, so a companion that cannot start does not spin."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        stop_timeout: float = 10.0,
        cpu_share: float | None = None,
    ) -> None:
        """`cpu_share`: hold the process to that share of one core's time (CpuShare), whatever
        it runs; None: as much as the scheduler gives it."""
        self.name = name
        self._command = list(command)
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None
        self._share = CpuShare(self, cpu_share) if cpu_share is not None else None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._process is None else self._process.pid

    def running(self) -> "subprocess.Popen[bytes] | None":
        """The process, while it runs and is not being stopped."""
        with self._lock:
            if self._stopping.is_set() or self._process is None or self._process.returncode is not None:
                return None
            return self._process

    def start(self) -> None:
        with self._lock:
            self._process = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name=f"{self.name} watcher", daemon=True)
        self._watcher.start()
        if self._share is not None:
            self._share.start()

    def _watch(self) -> None:
        delay = FIRST_RESTART_DELAY
        while True:
            with self._lock:
                process = self._process
            assert process is not None
            started = time.monotonic()
            status = process.wait()
            if self._stopping.is_set():
                return
            if status == 0:
                log.info("the %s process stopped (it was asked to); not restarting it", self.name)
                return
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = FIRST_RESTART_DELAY
            log.warning(
                "the %s process exited with status %d; restarting it in %.0f s", self.name, status, delay
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, LAST_RESTART_DELAY)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()

    def _spawn(self) -> "subprocess.Popen[bytes]":
        # A held companion leads a process group of its own: if serve is killed while it is stopped
        # (SIGSTOP, CpuShare), its group is orphaned and the kernel sends it SIGHUP and SIGCONT, so it
        # ends instead of staying stopped (it could not look for its parent). It then misses the
        # SIGINT of a Ctrl-C to serve's group: serve's own stop sends it SIGTERM.
        own_group = 0 if self._share is not None else None
        return subprocess.Popen(self._command, process_group=own_group)  # noqa: S603 -- serve's own command

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the timeout."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if self._share is not None:
            self._share.stop()  # never leaves it stopped: it could not act on the SIGTERM
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "the %s process did not stop within %.0f s; killing it", self.name, self._stop_timeout
                )
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join()


class CpuShare:
    """Holds a companion to `share` of one core's time, whatever it runs: every few milliseconds it
    reads the process's CPU clock (every thread's time, in nanoseconds), and once the process has
    used more than its share since it last rested, stops it (SIGSTOP) for as long as that takes
    to even out, then lets it go on (SIGCONT).

    The report feed's own rests (reports/feed.py, WorkShare) could not reach inside a DuckDB
    statement: turning a catch-up window of 300,000 clicks into Parquet took 0.5 s of a core in one
    step. Held from here, the feed's CPU is at its share to within a few milliseconds (a spinning
    process held at 0.25 used 0.246-0.252 of a core, its CPU clock read over 1 s three times;
    tests/test_cpu_share.py holds it between 0.05 and 0.35), and in the paced PostgreSQL click runs
    the feed worked in after its first catch-up the p99 was 8.3-10.1 ms against 10.7-13.2 without
    it (scripts/feed_interference.py, two pairs, with a switch made for the comparison and not kept;
    BENCHMARKS.md, "Session of 2026-12-07 (22:56 UTC)"). The first catch-up's stall (65-100 ms,
    PostgreSQL's commits waiting on the disk) is the same either way.

    Linux only (another process's CPU clock); elsewhere companions are not held."""

    TICK_SECONDS = 0.005
    """How often a working process's clock is read: it runs at most about this long over its share."""
    IDLE_TICK_SECONDS = 0.02
    """How often an idle one's is (the feed sleeps between runs: 10 s by default)..."""
    IDLE_AFTER_SECONDS = 0.05
    """...once it has used no CPU for this long (not after one wait for the database)."""

    def __init__(self, companion: "Companion", share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError("a share of the time is more than 0 and at most 1")
        self._companion = companion
        self._share = share
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def possible() -> bool:
        """Whether this system lets serve read a companion's CPU clock."""
        return sys.platform.startswith("linux")

    def start(self) -> None:
        if self._share < 1:
            self._thread = threading.Thread(
                target=self._hold, name=f"{self._companion.name} CPU share", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _hold(self) -> None:
        while not self._stop.is_set():
            try:
                self._hold_until_stopped()
            except Exception:  # the feed must not run unheld for the rest of the server's life
                log.exception(
                    "holding the %s process to its CPU share failed; starting again", self._companion.name
                )
                self._stop.wait(1.0)

    def _hold_until_stopped(self) -> None:
        watched: subprocess.Popen[bytes] | None = None
        credit = used = seen = busy_at = 0.0
        tick = self.IDLE_TICK_SECONDS
        unreadable = False
        while not self._stop.wait(tick):
            process = self._companion.running()
            if process is None:
                watched, tick = None, self.IDLE_TICK_SECONDS
                continue
            try:
                now, spent = time.monotonic(), time.clock_gettime(cpu_clock(process.pid))
            except OSError as exc:  # gone since (the watcher restarts it, and this follows), or no clock
                if not unreadable and process.poll() is None:
                    log.warning(
                        "cannot read the %s process's CPU clock (%s): not held", self._companion.name, exc
                    )
                    unreadable = True
                watched, tick = None, self.IDLE_TICK_SECONDS
                continue
            if watched is not process:  # a new process: its time so far is not held against it
                watched, credit, used, seen, busy_at = process, 0.0, spent, now, now
                continue
            credit = min(credit + self._share * (now - seen) - (spent - used), self.TICK_SECONDS)
            if spent > used:
                busy_at = now
            tick = self.TICK_SECONDS if now - busy_at < self.IDLE_AFTER_SECONDS else self.IDLE_TICK_SECONDS
            used, seen = spent, now
            if credit < 0:
                self._pause(process, -credit / self._share)
                credit, seen = 0.0, time.monotonic()

    def _pause(self, process: "subprocess.Popen[bytes]", seconds: float) -> None:
        """Stop `process` for `seconds` (less if asked to stop meanwhile), and always let it go on.
        Popen's send_signal: a process already waited for is not signalled (nor its pid, reused)."""
        process.send_signal(signal.SIGSTOP)
        try:
            self._stop.wait(seconds)
        finally:
            process.send_signal(signal.SIGCONT)


def cpu_clock(pid: int) -> int:
    """The clock id of `pid`'s CPU time, all its threads (what glibc's clock_getcpuclockid makes)."""
    return ((~pid) << 3) | 2


SHARED_MEMORY_VARIABLE = "CLICKTRAIL_SHARED_MEMORY_DIR"
_SHARED_PREFIX = "clicktrail-shared-"
_REPORTS_PREFIX = "clicktrail-reports-"


@contextlib.contextmanager
def _shared_memory() -> Iterator[Path]:
    """A directory on tmpfs for the tables the workers share (storage/shared_table.py), named for
    this process and removed when it returns. One left by a server that was killed is removed at
    the next start, once its process is gone."""
    tmpfs = "/dev/shm"  # noqa: S108 -- mkdtemp makes a private directory with a random name
    parent = Path(tmpfs) if os.access(tmpfs, os.W_OK) else None
    with _named_in_environment(SHARED_MEMORY_VARIABLE, _SHARED_PREFIX, parent) as directory:
        yield directory


@contextlib.contextmanager
def report_engine_address() -> Iterator[str]:
    """A private directory for the report engine's socket (reports/remote.py), its address in the
    environment the engine and the workers inherit; removed on return."""
    with _named_in_environment(
        remote.ADDRESS_VARIABLE, _REPORTS_PREFIX, naming=remote.address_in
    ) as directory:
        yield remote.address_in(directory)


@contextlib.contextmanager
def _named_in_environment(
    variable: str, prefix: str, parent: Path | None = None, naming: Callable[[Path], str] = str
) -> Iterator[Path]:
    """A private directory (_private_directory), `naming(directory)` in `variable` for the processes
    started meanwhile (they inherit it), both removed on return."""
    directory = _private_directory(prefix, parent)
    previous = os.environ.get(variable)
    os.environ[variable] = naming(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
        shutil.rmtree(directory, ignore_errors=True)


def _private_directory(prefix: str, parent: Path | None = None) -> Path:
    """A new directory only this user can enter (mkdtemp: mode 0700, a random name), named for this
    process; those a killed server left, their process gone, are removed first."""
    parent = parent or Path(tempfile.gettempdir())
    for stale in parent.glob(f"{prefix}*"):
        with contextlib.suppress(ValueError, OSError):
            owner = int(stale.name.removeprefix(prefix).split("-")[0])
            mine = not stale.is_symlink() and stale.stat().st_uid == os.getuid()
            if mine and not _alive(owner):
                shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def run(app: str, *, workers: int, companions: Sequence[Companion] = (), **options: Any) -> None:
    """Serve the `app` factory's import string with `workers` processes, with the companions running
    beside them; returns after a clean stop."""
    # uvicorn kills a worker that has not answered its health check within 5 s, which a worker still
    # importing its modules on a busy machine can miss (seen under load: killed before it served).
    config = uvicorn.Config(
        app, factory=True, workers=workers, timeout_worker_healthcheck=30, http=EdgeProtocol, **options
    )
    for companion in companions:
        companion.start()
    try:
        if workers > 1:
            with _shared_memory():
                _Supervisor(config).run()
            return
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise SystemExit(3)  # uvicorn's own code for a server that failed to start
    finally:
        for companion in companions:
            companion.stop()
