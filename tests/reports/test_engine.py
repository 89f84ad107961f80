"""The report engine on known data: every dimension, every metric, timezones, exact sums, and the
same answer from the SQLite and the PostgreSQL row stores."""

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from clicktrail.config import Settings
from clicktrail.errors import InvalidQuery
from clicktrail.ids import mint_conversion_id
from clicktrail.reports import remote
from clicktrail.reports.engine import ABANDON_CHECK_SECONDS, DuckDbReports, ReportResult, interrupted_when
from clicktrail.reports.feed import AnalyticsFeed
from clicktrail.reports.request import parse_report_request
from clicktrail.reports.result import ReportAbandoned
from clicktrail.reports.segments import SegmentStore
from clicktrail.storage import event_store, inserts
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from tests.support import codec, fresh_database

# 2026-11-10 22:30 UTC is 2026-11-10 23:30 in Paris and 2026-11-11 07:30 in Tokyo.
LATE_EVENING = datetime(2026, 11, 10, 22, 30, tzinfo=UTC)
MORNING = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
TODAY = datetime(2026, 11, 23, tzinfo=UTC).date()


def _click(at: datetime, campaign: int, **dims: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "click_id": codec().mint(at),
        "created_at": at,
        "campaign_id": campaign,
        "offer_id": 10 + campaign,
        "source_id": 20 + campaign,
        "is_bot": False,
        "is_unique": True,
        **dict.fromkeys(("sub1", "sub2", "external_id", "cost", "country", "device_type", "os", "browser")),
    }
    return row | dims


def _conversion(click: dict[str, Any], at: datetime, event: str, status: str, revenue: str) -> dict[str, Any]:
    return {
        "conversion_id": mint_conversion_id(at),
        "created_at": at,
        "updated_at": at,
        "click_id": click["click_id"],
        "event": event,
        "txid": f"{event}-{click['click_id'][-6:]}",
        "status": status,
        "revenue": Decimal(revenue),
        "payout": Decimal("1.10"),
        "currency": "USD",
        "click_time": click["created_at"],
        # A conversion carries its click's dimensions, as the postback intake copies them.
        **{
            key: click.get(key)
            for key in (
                "campaign_id",
                "offer_id",
                "source_id",
                "sub1",
                "external_id",
                "country",
                "device_type",
                "os",
                "browser",
                "is_bot",
            )
        },
    }


def _dataset() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    clicks = [
        _click(LATE_EVENING, 1, sub1="banner", country="FR", device_type="mobile", os="iOS", browser="Safari",
               cost=Decimal("0.05"), external_id="e1"),
        _click(LATE_EVENING + timedelta(minutes=1), 1, sub1="banner", country="FR", device_type="desktop",
               os="Windows", browser="Chrome", cost=Decimal("0.05"), is_unique=False),
        _click(MORNING, 1, sub1="native", country="DE", device_type="mobile", os="Android", browser="Chrome",
               cost=Decimal("0.10")),
        _click(MORNING + timedelta(minutes=5), 2, sub1="banner", country="US", device_type="tablet", os="iOS",
               browser="Safari", is_bot=True),
        _click(MORNING + timedelta(hours=1), 2, sub1=None, country="US", device_type="desktop", os="macOS",
               browser="Firefox", cost=Decimal("0.333333")),
    ]  # fmt: skip
    conversions = [
        _conversion(clicks[0], MORNING + timedelta(days=1), "lead", "approved", "2.00"),
        _conversion(clicks[0], MORNING + timedelta(days=2), "sale", "approved", "49.999999"),
        _conversion(clicks[2], MORNING + timedelta(hours=2), "sale", "pending", "30"),
        _conversion(clicks[3], MORNING + timedelta(hours=3), "lead", "rejected", "2"),
        _conversion(clicks[4], MORNING + timedelta(hours=4), "sale", "approved", "0.000001"),
    ]
    return clicks, conversions


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def reports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DuckDbReports]:
    directory = tmp_path_factory.mktemp(f"reports-{request.param}")
    with fresh_database(str(request.param), directory) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        clicks, conversions = _dataset()
        with database.begin() as connection:
            inserts.insert_clicks(connection, clicks)
            for conversion in conversions:
                event_store.insert_conversions(connection, [conversion])
        store = SegmentStore(directory / "analytics")
        feed = AnalyticsFeed(database, store, lag=timedelta(seconds=15))
        assert feed.run_once(datetime(2026, 11, 20, tzinfo=UTC)) == len(clicks) + len(conversions)
        database.dispose()
        yield DuckDbReports(store)


def run(reports: DuckDbReports, **params: str) -> ReportResult:
    query = {"from": "2026-11-01", "to": "2026-11-30"} | params
    return reports.run(parse_report_request(query, today=TODAY))


def by(result: ReportResult, *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: row for row in result.rows}


