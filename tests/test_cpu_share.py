"""A companion held to a share of one core (web/supervisor.py, CpuShare) uses about that share
whatever it runs, is followed across restarts, and is never left stopped: asked to stop, it stops."""

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktrail.web.supervisor import Companion, CpuShare, cpu_clock

pytestmark = pytest.mark.skipif(
    not CpuShare.possible(), reason="CpuShare reads another process's CPU clock: Linux"
)

SPIN = [sys.executable, "-c", "while True: pass"]  # one core's worth of work, in one statement


def _cpu_seconds(pid: int) -> float:
    return time.clock_gettime(cpu_clock(pid))


def _cores_used(pid: int, seconds: float) -> float:
    before, started = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(pid) - before) / (time.monotonic() - started)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _pid_when_started(companion: Companion, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 10
    while (pid := companion.pid) is None or pid == other_than:
        assert time.monotonic() < deadline, "the companion did not start"
        time.sleep(0.05)
    return pid


@pytest.fixture
def held() -> Iterator[Companion]:
    companion = Companion("spinner", SPIN, stop_timeout=5, cpu_share=0.25)
    companion.start()
    yield companion
    companion.stop()


def test_a_process_held_to_a_quarter_of_a_core_uses_about_a_quarter(held: Companion) -> None:
    pid = _pid_when_started(held)
    time.sleep(0.3)  # past its start-up

    used = _cores_used(pid, 2.0)

    # It would take a whole core; a loaded machine may give it less than its share, never more.
    assert 0.05 < used < 0.35, f"{used:.2f} cores"


def test_a_process_without_a_share_takes_what_the_scheduler_gives_it() -> None:
    free = Companion("spinner", SPIN, stop_timeout=5)
    free.start()
    try:
        pid = _pid_when_started(free)
        assert _cores_used(pid, 1.0) > 0.4
    finally:
        free.stop()


def test_a_restarted_process_is_held_too(held: Companion) -> None:
    first = _pid_when_started(held)
    os.kill(first, signal.SIGKILL)
    second = _pid_when_started(held, other_than=first)  # restarted after 1 s
    time.sleep(0.3)

    assert 0.05 < _cores_used(second, 1.5) < 0.35


def test_asked_to_stop_a_held_process_is_let_go_on_and_stops(held: Companion) -> None:
    pid = _pid_when_started(held)
    time.sleep(0.5)  # it has been stopped and let go on many times by now

    started = time.monotonic()
    held.stop()

    assert time.monotonic() - started < 3  # SIGTERM reached it: not the 5-s wait, then SIGKILL
    assert not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"


def test_a_share_is_more_than_nothing_and_at_most_a_whole_core() -> None:
    for share in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="share"):
            Companion("spinner", SPIN, cpu_share=share)
