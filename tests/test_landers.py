"""Landers through a real server (SQLite and PostgreSQL): a campaign shows its lander first, the
lander's `/lp/click` continues the same click to the offer, multi-offer landers pick the path's n-th
offer, bad click IDs get a clear 4xx, and reports count lander views, click-throughs and CTR."""

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests import corpora
from tests.reports.test_reports_api import _report_when
from tests.support import Tracker, codec

LANDER_URL = "https://lander.example/page?cid={click_id}&s={sub1}&o={offer_id}"


def _lander(tracker: Tracker, url: str = LANDER_URL) -> dict[str, Any]:
    return tracker.create("landers", name="Lander", url=url)


def _offer(tracker: Tracker, name: str) -> int:
    offer = tracker.create("offers", name=name, url=f"https://{name}.example/?cid={{click_id}}&s={{sub1}}")
    return int(offer["id"])


def _with_lander(tracker: Tracker, lander_id: int) -> dict[str, Any]:
    campaign = tracker.campaign(url="https://offer.example/buy?cid={click_id}&s={sub1}")
    patched = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"lander_id": lander_id})
    assert patched.status_code == 200, patched.text
    assert patched.json()["lander_id"] == lander_id
    return campaign


def _visit(tracker: Tracker, key: str, **params: str) -> tuple[str, dict[str, list[str]], str]:
    """Follow a tracking link: (host the visitor lands on, its query, the click ID)."""
    response = tracker.http.get(f"/c/{key}", params=params, headers={"user-agent": _browser()})
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    return location.netloc, query, query["cid"][0]


def _browser() -> str:
    return next(ua for ua, kind in corpora.real_browsers() if kind == "desktop")


def _continue(tracker: Tracker, path: str = "/lp/click", **params: str) -> tuple[str, dict[str, list[str]]]:
    response = tracker.http.get(path, params=params)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    return location.netloc, parse_qs(location.query)


def test_a_campaign_shows_its_lander_first_and_lp_click_continues_the_same_click_to_the_offer(
    tracker: Tracker,
) -> None:
    lander = _lander(tracker)
    campaign = _with_lander(tracker, lander["id"])

    host, query, click_id = _visit(tracker, campaign["key"], sub1="banner-7")

    assert host == "lander.example"
    assert query["s"] == ["banner-7"]
    assert query["o"] == [str(campaign["offer_id"])]
    stored = tracker.api("GET", f"/clicks/{click_id}").json()
    assert stored["lander_id"] == lander["id"]

    host, query = _continue(tracker, click_id=click_id)

    assert host == "offer.example"
    assert (query["cid"], query["s"]) == ([click_id], ["banner-7"])
    assert tracker.postback(click_id=click_id, txid="lp-1").status_code == 200
    conversion = tracker.api("GET", f"/conversions?click_id={click_id}").json()["items"][0]
    assert (conversion["offer_id"], conversion["lander_id"]) == (campaign["offer_id"], lander["id"])


def test_the_trackers_click_cookie_finds_the_click_when_the_lander_link_has_no_click_id(
    tracker: Tracker,
) -> None:
    campaign = _with_lander(tracker, _lander(tracker, "https://lander.example/plain")["id"])
    response = tracker.http.get(f"/c/{campaign['key']}")
    assert response.status_code == 302
    click_id = tracker.http.cookies["ct_cid"]

    host, query = _continue(tracker)

    assert host == "offer.example"
    assert query["cid"] == [click_id]


def test_a_multi_offer_lander_sends_each_link_to_its_offer_on_the_path_and_the_click_follows(
    tracker: Tracker,
) -> None:
    lander = _lander(tracker)
    campaign = tracker.campaign(url="https://offer.example/?cid={click_id}")
    first, second = _offer(tracker, "first"), _offer(tracker, "second")
    routing = {
        "rules": [
            {
                "when": {"device_type": ["desktop"]},
                "offers": [{"offer_id": first, "weight": 1}, {"offer_id": second, "weight": 1}],
                "lander_id": lander["id"],
            }
        ]
    }
    saved = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": routing})
    assert saved.status_code == 200, saved.text
    assert saved.json()["routing"]["rules"][0]["lander_id"] == lander["id"]

    host, _, click_id = _visit(tracker, campaign["key"], sub1="x")
    assert host == "lander.example"

    assert _continue(tracker, "/lp/click/2", click_id=click_id)[0] == "second.example"
    assert tracker.api("GET", f"/clicks/{click_id}").json()["offer_id"] == second
    assert _continue(tracker, "/lp/click/1", click_id=click_id)[0] == "first.example"
    assert tracker.postback(click_id=click_id, txid="lp-multi").status_code == 200
    conversion = tracker.api("GET", f"/conversions?click_id={click_id}").json()["items"][0]
    assert conversion["offer_id"] == first

    beyond = tracker.http.get("/lp/click/3", params={"click_id": click_id})
    assert beyond.status_code == 404
    assert beyond.json()["error"] == "no_such_offer"