def test_grouping_by_campaign_counts_clicks_and_conversions(reports: DuckDbReports) -> None:
    rows = by(run(reports, group_by="campaign"), "campaign")
    assert rows[1]["clicks"] == 3
    assert rows[2]["clicks"] == 2
    assert rows[1]["unique_clicks"] == 2
    assert rows[2]["bot_clicks"] == 1
    assert rows[1]["conversions"] == 2
    assert rows[1]["pending"] == 1
    assert rows[2]["conversions"] == 1
    assert rows[2]["rejected"] == 1
    assert rows[1]["revenue"] == Decimal("51.999999")
    assert rows[1]["payout"] == Decimal("2.20")
    assert rows[1]["cost"] == Decimal("0.20")
    assert rows[1]["profit"] == Decimal("51.999999") - Decimal("2.20") - Decimal("0.20")


def test_derived_metrics(reports: DuckDbReports) -> None:
    row = by(run(reports, group_by="campaign"), "campaign")[1]
    assert row["cr"] == Decimal("66.6667")  # 2 approved of 3 clicks, in percent
    assert row["epc"] == Decimal("17.333333")
    assert row["cpc"] == Decimal("0.066667")
    assert row["roi"] == Decimal("2066.6666")  # 49.599999 profit / 2.40 spent (payout + cost), in percent


def test_every_grouping_adds_up_to_the_totals(reports: DuckDbReports) -> None:
    total = run(reports, group_by="campaign").totals
    for dimension in ("campaign", "offer", "source", "sub1", "external_id", "country", "device_type", "os",
                      "browser", "day", "hour", "event", "sub2"):  # fmt: skip
        result = run(reports, group_by=dimension)
        for metric in ("clicks", "unique_clicks", "bot_clicks", "conversions", "pending", "rejected",
                       "revenue", "payout", "cost"):  # fmt: skip
            assert sum(row[metric] for row in result.rows) == result.totals[metric] == total[metric], (
                dimension, metric,
            )  # fmt: skip
    assert total["clicks"] == 5
    assert total["revenue"] == Decimal("52.000000")
    assert total["cost"] == Decimal("0.533333")


def test_four_dimensions_at_once(reports: DuckDbReports) -> None:
    result = run(reports, group_by="campaign,sub1,country,device_type")
    assert len(result.rows) == 5
    assert (
        by(result, "campaign", "sub1", "country", "device_type")[(2, None, "US", "desktop")]["conversions"]
        == 1
    )


def test_the_report_engine_process_answers_exactly_as_the_engine_in_process(
    reports: DuckDbReports, tmp_path: Path
) -> None:
    """What `clicktrail serve`'s workers get from the report engine process (reports/remote.py)."""
    address = remote.address_in(tmp_path)
    server = remote.ReportServer(address, lambda: reports)
    stop = threading.Event()
    serving = threading.Thread(target=server.serve_until, args=(stop, lambda: True))
    serving.start()
    try:
        through_the_socket = remote.RemoteReports(address, timeout=30)
        asked = [
            {"group_by": "campaign"},
            {"group_by": "campaign,sub1,country,device_type"},
            {"group_by": "day", "tz": "Asia/Tokyo", "events": "sale,lead", "sort": "-revenue"},
        ]
        for params in asked:
            request = parse_report_request({"from": "2026-11-01", "to": "2026-11-30"} | params, today=TODAY)
            assert through_the_socket.run(request) == reports.run(request), params
    finally:
        stop.set()
        serving.join(5)


def test_days_and_hours_follow_the_timezone(reports: DuckDbReports) -> None:
    utc_days = by(run(reports, group_by="day"), "day")
    assert utc_days["2026-11-10"]["clicks"] == 2
    assert utc_days["2026-11-11"]["clicks"] == 3
    tokyo_days = by(run(reports, group_by="day", tz="Asia/Tokyo"), "day")
    assert set(tokyo_days) == {"2026-11-11"}
    assert tokyo_days["2026-11-11"]["clicks"] == 5
    paris_hours = by(run(reports, group_by="hour", tz="Europe/Paris"), "hour")
    assert paris_hours[23]["clicks"] == 2
    assert paris_hours[10]["clicks"] == 2
    kolkata = by(run(reports, group_by="day,hour", tz="Asia/Kolkata"), "day", "hour")
    assert kolkata[("2026-11-11", 4)]["clicks"] == 2  # 22:30 UTC is 04:00 the next day at +05:30


def test_the_date_range_is_in_the_timezone(reports: DuckDbReports) -> None:
    assert run(reports, **{"from": "2026-11-10", "to": "2026-11-10"}).totals["clicks"] == 2
    tokyo = run(reports, **{"from": "2026-11-10", "to": "2026-11-10", "tz": "Asia/Tokyo"})
    assert tokyo.totals["clicks"] == 0


def test_conversions_count_at_click_time_or_at_conversion_time(reports: DuckDbReports) -> None:
    at_click = by(run(reports, group_by="day"), "day")
    assert at_click["2026-11-10"]["conversions"] == 2  # both conversions of the 22:30 click
    at_conversion = by(run(reports, group_by="day", by="conversion_time"), "day")
    assert at_conversion["2026-11-12"]["conversions"] == 1
    assert at_conversion["2026-11-13"]["conversions"] == 1


