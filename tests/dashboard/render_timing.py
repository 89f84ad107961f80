"""How long the report page takes once the report engine has answered, measured in a real browser.

The rows are generated straight into the analytics segments with DuckDB (10 million clicks take
seconds this way, where going through the row store and the feed takes half an hour), then a real
server reads them. The page's `Server-Timing` header says how long the engine took (`report`) and
how long the template took (`html`); the browser's Navigation Timing says when the request left and
when the document was loaded, and the Long Animation Frames API says when the frames that styled,
laid out and painted the table ended. After the engine = (drawn - request sent) - engine time: the
template, the transfer, parsing, layout and paint of the whole table, everything but the query.

Wall time on a machine shared with other work measures the crowd as much as the page, so the same
span is also measured in CPU time: the template's thread CPU time (`html-cpu`) plus the CPU time of
the browser's renderer process over the page load (Chrome DevTools Protocol, Performance.getMetrics
ProcessTime).

Used by scripts/report_render.py (10M clicks, printed) and tests/dashboard/test_report_render.py."""

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from playwright.sync_api import CDPSession, Page

from clicktrail.reports.columns import CLICK_COLUMNS, CONVERSION_COLUMNS

COUNTRIES = ["US", "GB", "DE", "FR", "IT", "ES", "BR", "MX", "IN", "ID", "JP", "CA", "AU", "NL", "PL", "TR",
             "RU", "UA", "VN", "TH", "PH", "EG", "NG", "ZA", "AR", "CO", "CL", "SE", "NO", "KR"]  # fmt: skip
CAMPAIGNS = 50
SUB1_VALUES = 1000


