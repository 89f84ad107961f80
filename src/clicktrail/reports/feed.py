"""The feed from the row store (SQLite / PostgreSQL) to the analytics segments.

Every few seconds, one process (a file lock decides which; `clicktrail serve` starts `clicktrail
feed` beside its workers, so no worker ever loads DuckDB to feed) copies the clicks and the conversion
changes of the window [cursor, now - lag) into a new segment. The lag leaves time for commits in
flight: a click's row is committed within its group commit, long before the lag (15 s by default)
runs out, so nothing committed late can fall behind a window already written. A backlog (after a
burst of traffic, or a first feed over months of data) is cut into windows of about PIECE_ROWS rows,
a week at most, and the feed works at most a share of the time (WorkShare): it takes its CPU from
the redirects in slices, not in bursts.

Rows travel as CSV, read by DuckDB with the column types given; an empty value is NULL, which is
also how the row store keeps empty visitor values. PostgreSQL writes the CSV itself (COPY … TO
STDOUT); from SQLite the rows go through the csv module (C, an order of magnitude faster than
building JSON per row): storage/event_store.py, `write_csv`.
"""

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Connection, Select

from clicktrail.ids import click_id_floor, click_time
from clicktrail.reports.columns import CLICK_COLUMNS, CONVERSION_COLUMNS, LANDER_CLICK_COLUMNS, struct_literal
from clicktrail.reports.segments import CLICKS, CONVERSIONS, KINDS, LANDER_CLICKS, Segment, SegmentStore
from clicktrail.storage import event_store, routing_store
from clicktrail.storage.database import Database
from clicktrail.types import ClickId, Clock

log = logging.getLogger(__name__)

