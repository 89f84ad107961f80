"""The report feed copies the row store into the analytics segments value for value, on SQLite and on
PostgreSQL alike (PostgreSQL writes the copy itself, as CSV): text with commas, quotes and any
alphabet, empty visitor values, exact money, times to the microsecond. Line breaks too, though the
intake drops control characters (text.clean): a value holding one, with the line ends guessed,
failed its whole window (and the next, at every run)."""

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import pytest

from clicktrail.config import Settings
from clicktrail.ids import mint_conversion_id
from clicktrail.reports.feed import AnalyticsFeed, WorkShare
from clicktrail.reports.segments import CLICKS, CONVERSIONS, LANDER_CLICKS, Segment, SegmentStore
from clicktrail.storage import event_store, inserts, routing_store
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from tests.support import codec, fresh_database, fresh_postgres_database

AT = datetime(2026, 11, 10, 22, 30, 15, 123456, tzinfo=UTC)
AWKWARD = [
    "a,b",
    'say "hi"',
    "line\nbreak",
    "carriage\r\nreturn",
    "back\\slash",
    "ünïcødé 中文 🚀",
    "  spaced  ",
    "NULL",
    "'single'",
]


def _click(number: int, sub1: str | None) -> dict[str, Any]:
    return {
        "click_id": codec().mint(AT + timedelta(seconds=number)),
        "created_at": AT + timedelta(seconds=number),
        "campaign_id": 1,
        "offer_id": 2,
        "source_id": 3,
        "sub1": sub1,
        "sub2": None,
        "external_id": f'ext-"{number}"',
        "cost": Decimal("0.000001") * (number + 1),
        "country": "FR",
        "region": "Île-de-France",
        "city": "Saint-Denis, Seine",
        "device_type": "mobile",
        "os": "iOS",
        "os_version": "17.1",
        "browser": "Mobile Safari",
        "browser_version": "17.1",
        "is_bot": number % 2 == 1,
        "is_unique": number % 3 != 0,
        "lander_id": None,
    }


def _segment_rows(store: SegmentStore, kind: str, key: str) -> dict[str, dict[str, Any]]:
    files = [str(segment.path) for segment in store.live(kind)]
    with duckdb.connect() as duck:
        relation = duck.read_parquet(files, union_by_name=True)
        names = relation.columns
        return {row[names.index(key)]: dict(zip(names, row, strict=True)) for row in relation.fetchall()}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_segments_hold_the_row_stores_values_exactly(backend: str, tmp_path: Path) -> None:
    clicks = [_click(number, sub1) for number, sub1 in enumerate([*AWKWARD, None])]
    converted = clicks[1]
    conversion = {
        "conversion_id": mint_conversion_id(AT + timedelta(hours=1)),
        "created_at": AT + timedelta(hours=1),
        "updated_at": AT + timedelta(hours=1, microseconds=7),
        "click_id": converted["click_id"],
        "event": "sale",
        "txid": 'tx,"1"',
        "status": "approved",
        "revenue": Decimal("49.999999"),
        "payout": Decimal("12.5"),
        "currency": "EUR",
        "click_time": converted["created_at"],
        **{key: converted[key] for key in ("campaign_id", "offer_id", "source_id", "sub1", "external_id",
                                           "country", "region", "city", "device_type", "os", "browser",
                                           "is_bot")},
    }  # fmt: skip
    lander_click = {
        "click_id": clicks[2]["click_id"],
        "created_at": AT + timedelta(minutes=1),
        "click_time": clicks[2]["created_at"],
        "campaign_id": 1,
        "lander_id": 4,
        "offer_id": 2,
        "source_id": 3,
        "sub1": clicks[2]["sub1"],
        "city": "Saint-Denis, Seine",
        "is_bot": False,
    }
    with fresh_database(backend, tmp_path) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        with database.begin() as connection:
            inserts.insert_clicks(connection, clicks)
            event_store.insert_conversions(connection, [conversion])
            routing_store.insert_lander_click(connection, lander_click)
        store = SegmentStore(tmp_path / "analytics")
        written = AnalyticsFeed(database, store, lag=timedelta(seconds=15)).run_once(AT + timedelta(days=1))
        database.dispose()

    assert written == len(clicks) + 2
    stored_clicks = _segment_rows(store, CLICKS, "click_id")
    for click in clicks:
        row = stored_clicks[click["click_id"]]
        assert row["sub1"] == click["sub1"]
        assert row["sub2"] is None
        assert row["external_id"] == click["external_id"]
        assert row["created_at"] == click["created_at"].replace(tzinfo=None)
        assert row["cost"] == int(click["cost"] * 1_000_000)
        assert (row["is_bot"], row["is_unique"]) == (click["is_bot"], click["is_unique"])
        assert (row["region"], row["city"]) == ("Île-de-France", "Saint-Denis, Seine")
    stored_conversion = _segment_rows(store, CONVERSIONS, "conversion_id")[conversion["conversion_id"]]
    assert stored_conversion["sub1"] == 'say "hi"'
    assert stored_conversion["updated_at"] == conversion["updated_at"].replace(tzinfo=None)
    assert (stored_conversion["revenue"], stored_conversion["payout"]) == (49_999_999, 12_500_000)
    assert stored_conversion["city"] == "Saint-Denis, Seine"
    stored_lander_click = _segment_rows(store, LANDER_CLICKS, "click_id")[lander_click["click_id"]]
    assert stored_lander_click["sub1"] == "line\nbreak"
    assert stored_lander_click["lander_id"] == 4


