"""The largest report page the dashboard shows (a full page of a high-cardinality grouping) is drawn
whole in a real browser, and how long it took after the report engine's answer is measured and
printed.

The issue's budget for it (drawn within 1 s of the engine's answer) is checked by the benchmark, as
every speed target is: `make bench` runs scripts/report_render.py at 10 million clicks on a machine
it has to itself (BENCHMARKS.md). Asserted here, beside the suite's other tests, even the CPU time
grew past it on a slow machine (1,032 ms in a CI run; 629-726 ms alone on the same machine)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from clicktrail.web.dashboard.pages import REPORT_PAGE
from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.dashboard.render_timing import generate_segments, median_timing, utc_now
from tests.support import ServerProcess, fresh_database, start_server


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


def test_a_full_report_page_is_drawn_whole_and_its_time_after_the_engine_measured(
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
    assert timing.engine_ms > 0  # the page's Server-Timing names the engine's part
    assert timing.after_engine_cpu_ms > 0
