"""The issue's budget: the report page is drawn within 1 s of the report engine's answer, for the
largest page the dashboard shows (a full page of a high-cardinality grouping). Rendering cost grows
with the rows on the page, not with the clicks behind them; scripts/report_render.py measures the
same at 10 million clicks (BENCHMARKS.md)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from clicktrail.web.dashboard.pages import REPORT_PAGE
from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.dashboard.render_timing import generate_segments, median_timing, utc_now
from tests.support import ServerProcess, fresh_database, start_server

BUDGET_MS = 1000


@pytest.fixture
def report_server(backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    browser_backend_only(backend)
    generated = generate_segments(tmp_path / "analytics", clicks=300_000, conversions=9_000, now=utc_now())
    with fresh_database("sqlite", tmp_path) as url:
        env = {"CLICKTRAIL_ANALYTICS_DIR": str(tmp_path / "analytics")}
        server = start_server(url, tmp_path, extra_env=env)
        server.env["first_day"], server.env["last_day"] = generated.first_day, generated.last_day
        yield server
        assert server.stop() == 0, server.log()


def test_a_full_report_page_is_drawn_within_a_second_of_the_engine(
    browser: Browser, report_server: ServerProcess
) -> None:
    period = f"from={report_server.env['first_day']}&to={report_server.env['last_day']}"
    with dashboard(browser, report_server) as page:
        timing = median_timing(page, f"/reports?g0=sub1&g1=country&{period}", runs=3)
    print(
        f"\nreport page, {timing.rows} rows: after the engine {timing.after_engine_ms:.0f} ms wall, "
        f"{timing.after_engine_cpu_ms:.0f} ms CPU (load average {os.getloadavg()[0]:.1f}); {timing}"
    )
    assert timing.rows == REPORT_PAGE
    # CPU time: the page's own work, which a crowded CI machine does not inflate (the wall time, printed
    # above and in scripts/report_render.py, matches it on an idle machine).
    assert timing.after_engine_cpu_ms < BUDGET_MS, timing