def _fed_segments(
    tmp_path: Path, times: list[datetime], now: datetime, piece_rows: int
) -> list[tuple[int, int]]:
    """Feed clicks made at `times` in one run; each clicks segment's (seconds it spans, rows)."""
    with fresh_database("sqlite", tmp_path) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        clicks = [_click(0, None) | {"click_id": codec().mint(at), "created_at": at} for at in times]
        with database.begin() as connection:
            inserts.insert_clicks(connection, clicks)
        store = SegmentStore(tmp_path / "analytics")
        feed = AnalyticsFeed(database, store, lag=timedelta(seconds=15), piece_rows=piece_rows)
        assert feed.run_once(now) == len(times)
        database.dispose()
    segments = store.live(CLICKS)
    assert all(a.end_ms == b.start_ms for a, b in pairwise(segments))  # no gap, no overlap
    with duckdb.connect() as duck:
        return [
            ((s.end_ms - s.start_ms) // 1000, duck.read_parquet(str(s.path)).count("*").fetchall()[0][0])
            for s in segments
        ]


def test_a_catch_up_is_written_in_windows_of_about_the_piece_size(tmp_path: Path) -> None:
    """A burst of traffic (here 2 clicks a second for 10 minutes) is fed in windows of about
    `piece_rows` rows, each one short DuckDB step, rather than in one window of everything."""
    start = AT
    times = [start + timedelta(milliseconds=500 * n) for n in range(1200)]
    segments = _fed_segments(tmp_path, times, start + timedelta(minutes=10, seconds=15), piece_rows=100)
    assert sum(rows for _, rows in segments) == 1200
    assert segments[0] == (10, 20)  # the first window is the shortest, 10 s; then 50 s of 100 rows
    assert {rows for _, rows in segments[1:-1]} == {100}
    assert segments[-1][1] <= 2 * 100  # a remainder shorter than 10 s joins the last window


def test_sparse_history_is_fed_in_ever_longer_windows(tmp_path: Path) -> None:
    """A first feed over weeks of sparse data (a click an hour) does not write a segment per 10 s:
    each window is up to 8 times the last, up to a week."""
    times = [AT + timedelta(hours=n) for n in range(24 * 30)]
    segments = _fed_segments(tmp_path, times, AT + timedelta(days=30), piece_rows=100_000)
    assert len(segments) <= 10
    assert max(span for span, _ in segments) == 7 * 86_400


def test_a_steady_run_writes_one_segment_however_late_it_comes(tmp_path: Path) -> None:
    """A feed every 10 s that runs a little late writes its 10.4 s as one segment, not 10 s and 0.4 s."""
    times = [AT + timedelta(milliseconds=100 * n) for n in range(104)]
    segments = _fed_segments(tmp_path, times, AT + timedelta(seconds=10.4 + 15), piece_rows=10)
    assert segments == [(10, 104)]


def test_the_work_share_rests_three_times_as_long_as_it_worked_at_a_quarter() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    share = WorkShare(0.25, slice_seconds=0.02, sleep=sleep, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 0.005  # 5 ms of work between calls
        share.rest()
    assert sum(slept) == pytest.approx(3 * 0.5, abs=3 * 0.02)  # all but the last slice's rest
    assert max(slept) <= 3 * (0.02 + 0.005)  # in slices: a rest after each 20 ms (and a call's 5 ms)

    never = WorkShare(1.0, sleep=sleep, clock=lambda: now[0])
    slept.clear()
    now[0] += 5
    never.rest()
    assert slept == []
    with pytest.raises(ValueError, match="share"):
        WorkShare(0)


class _CountingFeed(AnalyticsFeed):
    """The feed, noting the span of every segment compaction writes (its rows are written again)."""

    rewritten_ms = 0

    def _merge(self, kind: str, group: list[Segment]) -> None:
        if len(group) >= 2:
            self.rewritten_ms += group[-1].end_ms - group[0].start_ms
        super()._merge(kind, group)


def test_compaction_keeps_few_segments_and_rewrites_each_row_a_few_times(tmp_path: Path) -> None:
    """A feed every 10 s for 13 minutes of a click a second: the segments stay few (eight of each
    size class at most, each class eight times as long as the one below), every click is in exactly
    one, and compaction rewrote each 10-s window at most twice (into 80 s, then into 640 s; 13
    minutes are too few to show the old code's repeated rewrites: the test below shows them)."""
    runs = 80
    with fresh_database("sqlite", tmp_path) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        times = [AT + timedelta(seconds=n) for n in range(runs * 10)]
        clicks = [_click(0, None) | {"click_id": codec().mint(at), "created_at": at} for at in times]
        with database.begin() as connection:
            inserts.insert_clicks(connection, clicks)
        store = SegmentStore(tmp_path / "analytics")
        feed = _CountingFeed(database, store, lag=timedelta(seconds=15))
        fed = sum(feed.run_once(AT + timedelta(seconds=15 + 10 * run)) for run in range(1, runs + 1))
        database.dispose()

    live = store.live(CLICKS)
    assert fed == len(clicks)
    assert len(live) <= 8 + 7 * 3
    assert [s.end_ms - s.start_ms for s in live].count(640_000) >= 1  # two merges deep
    with duckdb.connect() as duck:
        stored = duck.read_parquet([str(s.path) for s in live]).count("*").fetchall()[0][0]
    assert stored == len(clicks)
    assert feed.rewritten_ms <= 2 * (live[-1].end_ms - live[0].start_ms)


def test_compaction_writes_each_window_again_at_most_once_per_size_class(tmp_path: Path) -> None:
    """Over 400 feed windows of 10 s (about 67 minutes), compaction writes each window again at most
    twice (into 80 s, then into 640 s). Before 2026-12-07, each compaction past 48 segments rewrote
    everything since the last six-hour boundary: here 18,090 s of windows written again for 4,000 s
    fed (this test failed so against that code)."""
    store = SegmentStore(tmp_path / "analytics")
    blank = tmp_path / "blank.parquet"
    with duckdb.connect() as duck:
        duck.sql("SELECT 1 AS click_id").write_parquet(str(blank))
    database = Database("sqlite:///" + str(tmp_path / "unused.db"))
    feed = _CountingFeed(database, store, lag=timedelta(seconds=15))
    feed._duck = duckdb.connect()
    start, windows = 1_700_000_000_000, 400
    for n in range(windows):
        shutil.copy(blank, store.path_for(CLICKS, start + 10_000 * n, start + 10_000 * (n + 1)))
        feed._compact(CLICKS)
    feed._duck.close()
    database.dispose()

    assert feed.rewritten_ms <= 2 * 10_000 * windows
    live = store.live(CLICKS)
    assert (live[0].start_ms, live[-1].end_ms) == (start, start + 10_000 * windows)
    assert all(a.end_ms == b.start_ms for a, b in pairwise(live))
    assert len(live) <= 8 + 7 * 2


def _blank_segment(store: SegmentStore, start_ms: int, end_ms: int) -> None:
    with duckdb.connect() as duck:
        duck.sql("SELECT 1 AS click_id").write_parquet(str(store.path_for(CLICKS, start_ms, end_ms)))


def test_compaction_stops_short_of_six_hours(tmp_path: Path) -> None:
    """Segments of 85 minutes (the fourth size class) are merged as far as six hours allow: four
    of them, not five (which would pass six hours) nor eight; a segment of six hours or more is
    never rewritten."""
    store = SegmentStore(tmp_path / "analytics")
    hour, start = 3_600_000, 1_700_000_000_000
    edges = [start, start + 7 * hour]  # a first feed's week-long window, never rewritten
    edges += [edges[-1] + 5_120_000 * n for n in range(1, 7)]
    edges += [edges[-1] + 10_000 * n for n in range(1, 9)]  # the newest eight, kept as they are
    for low, high in pairwise(edges):
        _blank_segment(store, low, high)
    database = Database("sqlite:///" + str(tmp_path / "unused.db"))
    feed = AnalyticsFeed(database, store, lag=timedelta(seconds=15))
    feed._duck = duckdb.connect()
    feed._compact(CLICKS)
    feed._duck.close()
    database.dispose()

    spans = [s.end_ms - s.start_ms for s in store.live(CLICKS)]
    # The last two wait: they may still grow with the segments to come.
    assert spans == [7 * hour, 4 * 5_120_000, 5_120_000, 5_120_000, *[10_000] * 8]


@pytest.mark.postgres
def test_a_postgresql_database_in_another_encoding_is_fed_as_utf8(tmp_path: Path) -> None:
    """PostgreSQL writes the feed's CSV in the connection's encoding unless told otherwise; DuckDB
    reads UTF-8."""
    click = _click(0, "Île-de-France, «été»")
    with fresh_postgres_database(encoding="LATIN1") as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        with database.begin() as connection:
            inserts.insert_clicks(connection, [click | {"region": "Île", "city": "Orléans"}])
        store = SegmentStore(tmp_path / "analytics")
        assert AnalyticsFeed(database, store, lag=timedelta(seconds=15)).run_once(AT + timedelta(days=1)) == 1
        database.dispose()

    stored = _segment_rows(store, CLICKS, "click_id")[click["click_id"]]
    assert (stored["sub1"], stored["region"], stored["city"]) == ("Île-de-France, «été»", "Île", "Orléans")


def test_what_a_feed_killed_mid_window_left_is_cleared_by_the_next(tmp_path: Path) -> None:
    """A feed process killed while writing (serve kills it 10 s after asking it to stop) leaves its
    CSV staging file and its Parquet file not yet renamed; the next run deletes them and writes
    the window whole."""
    store = SegmentStore(tmp_path / "analytics")
    staging = store.folder(CLICKS) / "tmpabc123.csv"
    unrenamed = store.path_for(CLICKS, 1, 2).with_suffix(".parquet.tmp")
    staging.write_text("half,a,row")
    unrenamed.write_bytes(b"PAR1")
    times = [AT + timedelta(seconds=n) for n in range(5)]
    segments = _fed_segments(tmp_path, times, AT + timedelta(minutes=1), piece_rows=10)

    assert sum(rows for _, rows in segments) == 5
    assert not staging.exists()
    assert not unrenamed.exists()