def test_missing_forged_unknown_and_lander_less_click_ids_get_a_clear_4xx_never_a_redirect(
    tracker: Tracker,
) -> None:
    direct = tracker.campaign()
    straight = tracker.click(direct["key"])
    unknown = codec().mint(datetime(2026, 1, 1, tzinfo=UTC))
    fresh = Tracker(tracker.server)  # no click cookie
    try:
        cases = {
            "missing_click_id": (400, fresh.http.get("/lp/click")),
            "bad_click_id": (400, fresh.http.get("/lp/click", params={"click_id": "not-a-click-id"})),
            "unknown_click": (404, fresh.http.get("/lp/click", params={"click_id": unknown})),
            "no_lander": (409, fresh.http.get("/lp/click", params={"click_id": straight})),
            "not_found": (404, fresh.http.get("/lp/click/first", params={"click_id": straight})),
            "method_not_allowed": (405, fresh.http.post("/lp/click", params={"click_id": straight})),
        }
    finally:
        fresh.close()
    for error, (status, response) in cases.items():
        assert (response.status_code, response.json()["error"]) == (status, error), response.text
        assert "location" not in response.headers


def test_landers_are_validated_on_save_and_a_change_is_served_at_once(tracker: Tracker) -> None:
    bad_macro = tracker.api("POST", "/landers", json={"name": "L", "url": "https://l.example/?x={payout}"})
    not_http = tracker.api("POST", "/landers", json={"name": "L", "url": "javascript:alert(1)"})
    assert bad_macro.status_code == 422
    assert "{payout}" in bad_macro.json()["detail"]
    assert not_http.status_code == 422

    campaign = tracker.campaign()
    no_lander = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"lander_id": 999_999})
    rule = {"when": {"is_bot": False}, "offers": [{"offer_id": campaign["offer_id"]}], "lander_id": 999_998}
    no_rule_lander = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"routing": {"rules": [rule]}})
    assert no_lander.status_code == 422
    assert no_rule_lander.status_code == 422
    assert "999998" in no_rule_lander.json()["detail"]

    lander = _lander(tracker)
    assert tracker.api("GET", f"/landers/{lander['id']}").json()["url"] == LANDER_URL
    assert lander["id"] in [item["id"] for item in tracker.api("GET", "/landers?limit=1000").json()["items"]]
    _with_lander(tracker, lander["id"])
    moved = tracker.api(
        "PATCH", f"/landers/{lander['id']}", json={"url": "https://moved.example/?cid={click_id}"}
    )
    assert moved.status_code == 200, moved.text
    assert _visit(tracker, campaign["key"])[0] == "merchant.example"  # this campaign has no lander
    other = _with_lander(tracker, lander["id"])
    assert _visit(tracker, other["key"])[0] == "moved.example"
    assert tracker.api("GET", "/landers/999999").status_code == 404

    cleared = tracker.api("PATCH", f"/campaigns/{other['id']}", json={"lander_id": None})
    assert cleared.json()["lander_id"] is None
    assert _visit(tracker, other["key"])[0] == "offer.example"


def test_reports_count_lander_views_click_throughs_and_ctr_per_lander(tracker: Tracker) -> None:
    lander = _lander(tracker)
    campaign = _with_lander(tracker, lander["id"])
    clicks = [tracker.http.get(f"/c/{campaign['key']}", params={"sub1": str(n)}) for n in range(3)]
    click_ids = [parse_qs(urlsplit(r.headers["location"]).query)["cid"][0] for r in clicks]
    for click_id in (click_ids[0], click_ids[1], click_ids[1]):  # one visitor clicks through twice
        _continue(tracker, click_id=click_id)

    params = {"group_by": "lander", "campaign_id": str(campaign["id"])}
    body = _report_when(tracker, params, lambda b: b["totals"].get("lander_clicks") == 2)

    [row] = body["rows"]
    assert (row["lander"], row["lander_name"]) == (lander["id"], "Lander")
    assert (row["clicks"], row["lander_views"], row["lander_clicks"]) == (3, 3, 2)
    assert row["lander_ctr"] == "66.6667"
    filtered = tracker.api("GET", "/reports", params={**params, "lander_id": str(lander["id"] + 1)})
    assert filtered.json()["totals"]["clicks"] == 0


def test_direct_tracking_on_a_campaign_with_a_lander_records_no_lander_view(tracker: Tracker) -> None:
    # The visitor is already on the merchant's page: no lander was shown.
    campaign = _with_lander(tracker, _lander(tracker)["id"])
    response = tracker.http.get(f"/d/{campaign['key']}", params={"sub1": "ad"})
    assert response.status_code == 200, response.text
    click = tracker.api("GET", f"/clicks/{response.json()['click_id']}").json()
    assert click["lander_id"] is None


def test_the_openapi_spec_describes_landers_caps_and_lander_links(tracker: Tracker) -> None:
    spec = tracker.http.get("/api/openapi.json").json()
    assert {"/api/v1/landers", "/api/v1/landers/{lander_id}"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert {"daily_cap", "cap_timezone", "fallback_offer_id"} <= set(schemas["OfferInput"]["properties"])
    assert "lander_id" in schemas["CampaignInput"]["properties"]
    assert "lander_id" in schemas["Rule"]["properties"]
