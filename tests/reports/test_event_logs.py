"""The click log and the conversion log: the report's filters, newest first, for drill-down."""

from tests.support import Tracker


def test_the_click_log_filters_like_reports_and_pages_newest_first(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    ids = [tracker.click(campaign["key"], sub1="x" if n % 2 else "y", sub2=f"n{n}") for n in range(5)]

    page = tracker.api("GET", "/clicks", params={"campaign_id": campaign["id"], "limit": 2}).json()
    rest = tracker.api(
        "GET", "/clicks", params={"campaign_id": campaign["id"], "cursor": page["next_cursor"]}
    ).json()
    assert [c["click_id"] for c in page["items"] + rest["items"]] == list(reversed(ids))

    only_x = tracker.api("GET", "/clicks", params={"campaign_id": campaign["id"], "sub1": "x"}).json()
    assert [c["sub2"] for c in only_x["items"]] == ["n3", "n1"]
    refused = tracker.api("GET", "/clicks", params={"campaign_id": "one"})
    assert refused.status_code == 400
    assert refused.json()["fields"] == {"campaign_id": "a numeric ID"}


def test_the_conversion_log_filters_by_sub_id(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    for sub in ("keep", "drop"):
        tracker.postback(click_id=tracker.click(campaign["key"], sub1=sub), txid=sub)
    items = tracker.api("GET", "/conversions", params={"campaign_id": campaign["id"], "sub1": "keep"}).json()
    assert [c["txid"] for c in items["items"]] == ["keep"]