def test_filters_on_any_dimension(reports: DuckDbReports) -> None:
    assert run(reports, country="fr").totals["clicks"] == 2
    assert run(reports, campaign_id="2").totals["clicks"] == 2
    assert run(reports, sub1="banner", device_type="tablet").totals["clicks"] == 1
    assert run(reports, sub1="' OR 1=1 --").totals["clicks"] == 0


def test_one_event_or_events_side_by_side(reports: DuckDbReports) -> None:
    sales = run(reports, group_by="campaign", event="sale")
    assert by(sales, "campaign")[1]["conversions"] == 1
    assert sales.totals["revenue"] == Decimal("50.000000")
    side = by(run(reports, group_by="campaign", events="lead,sale"), "campaign")
    assert (side[1]["leads"], side[1]["sales"]) == (1, 1)
    assert (side[2]["leads"], side[2]["sales"]) == (0, 1)
    events = by(run(reports, group_by="event"), "event")
    assert events["lead"]["conversions"] == 1
    assert events[None]["clicks"] == 5


def test_sorting_and_paging(reports: DuckDbReports) -> None:
    ordered = run(reports, group_by="country", sort="-clicks")
    assert [row["country"] for row in ordered.rows][:1] in (["FR"], ["US"])
    assert [row["clicks"] for row in ordered.rows] == sorted(
        (row["clicks"] for row in ordered.rows), reverse=True
    )
    page = run(reports, group_by="country", sort="country", limit="1", offset="1")
    assert [row["country"] for row in page.rows] == ["FR"]
    assert page.total_rows == 3
    assert page.totals["clicks"] == 5


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"group_by": "campaign,nope"}, "group_by", "allowed: campaign"),
        ({"group_by": "sub1,sub2,sub3,sub4,sub5"}, "group_by", "at most 4"),
        ({"tz": "Mars/Olympus"}, "tz", "IANA"),
        ({"from": "yesterday"}, "from", "ISO"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "to", "before"),
        ({"sort": "drop table"}, "sort", "one of"),
        ({"campaign_id": "1 OR 1=1"}, "campaign_id", "numeric"),
        ({"format": "xml"}, "format", "json"),
        ({"colour": "red"}, "colour", "allowed"),
        ({"limit": "0"}, "limit", "1 to"),
    ],
)
def test_bad_requests_name_what_is_allowed(params: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InvalidQuery) as refused:
        parse_report_request(params, today=TODAY)
    assert field in refused.value.fields
    assert words in refused.value.fields[field]


def test_a_segment_store_with_no_data_reports_zeros(tmp_path: Path) -> None:
    empty = DuckDbReports(SegmentStore(tmp_path))
    result = empty.run(parse_report_request({"group_by": "campaign"}, today=TODAY))
    assert result.rows == []
    assert result.totals["clicks"] == 0
    assert result.totals["revenue"] == 0


_answers: dict[str, list[tuple[Any, ...]]] = {}


def test_sqlite_and_postgresql_agree_to_the_cent(
    reports: DuckDbReports, request: pytest.FixtureRequest
) -> None:
    result = run(reports, group_by="campaign,sub1,country,day", tz="Europe/Paris", events="lead,sale")
    answer = sorted(tuple(str(v) for v in row.values()) for row in result.rows)
    assert len(answer) == 4  # the two late-evening FR banner clicks share a group; on either backend
    backend = request.node.callspec.params["reports"]
    _answers[backend] = answer
    other = _answers.get("postgres" if backend == "sqlite" else "sqlite")
    if other is not None:
        assert answer == other


def test_a_report_nobody_waits_for_any_more_is_not_started(reports: DuckDbReports) -> None:
    asked = {"group_by": "campaign", "from": "2026-11-01", "to": "2026-11-30"}
    request = parse_report_request(asked, today=TODAY)

    with pytest.raises(ReportAbandoned):
        reports.run(request, abandoned=lambda: True)
    assert reports.run(request, abandoned=lambda: False) == reports.run(request)


def test_a_query_whose_asker_gave_up_is_interrupted_not_run_to_its_end() -> None:
    """What stops a long report in the report engine once its worker's timeout is over."""
    cursor = duckdb.connect().cursor()
    gave_up_at = time.monotonic() + 0.3

    started = time.monotonic()
    with pytest.raises(ReportAbandoned), interrupted_when(lambda: time.monotonic() >= gave_up_at, cursor):
        # Some seconds of work (it ends even if the interrupt were lost: the test fails, not hangs).
        cursor.execute("SELECT sum(hash(i)) FROM range(2000000000) t(i)").fetchall()
    assert time.monotonic() - started < 0.3 + 2 * ABANDON_CHECK_SECONDS + 1.0


def test_a_query_nobody_gave_up_on_runs_to_its_end() -> None:
    cursor = duckdb.connect().cursor()

    with interrupted_when(lambda: False, cursor):
        time.sleep(2 * ABANDON_CHECK_SECONDS)  # the watch looks more than once meanwhile
        assert cursor.execute("SELECT 42").fetchall() == [(42,)]
        # And a query longer than a look (a wrong interrupt would land in it, not be cleared first).
        assert len(cursor.execute("SELECT sum(hash(i)) FROM range(300000000) t(i)").fetchall()) == 1
