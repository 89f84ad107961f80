"""The report engine: grouped click and conversion metrics from the analytics segments, on DuckDB.

Clicks and conversions are aggregated separately by the same dimensions (a conversion carries its
click's dimensions) and joined on them, so every click group and every conversion group appears once
and any grouping adds up to the totals. Sums are exact: money is integer millionths until display.
A ClickHouse engine can implement the same `ReportEngine` protocol later.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

import duckdb

from clicktrail.money import from_micros, to_micros
from clicktrail.reports.columns import (
    CLICK_COLUMNS,
    CONVERSION_COLUMNS,
    LANDER_CLICK_COLUMNS,
    empty_table_sql,
)
from clicktrail.reports.costs import CostUpdate
from clicktrail.reports.dimensions import DIMENSIONS, Dimension, Metric
from clicktrail.reports.request import ReportRequest, TimeBasis
from clicktrail.reports.result import ReportAbandoned, ReportEngine, ReportResult, Row
from clicktrail.reports.segments import CLICKS, CONVERSIONS, LANDER_CLICKS, SegmentStore

__all__ = ["DuckDbReports", "ReportEngine", "ReportResult", "Row", "derive"]

ABANDON_CHECK_SECONDS = 0.25
"""How often a running report looks whether its asker is still waiting: a report given up by its
worker (the report timeout) stops within this long instead of holding one of the engine's slots,
and its memory, to the end (a report over four dimensions of 10 million clicks takes seconds)."""

_RATIO = Decimal("0.0001")
_MONEY_RATIO = Decimal("0.000001")


def _dimension_sql(dim: Dimension, time_column: str, *, clicks: bool) -> str:
    if dim.time_part == "day":
        return f"strftime(timezone($tz, {time_column}::TIMESTAMPTZ), '%Y-%m-%d')"
    if dim.time_part == "hour":
        return f"hour(timezone($tz, {time_column}::TIMESTAMPTZ))"
    if dim.name == "event" and clicks:
        return "NULL::VARCHAR"
    return dim.column


def _source(kind: str, store: SegmentStore, empty: str) -> str:
    """The live segments of one kind as a relation with today's columns: a column added since older
    segments were written reads as NULL there (UNION BY NAME with the empty typed table)."""
    files = [segment.path for segment in store.live(kind)]
    if not files:
        return empty
    listed = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
    segments = f"read_parquet([{listed}], union_by_name=true)"
    return f"(SELECT * FROM {empty} UNION ALL BY NAME SELECT * FROM {segments})"  # noqa: S608 -- our own names


def _cost_update_ctes(
    updates: Sequence[CostUpdate], params: dict[str, Any], clicks_source: str, conversions_source: str
) -> str:
    """CTEs giving `clicks_costed` and `conversions_costed`: the segments with cost updates applied.

    Each click in an update's period (newest update first) gets an equal share of the amount in
    millionths, the remainder going one millionth each to the first clicks, so shares sum to the
    amount exactly; CPA costs of conversions on those clicks become 0 (the update is the truth)."""
    if not updates:
        return (
            f"clicks_costed AS (SELECT * FROM {clicks_source}), "  # noqa: S608 -- our own file names
            f"conversions_costed AS (SELECT * FROM {conversions_source}),"
        )
    values = []
    for n, update in enumerate(updates):
        params |= {
            f"u{n}id": update.id,
            f"u{n}campaign": update.campaign_id,
            f"u{n}amount": to_micros(update.amount),
            f"u{n}start": update.start.astimezone(UTC).replace(tzinfo=None),
            f"u{n}end": update.end.astimezone(UTC).replace(tzinfo=None),
        }  # fmt: skip
        values.append(
            f"($u{n}id::INTEGER, $u{n}campaign::INTEGER, $u{n}start::TIMESTAMP, $u{n}end::TIMESTAMP, "
            f"$u{n}amount::BIGINT)"
        )
    return f"""
        updates(id, campaign_id, ustart, uend, amount) AS (VALUES {", ".join(values)}),
        click_base AS (SELECT * FROM {clicks_source}),
        matched AS (
            SELECT b.click_id, u.id AS uid, u.amount FROM click_base b JOIN updates u
                ON b.campaign_id = u.campaign_id AND b.created_at >= u.ustart AND b.created_at < u.uend
            QUALIFY row_number() OVER (PARTITION BY b.click_id ORDER BY u.id DESC) = 1
        ), shares AS (
            SELECT click_id, amount // count(*) OVER (PARTITION BY uid)
                + CASE WHEN row_number() OVER (PARTITION BY uid ORDER BY click_id)
                            <= amount % count(*) OVER (PARTITION BY uid) THEN 1 ELSE 0 END AS share
            FROM matched
        ), clicks_costed AS (
            SELECT b.* REPLACE (CASE WHEN s.click_id IS NULL THEN b.cost ELSE s.share END AS cost)
            FROM click_base b LEFT JOIN shares s ON b.click_id = s.click_id
        ), conversions_costed AS (
            SELECT v.* REPLACE (
                CASE WHEN EXISTS (SELECT 1 FROM updates u WHERE u.campaign_id = v.campaign_id
                                  AND v.click_time >= u.ustart AND v.click_time < u.uend)
                     THEN 0 ELSE v.cost END AS cost)
            FROM {conversions_source} v
        ),"""  # noqa: S608 -- our own file names; every value is bound


def _ratio(numerator: Decimal, denominator: Decimal, quantum: Decimal) -> Decimal | None:
    return None if denominator == 0 else (numerator / denominator).quantize(quantum)


def derive(row: Row) -> None:
    """Add profit and the ratios to a row of sums (in place)."""
    clicks = Decimal(row["clicks"])
    spent = row["payout"] + row["cost"]
    row["profit"] = row["revenue"] - row["payout"] - row["cost"]
    row["cr"] = _ratio(Decimal(row["conversions"]) * 100, clicks, _RATIO)
    row["epc"] = _ratio(row["revenue"], clicks, _MONEY_RATIO)
    row["cpc"] = _ratio(row["cost"], clicks, _MONEY_RATIO)
    row["roi"] = _ratio(row["profit"] * 100, spent, _RATIO)
    row["lander_ctr"] = _ratio(Decimal(row["lander_clicks"]) * 100, Decimal(row["lander_views"]), _RATIO)


class DuckDbReports:
    def __init__(self, store: SegmentStore, *, memory_limit: str = "256MB", threads: int = 2) -> None:
        self._store = store
        # One in-memory database per process; each report gets its own cursor (connecting costs ~40 ms).
        self._database = duckdb.connect(config={"memory_limit": memory_limit, "threads": threads})
        self._database.execute(empty_table_sql("empty_clicks", CLICK_COLUMNS))
        self._database.execute(empty_table_sql("empty_conversions", CONVERSION_COLUMNS))
        self._database.execute(empty_table_sql("empty_lander_clicks", LANDER_CLICK_COLUMNS))

    def _connect(self) -> duckdb.DuckDBPyConnection:
        cursor = self._database.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def run(
        self,
        request: ReportRequest,
        updates: Sequence[CostUpdate] = (),
        *,
        abandoned: Callable[[], bool] | None = None,
    ) -> ReportResult:
        """The report; with `abandoned`, stopped (ReportAbandoned) once that says nobody waits for it."""
        try:
            return self._run(request, updates, abandoned)
        except duckdb.IOException:
            # A segment listed a moment ago was compacted away (readers get a grace period, but a
            # very slow report can outlive it): list the segments again, once.
            return self._run(request, updates, abandoned)

    def _run(
        self, request: ReportRequest, updates: Sequence[CostUpdate], abandoned: Callable[[], bool] | None
    ) -> ReportResult:
        dims = [DIMENSIONS[name] for name in request.group_by]
        conversion_time = "click_time" if request.by is TimeBasis.CLICK_TIME else "created_at"
        params: dict[str, Any] = {
            "tz": request.tz,
            "start": request.start.replace(tzinfo=None),
            "end": request.end.replace(tzinfo=None),
        }
        filters = []
        for n, (column, value) in enumerate(request.filters):
            params[f"f{n}"] = value
            filters.append(f" AND {column} = $f{n}")
        if request.within is not None:
            scope_column, ids = request.within
            if scope_column not in ("source_id", "offer_id"):
                raise ValueError(f"cannot scope a report by {scope_column}")
            names = []
            for n, scope_id in enumerate(ids):
                params[f"w{n}"] = scope_id
                names.append(f"$w{n}")
            filters.append(f" AND {scope_column} IN ({', '.join(names)})" if names else " AND FALSE")
        filter_sql = "".join(filters)

        same_group = " AND ".join(f"c.d{i} IS NOT DISTINCT FROM v.d{i}" for i in range(len(dims))) or "TRUE"
        click_dims = [f"{_dimension_sql(d, 'created_at', clicks=True)} AS d{i}" for i, d in enumerate(dims)]
        conv_dims = [
            f"{_dimension_sql(d, conversion_time, clicks=False)} AS d{i}" for i, d in enumerate(dims)
        ]
        # Lander click-throughs count on their click's day, or on their own with by=conversion_time.
        lander_time = "click_time" if request.by is TimeBasis.CLICK_TIME else "created_at"
        lander_dims = [f"{_dimension_sql(d, lander_time, clicks=True)} AS d{i}" for i, d in enumerate(dims)]
        same_path = " AND ".join(f"cv.d{i} IS NOT DISTINCT FROM l.d{i}" for i in range(len(dims))) or "TRUE"
        group = " GROUP BY ALL" if dims else ""
        event_filter = ""
        if request.event is not None:
            params["event"] = request.event
            event_filter = " AND event = $event"
        per_event = []
        for n, event in enumerate(request.events):
            params[f"e{n}"] = event
            per_event.append(f"count(*) FILTER (WHERE status = 'approved' AND event = $e{n}) AS ev{n}")

        event_columns = [f"ev{n}" for n in range(len(request.events))]
        order_by = _order_by(request, dims)
        clicks_source = _source(CLICKS, self._store, "empty_clicks")
        conversions_source = _source(CONVERSIONS, self._store, "empty_conversions")
        lander_source = _source(LANDER_CLICKS, self._store, "empty_lander_clicks")
        carried = [*_CLICK_SIDE, *event_columns]
        cost_ctes = _cost_update_ctes(updates, params, clicks_source, conversions_source)
        sql = f"""
        WITH {cost_ctes}
        c AS (
            SELECT {", ".join([*click_dims, ""])}
                count(*) AS clicks,
                count(*) FILTER (WHERE is_unique) AS unique_clicks,
                count(*) FILTER (WHERE is_bot) AS bot_clicks,
                count(*) FILTER (WHERE lander_id IS NOT NULL) AS lander_views,
                coalesce(sum(cost), 0) AS cost
            FROM clicks_costed
            WHERE created_at >= $start AND created_at < $end{filter_sql}{group}
        ), latest AS (
            SELECT * FROM conversions_costed
            QUALIFY row_number() OVER (PARTITION BY conversion_id ORDER BY updated_at DESC) = 1
        ), v AS (
            SELECT {", ".join([*conv_dims, ""])}
                count(*) FILTER (WHERE status = 'approved') AS conversions,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'rejected') AS rejected,
                coalesce(sum(revenue) FILTER (WHERE status = 'approved'), 0) AS revenue,
                coalesce(sum(payout) FILTER (WHERE status = 'approved'), 0) AS payout,
                coalesce(sum(cost) FILTER (WHERE status = 'approved'), 0) AS cpa_cost
                {"".join(", " + e for e in per_event)}
            FROM latest
            WHERE {conversion_time} >= $start AND {conversion_time} < $end{filter_sql}{event_filter}{group}
        ), l AS (
            SELECT {", ".join([*lander_dims, ""])} count(*) AS lander_clicks
            FROM {lander_source}
            WHERE {lander_time} >= $start AND {lander_time} < $end{filter_sql}{group}
        ), cv AS (
            SELECT {", ".join([f"coalesce(c.d{i}, v.d{i}) AS d{i}" for i in range(len(dims))] + [""])}
                coalesce(c.clicks, 0) AS clicks, coalesce(c.unique_clicks, 0) AS unique_clicks,
                coalesce(c.bot_clicks, 0) AS bot_clicks, coalesce(c.lander_views, 0) AS lander_views,
                coalesce(c.cost, 0) + coalesce(v.cpa_cost, 0) AS cost,
                coalesce(v.conversions, 0) AS conversions, coalesce(v.pending, 0) AS pending,
                coalesce(v.rejected, 0) AS rejected, coalesce(v.revenue, 0) AS revenue,
                coalesce(v.payout, 0) AS payout
                {"".join(f", coalesce(v.ev{n}, 0) AS ev{n}" for n in range(len(request.events)))}
            FROM c FULL OUTER JOIN v ON {same_group}
        ), joined AS (
            SELECT {", ".join([f"coalesce(cv.d{i}, l.d{i}) AS d{i}" for i in range(len(dims))] + [""])}
                {", ".join(f"coalesce(cv.{name}, 0) AS {name}" for name in carried)},
                coalesce(l.lander_clicks, 0) AS lander_clicks
            FROM cv FULL OUTER JOIN l ON {same_path}
        ), kept AS (
            -- A group with nothing but chargebacks (say) has nothing to report.
            SELECT *, revenue - payout - cost AS profit FROM joined
            WHERE clicks > 0 OR conversions > 0 OR pending > 0 OR rejected > 0 OR lander_clicks > 0
        )
        SELECT 0 AS is_total, * FROM (
            SELECT {", ".join([*(f"d{i}" for i in range(len(dims))), *SUMMED, *event_columns])},
                count(*) OVER () AS total_rows
            FROM kept ORDER BY {order_by} LIMIT {request.limit} OFFSET {request.offset}
        )
        UNION ALL
        SELECT 1, {
            ", ".join(
                [
                    *("NULL" for _ in dims),
                    *(f"sum({m})" for m in SUMMED),
                    *(f"sum({e})" for e in event_columns),
                ]
            )
        }, count(*)
        FROM kept
        """  # noqa: S608 -- built from whitelisted dimensions and our own file names; values are bound
        connection = self._connect()
        try:
            used = {
                name: value for name, value in params.items() if f"${name}" in sql
            }  # DuckDB refuses extras
            with interrupted_when(abandoned, connection):
                fetched = connection.execute(sql, used).fetchall()
        finally:
            connection.close()
        return self._assemble(request, fetched)

    def _assemble(self, request: ReportRequest, fetched: list[tuple[Any, ...]]) -> ReportResult:
        width = len(request.group_by)
        event_keys = [f"{event}s" for event in request.events]
        rows: list[Row] = []
        totals: Row = {}
        total_rows = 0
        for record in fetched:
            is_total, dims, values = record[0], record[1 : 1 + width], record[1 + width :]
            row: Row = {} if is_total else dict(zip(request.group_by, dims, strict=True))
            for name, value in zip((*SUMMED, *event_keys), values, strict=False):
                row[name] = from_micros(int(value or 0)) if name in MONEY_SUMS else int(value or 0)
            derive(row)
            if is_total:
                totals, total_rows = row, int(values[-1])
            else:
                rows.append(row)
        columns = [*request.group_by, *(m.value for m in Metric), *event_keys]
        return ReportResult(columns, rows, totals, total_rows)


SUMMED = (
    "clicks",
    "unique_clicks",
    "bot_clicks",
    "cost",
    "conversions",
    "pending",
    "rejected",
    "revenue",
    "payout",
    "lander_views",
    "lander_clicks",
)
# What the click and conversion side carries into the join with lander click-throughs.
_CLICK_SIDE = tuple(name for name in SUMMED if name != "lander_clicks")
MONEY_SUMS = frozenset({"cost", "revenue", "payout"})
# Sort keys for the derived metrics, in SQL (approximate doubles, for ordering only; the values shown
# are computed exactly from the sums).
_SORT_EXPRESSIONS = {
    "profit": "profit",
    "cr": "conversions * 100.0 / nullif(clicks, 0)",
    "epc": "revenue * 1.0 / nullif(clicks, 0)",
    "cpc": "cost * 1.0 / nullif(clicks, 0)",
    "roi": "profit * 100.0 / nullif(payout + cost, 0)",
    "lander_ctr": "lander_clicks * 100.0 / nullif(lander_views, 0)",
}


@contextlib.contextmanager
def interrupted_when(
    abandoned: Callable[[], bool] | None, connection: duckdb.DuckDBPyConnection
) -> Iterator[None]:
    """Interrupt `connection`'s query once `abandoned()` is true (looked at before it starts, then
    every ABANDON_CHECK_SECONDS from a thread of its own), and raise ReportAbandoned for it.

    Interrupted again at every look until the query ends: DuckDB clears the request when a query
    starts executing, so one sent while it was still being planned (binding `read_parquet` over many
    segments reads their metadata) would be lost, and the abandoned report run to its end."""
    if abandoned is None:
        yield
        return
    if abandoned():
        raise ReportAbandoned("nobody waits for this report any more")
    finished = threading.Event()
    interrupted = threading.Event()

    def watch() -> None:
        while not finished.wait(ABANDON_CHECK_SECONDS):
            if interrupted.is_set() or abandoned():
                interrupted.set()
                connection.interrupt()

    watcher = threading.Thread(target=watch, name="report watch", daemon=True)
    watcher.start()
    try:
        yield
    except duckdb.Error as exc:
        if interrupted.is_set():  # however the interrupt surfaced: nobody waits for the answer
            raise ReportAbandoned("nobody waits for this report any more") from exc
        raise
    finally:
        finished.set()
        watcher.join()


def _order_by(request: ReportRequest, dims: list[Dimension]) -> str:
    direction = "DESC" if request.descending else "ASC"
    if request.sort in request.group_by:
        key = f"d{request.group_by.index(request.sort)}"
    elif request.sort in _SORT_EXPRESSIONS:
        key = _SORT_EXPRESSIONS[request.sort]
    elif request.sort in SUMMED:
        key = request.sort
    else:  # an event's side-by-side count, "sales"
        key = f"ev{[f'{event}s' for event in request.events].index(request.sort)}"
    # Then every dimension, so pages are stable.
    tie_breaks = "".join(f", d{i} ASC NULLS LAST" for i in range(len(dims)))
    return f"{key} {direction} NULLS LAST{tie_breaks}"