MAX_WINDOW = timedelta(days=7)
PIECE_ROWS = 100_000
"""About how many rows one window (one segment) holds when there is more to feed: a catch-up after a
burst of traffic is written in pieces, each DuckDB step a short one, with rests between them."""
MIN_PIECE = timedelta(seconds=10)
"""No window shorter, but the last (up to now - lag): a feed every 10 s writes one segment a run."""
PIECE_GROWTH = 8
"""How much longer the next window may be than the last (sparse data: a first feed over months)."""
KEEP_UNCOMPACTED = 8
COMPACT_SPAN_MS = 6 * 3600 * 1000
MERGE_RUN = 8
"""How many neighbouring segments of one size class compaction merges into one of the next class."""


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms_of(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


def _size_class(segment: Segment) -> int:
    """0 for a feed window (under 80 s), 1 for under 640 s, and so on: each MERGE_RUN times the last."""
    size, span = 0, segment.end_ms - segment.start_ms
    while span >= _ms_of(MIN_PIECE) * MERGE_RUN ** (size + 1):
        size += 1
    return size


class WorkShare:
    """Holds the feed's work to a share of the time: `rest()`, called every few hundred rows and after
    each DuckDB step, sleeps after every `slice_seconds` of work long enough that the work is at most
    `share` of the time (1: never rests).

    The feed takes its CPU from the redirects however low its priority (the two vCPUs of these
    machines are not independent: a spinning process at SCHED_IDLE doubled the paced clicks' p99),
    and what hurts most is a burst: a catch-up of 400,000 clicks held a core for 1.5-3.6 s while the
    workers' queues grew, and with the report feed running, paced PostgreSQL clicks had a p99 of 19-32
    ms against 11-13 without it (`scripts/feed_interference.py`; BENCHMARKS.md, "Session of
    2026-12-07 (05:50 UTC)"). In slices of a
    few milliseconds the queues do not grow; the feed takes longer, and reports are a few seconds
    later under load."""

    def __init__(
        self,
        share: float,
        *,
        slice_seconds: float = 0.02,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("a share of the time is more than 0 and at most 1")
        self._rest_per_work = 1 / share - 1
        self._slice = slice_seconds
        self._sleep = sleep
        self._clock = clock
        self._working_since = clock()

    def rest(self) -> None:
        if not self._rest_per_work:
            return
        worked = self._clock() - self._working_since
        if worked >= self._slice:
            self._sleep(worked * self._rest_per_work)
            self._working_since = self._clock()

    def start(self) -> None:
        """Work begins now (the time since the last rest, between runs, was not work)."""
        self._working_since = self._clock()


class AnalyticsFeed:
    def __init__(
        self,
        database: Database,
        store: SegmentStore,
        *,
        lag: timedelta,
        share: WorkShare | None = None,
        piece_rows: int = PIECE_ROWS,
    ) -> None:
        """`share`: how the feed spreads its work (`clicktrail feed` gives it a share of the time;
        a one-off feed, unpaced, runs at full speed)."""
        self._db = database
        self._store = store
        self._lag = lag
        self._share = share or WorkShare(1.0)
        self._piece_rows = piece_rows
        self._duck: duckdb.DuckDBPyConnection

    def run_once(self, now: datetime) -> int:
        """Feed every full window up to now - lag; returns the rows written (0 if another process is
        feeding)."""
        with self._store.writer_lock() as mine:
            if not mine:
                return 0
            for kind in KINDS:
                self._store.remove_unfinished(kind)  # a feed killed mid-window (serve waits 10 s)
            self._duck = duckdb.connect(config={"threads": 1})
            self._share.start()
            try:
                written = self._feed_clicks(now) + self._feed_conversions(now) + self._feed_lander_clicks(now)
                for kind in KINDS:
                    self._compact(kind)
                self.collect()
            finally:
                self._duck.close()
            return written

    def run_until(
        self, stop: threading.Event, *, interval: float, clock: Clock, keep_going: Callable[[], bool]
    ) -> None:
        """Feed now and then every `interval` seconds until `stop` is set or `keep_going()` is false
        (checked every second); a failed run is logged and tried again at the next interval."""
        while not stop.is_set() and keep_going():
            try:
                self.run_once(clock())
            except Exception:
                log.exception("the report feed failed; it will try again")
            next_run = time.monotonic() + interval
            while (left := next_run - time.monotonic()) > 0:
                if stop.wait(min(left, 1.0)) or not keep_going():
                    return

    def _next_span(self, span_ms: int, rows: int) -> int:
        """The next window's length: as long as `piece_rows` rows took at the last window's rate,
        between MIN_PIECE (or at most PIECE_GROWTH times the last) and MAX_WINDOW."""
        wanted = span_ms * min(PIECE_GROWTH, self._piece_rows / max(rows, 1))
        return int(min(_ms_of(MAX_WINDOW), max(_ms_of(MIN_PIECE), wanted)))

    def _feed_clicks(self, now: datetime) -> int:
        def first_ms(connection: Connection) -> int | None:
            first = event_store.first_click_id(connection)
            return None if first is None else _ms(click_time(ClickId(first)))

        def rows(low: int, high: int) -> Select[Any]:
            # Click IDs sort by time: a time window of clicks is a primary-key range.
            return event_store.clicks_between(click_id_floor(low), click_id_floor(high), list(CLICK_COLUMNS))

        return self._feed(CLICKS, now, first_ms, rows, CLICK_COLUMNS)

    def _feed_conversions(self, now: datetime) -> int:
        def first_ms(connection: Connection) -> int | None:
            first = event_store.first_conversion_change(connection)
            return None if first is None else _ms(first)

        def rows(low: int, high: int) -> Select[Any]:
            return event_store.conversions_changed_between(_utc(low), _utc(high), list(CONVERSION_COLUMNS))

        return self._feed(CONVERSIONS, now, first_ms, rows, CONVERSION_COLUMNS)

    def _feed_lander_clicks(self, now: datetime) -> int:
        def first_ms(connection: Connection) -> int | None:
            first = routing_store.first_lander_click(connection)
            return None if first is None else _ms(first)

        def rows(low: int, high: int) -> Select[Any]:
            return routing_store.lander_clicks_between(_utc(low), _utc(high), list(LANDER_CLICK_COLUMNS))

        return self._feed(LANDER_CLICKS, now, first_ms, rows, LANDER_CLICK_COLUMNS)

    def _feed(
        self,
        kind: str,
        now: datetime,
        first_ms: Callable[[Connection], int | None],
        rows: Callable[[int, int], Select[Any]],
        columns: dict[str, str],
    ) -> int:
        """Write every settled window of one kind after its cursor (or after its first row ever)."""
        start_ms = self._store.cursor(kind)
        if start_ms is None:
            with self._db.begin() as connection:
                start_ms = first_ms(connection)
            if start_ms is None:
                return 0
        written, low, span_ms, end_ms = 0, start_ms, _ms_of(MIN_PIECE), _ms(now - self._lag)
        while low < end_ms:
            # A remainder shorter than MIN_PIECE joins this window rather than make one of its own.
            high = end_ms if end_ms - (low + span_ms) < _ms_of(MIN_PIECE) else low + span_ms
            with self._db.begin() as connection:
                count = self._write(kind, low, high, connection, rows(low, high), columns)
            written += count
            span_ms = self._next_span(high - low, count)
            low = high
        return written

    def _write(
        self,
        kind: str,
        low: int,
        high: int,
        connection: Connection,
        rows: Select[Any],
        columns: dict[str, str],
    ) -> int:
        folder = self._store.folder(kind)
        with tempfile.NamedTemporaryFile("wb", dir=folder, suffix=".csv", delete=False) as staging:
            # The file itself, not the temporary file's wrapper: its `write` is a Python function
            # around the file's, called once a row.
            count = event_store.write_csv(connection, rows, staging.file, every=self._share.rest)
        staging_path = Path(staging.name)
        try:
            final = self._store.path_for(kind, low, high)
            temporary = final.with_suffix(".parquet.tmp")
            self._duck.execute(
                # Our own paths and column names only: no outside text reaches this SQL.
                f"COPY (SELECT * FROM read_csv('{staging_path}', header=false, auto_detect=false, "  # noqa: S608
                # LF, not guessed: a guess from a quoted line break in a value failed the whole window.
                f"delim=',', quote='\"', escape='\"', new_line='\\n', columns={struct_literal(columns)})) "
                f"TO '{temporary}' (FORMAT parquet, COMPRESSION zstd)"
            )
            self._share.rest()
            self._store.publish(temporary, final)
        finally:
            staging_path.unlink(missing_ok=True)
        return count

    def _compact(self, kind: str) -> None:
        """Merge runs of MERGE_RUN neighbouring segments of one size class (each class eight times
        the span of the one below, from the feed's 10-s windows) into one of the next class, and a
        run that cannot grow without passing six hours into one segment: a report reads tens of
        files, not thousands, a row is rewritten about four times on its way into a segment of
        hours, and each merge is a short DuckDB step. Segments of six hours or more, and the newest
        KEEP_UNCOMPACTED, are never rewritten.

        Until 2026-12-07 every run of segments under six hours was merged once there were more
        than 48: the segment compacted last time with the 40 or so since, so each compaction
        rewrote everything since the last six-hour boundary (a row some 26 times at a feed every
        10 s, and hours of clicks in one step)."""
        run: list[Segment] = []
        for segment in self._store.live(kind)[:-KEEP_UNCOMPACTED]:
            if run and segment.end_ms - run[0].start_ms > COMPACT_SPAN_MS:
                self._merge(kind, run)  # as long as it can grow
                run = []
            elif run and _size_class(segment) != _size_class(run[0]):
                run = []
            if segment.end_ms - segment.start_ms < COMPACT_SPAN_MS:
                run.append(segment)
            if len(run) == MERGE_RUN:
                self._merge(kind, run)
                run = []
        self._store.remove_covered(kind)

    def collect(self) -> None:
        """Delete what compaction replaced, once readers are done with it (called every run)."""
        for kind in KINDS:
            self._store.remove_covered(kind)

    def _merge(self, kind: str, group: list[Segment]) -> None:
        if len(group) < 2:
            return
        final = self._store.path_for(kind, group[0].start_ms, group[-1].end_ms)
        temporary = final.with_suffix(".parquet.tmp")
        files = ", ".join(f"'{segment.path}'" for segment in group)
        self._duck.execute(
            f"COPY (SELECT * FROM read_parquet([{files}], union_by_name=true)) "  # noqa: S608 -- our paths
            f"TO '{temporary}' (FORMAT parquet, COMPRESSION zstd)"
        )
        self._share.rest()
        self._store.publish(temporary, final)
        log.info("compacted %d %s segments into %s", len(group), kind, final.name)
