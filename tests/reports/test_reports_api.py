"""Reports through the real server: clicks and postbacks show up in /api/v1/reports, as JSON and CSV."""

import csv
import io
import time
from typing import Any

from tests.support import Tracker


def _report_when(tracker: Tracker, params: dict[str, str], ready: Any, timeout: float = 15) -> dict[str, Any]:
    """Reports are fed from the event tables every few seconds (under a second in tests): wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        response = tracker.api("GET", "/reports", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if ready(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_clicks_and_conversions_show_up_in_the_report(tracker: Tracker) -> None:
    campaign = tracker.campaign(revenue="3.00", payout="1.25")
    for sub in ("a", "a", "b"):
        tracker.click(campaign["key"], sub1=sub, cost="0.10")
    converting = tracker.click(campaign["key"], sub1="b", cost="0.10")
    assert tracker.postback(click_id=converting, event="sale", payout="19.99", txid="r1").status_code == 200

    params = {"group_by": "campaign,sub1", "campaign_id": str(campaign["id"]), "events": "sale"}
    body = _report_when(
        tracker, params, lambda b: b["totals"]["clicks"] == 4 and b["totals"]["conversions"] == 1
    )

    rows = {row["sub1"]: row for row in body["rows"]}
    assert rows["a"]["clicks"] == 2
    assert rows["b"]["clicks"] == 2
    assert rows["b"]["conversions"] == 1
    assert rows["b"]["sales"] == 1
    assert rows["b"]["revenue"] == "19.99"
    assert rows["b"]["payout"] == "1.25"
    assert rows["b"]["cost"] == "0.20"
    assert rows["b"]["profit"] == "18.54"
    assert rows["a"]["campaign_name"] == "Campaign"
    assert body["totals"]["revenue"] == "19.99"
    assert body["totals"]["cost"] == "0.40"


def test_a_report_as_csv_is_safe_to_open_in_a_spreadsheet(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    tracker.click(campaign["key"], sub1='=HYPERLINK("http://evil.example")')
    tracker.click(campaign["key"], sub1='plain, with "quotes"')
    params = {"group_by": "sub1", "campaign_id": str(campaign["id"])}
    _report_when(tracker, params, lambda b: b["totals"]["clicks"] == 2)

    response = tracker.api("GET", "/reports", params=params | {"format": "csv"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0][:2] == ["sub1", "clicks"]
    subs = {row[0] for row in table[1:-1]}
    assert subs == {'\'=HYPERLINK("http://evil.example")', 'plain, with "quotes"'}
    assert table[-1][0] == "total"
    assert table[-1][1] == "2"


def test_bad_report_requests_are_400s_naming_the_allowed_values(tracker: Tracker) -> None:
    response = tracker.api("GET", "/reports", params={"group_by": "campaign;DROP TABLE clicks"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_query"
    assert "allowed" in response.json()["fields"]["group_by"]
    assert tracker.api("GET", "/reports", params={"tz": "Nowhere/Land"}).status_code == 400
    assert tracker.http.get("/api/v1/reports").status_code == 401
