"""Drilling through the report table: a row of the first grouping becomes a filter and the table moves
to the next grouping; breadcrumbs lead back; the numbers stay the API's."""

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.delivery_support import wait_until
from tests.support import ServerProcess, Tracker

NONE = "\N{EN DASH}"  # how the table shows a missing value


@pytest.fixture
def page(browser: Browser, backend: str, server: ServerProcess) -> Iterator[Page]:
    browser_backend_only(backend)
    with dashboard(browser, server) as opened:
        yield opened


def body_rows(page: Page) -> list[list[str]]:
    return [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in page.locator("main table tbody tr").all()
    ]


def test_a_row_drills_into_the_next_grouping_and_breadcrumbs_lead_back(
    page: Page, tracker: Tracker, screenshots: Path
) -> None:
    name = f"Drill {secrets.token_hex(3)}"
    campaign = tracker.campaign()
    tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"name": name})
    for sub1, sub2 in [("a", "x"), ("a", "y"), ("a", "y"), ("b", "x")]:
        tracker.click(campaign["key"], sub1=sub1, sub2=sub2)
    converted = tracker.click(campaign["key"], sub1="a", sub2="x")
    assert tracker.postback(click_id=converted, event="sale", payout="10", txid="drill-1").status_code == 200

    page.goto("/reports?g0=campaign&g1=sub1&g2=sub2")

    def campaign_rows_complete() -> bool:
        page.reload()
        rows = page.get_by_role("row").filter(has_text=name)
        # One row per (campaign, sub1, sub2): a·x (with the sale), a·y, b·x.
        return rows.count() == 3 and "10.00" in rows.filter(has_text="x").first.inner_text()

    wait_until(campaign_rows_complete, 20, "the campaign's clicks and conversion in the report")
    page.get_by_role("link", name=f"{campaign['id']} · {name}").first.click()

    expect(page).to_have_url(re.compile(rf"campaign_id={campaign['id']}.*g0=sub1&g1=sub2&drill=campaign"))
    crumbs = page.get_by_role("navigation", name="Drill-down")
    expect(crumbs.get_by_role("link", name="All (by campaign)")).to_be_visible()
    expect(crumbs.locator("[aria-current=page]")).to_have_text(
        f"campaign {campaign['id']} · {name} (by sub1)"
    )
    by_sub = [["a", "x", "2"], ["a", "y", "2"], ["b", "x", "1"]]
    assert [row[:3] for row in body_rows(page)] == by_sub
    page.screenshot(path=str(screenshots / "report-drill.png"), full_page=True)

    page.get_by_role("link", name="a", exact=True).first.click()
    expect(crumbs.locator("[aria-current=page]")).to_have_text("sub1 = a (by sub2)")
    shown = {row[0]: row for row in body_rows(page)}
    assert sorted(shown) == ["x", "y"]
    api = tracker.api(
        "GET", "/reports", params={"group_by": "sub2", "campaign_id": campaign["id"], "sub1": "a"}
    ).json()
    columns = api["columns"]
    for api_row in api["rows"]:
        assert shown[api_row["sub2"]] == [NONE if api_row[c] is None else str(api_row[c]) for c in columns]
    # The last grouping has nothing further to drill into: its values are not links.
    expect(page.locator("main table tbody a")).to_have_count(0)

    crumbs.get_by_role("link", name=f"campaign {campaign['id']} · {name} (by sub1)").click()
    expect(page).not_to_have_url(re.compile(r"sub1=a"))
    assert [row[:3] for row in body_rows(page)] == by_sub
    crumbs.get_by_role("link", name="All (by campaign)").click()
    expect(page).not_to_have_url(re.compile(r"campaign_id="))
    expect(page.get_by_label("Group 1")).to_have_value("campaign")
    expect(page.get_by_label("Group 2")).to_have_value("sub1")
    expect(page.get_by_label("Group 3")).to_have_value("sub2")
