"""The benchmark's paced runs: a target that is a floor is measured at or above it, never below.

`make bench` prints the p99 of paced postbacks as the figure against issue 8's "at least 3,000/s
with p99 under 20 ms"; a series that reached 93% of 3,000/s answered a different question. These
drive the calibration with a stand-in for wrk whose latency grows with the offered rate, as a
server's does, so the pauses it picks and the series it keeps can be checked without a server.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run as bench  # the benchmark script (bench/ is not a package)

CONNECTIONS = 32


def _args() -> argparse.Namespace:
    return argparse.Namespace(quick=False, runs=3, short=5)


class _Server:
    """Answers in `base_ms` plus a queueing delay that shrinks as the pauses between requests grow
    (less queueing), as a server's latency falls with the rate offered to it."""

    def __init__(self, base_ms: float, queueing_ms: float) -> None:
        self.base_ms, self.queueing_ms = base_ms, queueing_ms
        self.pauses: list[float] = []

    def run(self, delay_ms: float, _seconds: float) -> bench.Run:
        self.pauses.append(delay_ms)
        latency = self.base_ms + self.queueing_ms / (1 + delay_ms)
        rate = CONNECTIONS / ((delay_ms + latency) / 1000)
        return bench.Run(rate, latency, latency * 3, latency * 4, {})


def test_a_floor_target_is_measured_at_or_above_it() -> None:
    server = _Server(base_ms=2.0, queueing_ms=20.0)
    series = bench.paced_series(server.run, 3_000, CONNECTIONS, _args(), at_least=True)
    assert 3_000 <= series.median("rate") <= 3_300


class _SlowFirstSeries(_Server):
    """During the first series after the probe (a noisy moment) it reaches `first_rate`, whatever
    the pause."""

    def __init__(self, first_rate: float) -> None:
        super().__init__(base_ms=2.0, queueing_ms=20.0)
        self.first_rate = first_rate

    def run(self, delay_ms: float, seconds: float) -> bench.Run:
        answered = super().run(delay_ms, seconds)
        if 2 <= len(self.pauses) <= 1 + _args().runs:
            answered.rate = self.first_rate
        return answered


def test_a_series_just_under_a_floor_target_is_run_again() -> None:
    # 94% of the target was close enough before (within 10%); under a floor it is not.
    server = _SlowFirstSeries(first_rate=0.94 * 3_000)
    series = bench.paced_series(server.run, 3_000, CONNECTIONS, _args(), at_least=True)
    assert len(server.pauses) > 1 + _args().runs, "the series at 94% of the target was kept"
    assert 3_000 <= series.median("rate") <= 3_300


def test_a_plain_target_still_takes_a_series_a_little_under_it() -> None:
    server = _SlowFirstSeries(first_rate=0.94 * 2_000)
    series = bench.paced_series(server.run, 2_000, CONNECTIONS, _args())
    assert len(server.pauses) == 1 + _args().runs
    assert 1_800 <= series.median("rate") < 2_000


def test_a_plain_target_keeps_its_band_on_both_sides() -> None:
    server = _Server(base_ms=2.0, queueing_ms=20.0)
    series = bench.paced_series(server.run, 2_000, CONNECTIONS, _args())
    assert 1_800 <= series.median("rate") <= 2_200


class _NeverThere(_Server):
    """Reaches 90% of what the pause asks for, whatever the pause: no series lands at the target."""

    def run(self, delay_ms: float, seconds: float) -> bench.Run:
        answered = super().run(delay_ms, seconds)
        answered.rate = min(answered.rate, 0.9 * 3_000)
        return answered


def test_a_series_kept_outside_its_band_says_so() -> None:
    series = bench.paced_series(_NeverThere(2.0, 20.0).run, 3_000, CONNECTIONS, _args(), at_least=True)
    assert series.median("rate") == 0.9 * 3_000
    assert "90% of 3,000/s" in series.missed


def test_a_series_in_its_band_has_nothing_to_say() -> None:
    series = bench.paced_series(_Server(2.0, 20.0).run, 3_000, CONNECTIONS, _args(), at_least=True)
    assert series.missed == ""


class _Shallow(_Server):
    """The first series after the probe comes out barely faster than the probe (a noisy moment),
    so the two give a shallow slope: the cycle hardly seems to move with the pause."""

    def run(self, delay_ms: float, seconds: float) -> bench.Run:
        answered = super().run(delay_ms, seconds)
        if len(self.pauses) == 1:
            self.probe_rate = answered.rate
        elif len(self.pauses) <= 1 + _args().runs:
            answered.rate = self.probe_rate * 1.01
        return answered


def test_a_shallow_slope_moves_the_pause_by_at_most_half_or_double() -> None:
    server = _Shallow(2.0, 20.0)
    bench.paced_series(server.run, 3_000, CONNECTIONS, _args(), at_least=True)
    first, second = server.pauses[1], server.pauses[1 + _args().runs]
    assert first / 2 <= second <= first * 2
