"""The admin API: bearer auth, validated offers, sources and campaigns, changes served at once."""

import httpx

from tests.support import Tracker


def test_the_api_refuses_requests_without_the_admin_token(tracker: Tracker) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        response = tracker.http.get("/api/v1/offers", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    assert tracker.http.post("/api/v1/offers", json={"name": "x"}).status_code == 401


def test_health_needs_no_token(tracker: Tracker) -> None:
    assert tracker.http.get("/health").json() == {"status": "ok"}


def test_an_offer_is_created_read_listed_and_patched(tracker: Tracker) -> None:
    offer = tracker.create(
        "offers",
        name="VPN",
        url="https://m.example/?c={click_id}",
        revenue=12.5,
        payout="7.25",
        currency="usd",
        attribution_window_days=7,
    )
    assert offer["revenue"] == "12.50"
    assert offer["payout"] == "7.25"
    assert offer["currency"] == "USD"
    assert tracker.api("GET", f"/offers/{offer['id']}").json() == offer
    patched = tracker.api("PATCH", f"/offers/{offer['id']}", json={"payout": "8"}).json()
    assert patched["payout"] == "8.00"
    assert patched["name"] == "VPN"
    listed = tracker.api("GET", "/offers", params={"limit": 1000}).json()["items"]
    assert any(item["id"] == offer["id"] and item["payout"] == "8.00" for item in listed)


def test_bad_offers_are_refused_with_the_field_named(tracker: Tracker) -> None:
    cases = [
        ({"name": "x", "url": "https://m.example/?c={clickid}"}, "url", "clickid"),
        ({"name": "x", "url": "javascript:alert(1)"}, "url", "http"),
        ({"name": "x", "url": "https://m.example/", "revenue": "1.2.3"}, "revenue", "decimal"),
        ({"name": "x", "url": "https://m.example/", "payout": -1}, "payout", "negative"),
        ({"name": "x", "url": "https://m.example/", "currency": "dollars"}, "currency", "ISO"),
        (
            {"name": "x", "url": "https://m.example/", "attribution_window_days": 0},
            "attribution_window_days",
            "",
        ),
        ({"url": "https://m.example/"}, "name", ""),
        ({"name": "x", "url": "https://m.example/", "surprise": 1}, "surprise", ""),
    ]
    for body, field, words in cases:
        response = tracker.api("POST", "/offers", json=body)
        assert response.status_code == 422, body
        payload = response.json()
        assert payload["error"] == "validation_error"
        assert field in payload["fields"], payload
        assert words in payload["fields"][field]


def test_a_body_that_is_not_json_is_a_422_not_a_crash(tracker: Tracker) -> None:
    response = tracker.api("POST", "/offers", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


def test_a_campaign_needs_an_existing_source_and_offer(tracker: Tracker) -> None:
    response = tracker.api("POST", "/campaigns", json={"name": "c", "source_id": 999999, "offer_id": 999999})
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"source_id", "offer_id"}


def test_a_campaign_answers_its_tracking_link(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    assert campaign["tracking_url"] == f"{tracker.server.base_url}/c/{campaign['key']}"
    assert campaign["postback_url"].startswith(f"{tracker.server.base_url}/postback?click_id={{click_id}}")
    assert httpx.get(campaign["tracking_url"]).status_code == 302


def test_a_changed_offer_url_is_served_at_once(tracker: Tracker) -> None:
    campaign = tracker.campaign(url="https://old.example/?c={click_id}")
    tracker.api("PATCH", f"/offers/{campaign['offer_id']}", json={"url": "https://new.example/?c={click_id}"})
    location = tracker.http.get(f"/c/{campaign['key']}").headers["location"]
    assert location.startswith("https://new.example/")


def test_a_campaign_can_be_moved_to_another_offer(tracker: Tracker) -> None:
    campaign = tracker.campaign(url="https://first.example/?c={click_id}")
    other = tracker.create("offers", name="Other", url="https://second.example/?c={click_id}")
    moved = tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"offer_id": other["id"]})
    assert moved.json()["offer_id"] == other["id"]
    assert tracker.http.get(f"/c/{campaign['key']}").headers["location"].startswith("https://second.example/")
    assert tracker.api("PATCH", f"/campaigns/{campaign['id']}", json={"offer_id": None}).status_code == 422


def test_unknown_ids_are_404s(tracker: Tracker) -> None:
    for path in ("/offers/999999", "/sources/999999", "/campaigns/999999"):
        response = tracker.api("GET", path)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    assert tracker.api("PATCH", "/offers/999999", json={"name": "x"}).status_code == 404


def test_a_click_is_looked_up_by_its_id(tracker: Tracker) -> None:
    assert tracker.api("GET", "/clicks/not-a-click").status_code == 422
    from clicktrail.types import utc_now
    from tests.support import codec

    assert tracker.api("GET", f"/clicks/{codec().mint(utc_now())}").status_code == 404


def test_sources_take_a_postback_template_with_known_macros_only(tracker: Tracker) -> None:
    good = tracker.create(
        "sources", name="net", postback_url="https://net.example/pb?c={external_id}&p={payout}"
    )
    assert good["postback_url"] == "https://net.example/pb?c={external_id}&p={payout}"
    bad = tracker.api("POST", "/sources", json={"name": "net", "postback_url": "https://n.example/?x={nope}"})
    assert bad.status_code == 422
    assert "{nope}" in bad.json()["fields"]["postback_url"]


def test_lists_page_with_a_cursor(tracker: Tracker) -> None:
    for n in range(3):
        tracker.create("sources", name=f"page-{n}")
    first = tracker.api("GET", "/sources", params={"limit": 2}).json()
    second = tracker.api("GET", "/sources", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    first_ids = [s["id"] for s in first["items"]]
    second_ids = [s["id"] for s in second["items"]]
    assert first_ids == sorted(first_ids)
    assert not set(first_ids) & set(second_ids)
    assert tracker.api("GET", "/sources", params={"cursor": "abc"}).status_code == 422


def test_the_openapi_spec_is_served(tracker: Tracker) -> None:
    spec = tracker.http.get("/api/openapi.json").json()
    assert "/api/v1/offers" in spec["paths"]


def test_ids_too_large_for_the_database_are_refused_not_crashed_on(tracker: Tracker) -> None:
    huge = 2**70
    assert tracker.api("GET", f"/offers/{huge}").status_code == 422
    created = tracker.api("POST", "/campaigns", json={"name": "c", "source_id": huge, "offer_id": huge})
    assert created.status_code == 422
    assert tracker.api("GET", "/offers", params={"cursor": str(huge)}).status_code == 422
    assert tracker.api("GET", "/postbacks", params={"cursor": str(huge)}).status_code == 422
    assert tracker.api("GET", "/clicks", params={"campaign_id": str(huge)}).status_code == 400


def test_a_method_the_route_lacks_is_a_405_with_an_allow_header(tracker: Tracker) -> None:
    response = tracker.api("DELETE", "/offers")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"]