@dataclass(frozen=True)
class Generated:
    clicks: int
    conversions: int
    first_day: str
    last_day: str


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def generate_segments(
    analytics: Path, clicks: int, conversions: int, now: datetime, days: int = 30
) -> Generated:
    """`clicks` clicks spread over the `days` days before `now` (50 campaigns, 1,000 sub1 values, 30
    countries) and `conversions` approved sales on some of them, as one click and one conversion
    segment ending two minutes ago (the live feed takes over from there)."""
    end = now.replace(microsecond=0) - timedelta(minutes=2)
    start = end - timedelta(days=days)
    span_us = int((end - start - timedelta(hours=2)).total_seconds() * 1_000_000)
    folder_clicks, folder_conversions = analytics / "clicks", analytics / "conversions"
    folder_clicks.mkdir(parents=True, exist_ok=True)
    folder_conversions.mkdir(parents=True, exist_ok=True)
    countries = "[" + ", ".join(f"'{c}'" for c in COUNTRIES) + "]"
    # One function of the click number per dimension, so a conversion can carry its click's values.
    dims = {
        "campaign_id": f"CAST(1 + hash(n * 3) % {CAMPAIGNS} AS INTEGER)",
        "sub1": f"'placement-' || CAST(hash(n * 7) % {SUB1_VALUES} AS VARCHAR)",
        "sub2": "'creative-' || CAST(hash(n * 11) % 20 AS VARCHAR)",
        "country": f"{countries}[1 + CAST(hash(n * 13) % {len(COUNTRIES)} AS INTEGER)]",
        "device_type": "['mobile', 'desktop', 'tablet'][1 + CAST(hash(n * 17) % 3 AS INTEGER)]",
        "os": "['Android', 'iOS', 'Windows', 'macOS'][1 + CAST(hash(n * 19) % 4 AS INTEGER)]",
        "browser": "['Chrome', 'Safari', 'Firefox', 'Edge'][1 + CAST(hash(n * 23) % 4 AS INTEGER)]",
    }
    created = (
        f"(TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' + to_microseconds(CAST(n * {span_us // clicks} AS BIGINT)))"
    )

    def select(columns: dict[str, str], values: dict[str, str]) -> str:
        return ", ".join(
            f"CAST({values.get(name, 'NULL')} AS {kind}) AS {name}" for name, kind in columns.items()
        )

    click_values = dims | {
        "click_id": "lpad(CAST(n AS VARCHAR), 32, '0')", "created_at": created, "offer_id": "1",
        "source_id": "1", "cost": "50000", "is_bot": "hash(n * 29) % 100 = 0",
        "is_unique": "hash(n * 31) % 10 < 8",
    }  # fmt: skip
    conversion_values = dims | {
        "conversion_id": "lpad(CAST(n AS VARCHAR), 32, 'c')", "click_id": "lpad(CAST(n AS VARCHAR), 32, '0')",
        "created_at": f"{created} + INTERVAL 1 HOUR", "updated_at": f"{created} + INTERVAL 1 HOUR",
        "event": "'sale'", "status": "'approved'", "revenue": "10000000", "payout": "4000000",
        "currency": "'USD'", "cost": "0", "click_time": created, "offer_id": "1", "source_id": "1",
        "is_bot": "false",
    }  # fmt: skip
    window = f"{_ms(start)}-{_ms(end)}.parquet"
    every = max(1, clicks // conversions)
    with duckdb.connect() as duck:
        duck.execute(
            f"COPY (SELECT {select(CLICK_COLUMNS, click_values)} FROM range({clicks}) t(n)) "  # noqa: S608 -- our own SQL
            f"TO '{folder_clicks / window}' (FORMAT parquet)"
        )
        converted = f"range(0, {clicks}, {every}) t(n) LIMIT {conversions}"
        duck.execute(
            f"COPY (SELECT {select(CONVERSION_COLUMNS, conversion_values)} FROM {converted}) "  # noqa: S608
            f"TO '{folder_conversions / window}' (FORMAT parquet)"
        )
    return Generated(clicks, conversions, start.date().isoformat(), end.date().isoformat())


MEASURE = """() => new Promise((resolve) => {
  let frames = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) frames = Math.max(frames, e.startTime + e.duration);
  }).observe({type: "long-animation-frame", buffered: true});
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const timing = Object.fromEntries(nav.serverTiming.map((t) => [t.name, t.duration]));
    resolve({requestStart: nav.requestStart, responseStart: nav.responseStart, responseEnd: nav.responseEnd,
             domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, frames,
             engine: timing.report, html: timing.html, htmlCpu: timing["html-cpu"], bytes: nav.transferSize,
             rows: document.querySelectorAll("main table tbody tr").length});
  }, 0)));
})"""


@dataclass(frozen=True)
class Timing:
    rows: int
    engine_ms: float
    """The report engine (the API's own work)."""
    template_ms: float
    browser_ms: float
    """First byte to the whole table drawn (parse, style, layout, paint)."""
    after_engine_ms: float
    """Wall time from the engine's answer to the table drawn."""
    template_cpu_ms: float
    browser_cpu_ms: float
    """CPU time of the browser's renderer process for the page (all its threads)."""
    kilobytes: float

    @property
    def after_engine_cpu_ms(self) -> float:
        """The work after the engine in CPU time: what the wall time is on an idle machine (the
        transfer is local), and what it stays when other processes crowd the cores."""
        return self.template_cpu_ms + self.browser_cpu_ms


def _renderer_cpu_seconds(cdp: CDPSession) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "ProcessTime"))


def measure(page: Page, cdp: CDPSession, path: str) -> Timing:
    cpu_before = _renderer_cpu_seconds(cdp)
    page.goto(path, wait_until="load")
    got = page.evaluate(MEASURE)
    cpu_after = _renderer_cpu_seconds(cdp)
    # Parsing ends before the load event; style, layout and paint of the table happen in the frames
    # after it, which Chromium reports as long animation frames when they take over 50 ms.
    drawn = max(got["load"], got["frames"])
    return Timing(
        rows=got["rows"],
        engine_ms=got["engine"],
        template_ms=got["html"],
        browser_ms=drawn - got["responseStart"],
        after_engine_ms=drawn - got["requestStart"] - got["engine"],
        template_cpu_ms=got["htmlCpu"],
        # A new renderer process (never expected for same-site pages) starts its count at zero.
        browser_cpu_ms=1000 * (cpu_after - cpu_before if cpu_after >= cpu_before else cpu_after),
        kilobytes=got["bytes"] / 1024,
    )


def median_timing(page: Page, path: str, runs: int) -> Timing:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    timings = [measure(page, cdp, path) for _ in range(runs)]
    cdp.detach()
    fields = ("engine_ms", "template_ms", "browser_ms", "after_engine_ms", "template_cpu_ms",
              "browser_cpu_ms", "kilobytes")  # fmt: skip
    return Timing(
        rows=timings[0].rows,
        **{name: statistics.median(getattr(t, name) for t in timings) for name in fields},
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
