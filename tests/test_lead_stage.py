"""The lead stage through a real server (SQLite and PostgreSQL): the snippet, the image and JS pixels
(same pipeline as the postback, marked as pixel conversions), and direct tracking."""

from urllib.parse import parse_qs, urlsplit

from tests import corpora
from tests.support import Tracker, codec

GIF_MAGIC = b"GIF89a"


def _conversions(tracker: Tracker, click_id: str) -> list[dict[str, object]]:
    response = tracker.api("GET", "/conversions", params={"click_id": click_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def _log(tracker: Tracker, click_id: str) -> list[dict[str, object]]:
    response = tracker.api("GET", "/postbacks", params={"click_id": click_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def test_the_snippet_is_served_to_any_site_and_cached(tracker: Tracker) -> None:
    response = tracker.http.get("/t.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "max-age" in response.headers["cache-control"]
    assert "window.clicktrail" in response.text
    assert "/pixel?" in response.text


def test_an_image_pixel_records_a_pixel_conversion_once(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])

    first = tracker.http.get("/pixel.gif", params={"click_id": click_id, "event": "lead", "txid": "L-1"})
    again = tracker.http.get("/pixel.gif", params={"click_id": click_id, "event": "lead", "txid": "L-1"})

    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"] == "image/gif"
    assert first.content.startswith(GIF_MAGIC)
    assert (first.headers["x-clicktrail-result"], again.headers["x-clicktrail-result"]) == (
        "accepted",
        "duplicate",
    )
    [conversion] = _conversions(tracker, click_id)
    assert (conversion["event"], conversion["via"]) == ("lead", "pixel")
    assert [entry["via"] for entry in _log(tracker, click_id)] == ["pixel", "pixel"]


def test_an_image_pixel_without_a_click_id_finds_the_click_by_the_trackers_cookie(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])  # the redirect set the cookie in this client

    response = tracker.http.get("/pixel.gif", params={"event": "lead"})

    assert response.headers["x-clicktrail-result"] == "accepted"
    assert [c["via"] for c in _conversions(tracker, click_id)] == ["pixel"]


def test_a_pixel_that_names_no_click_is_logged_as_malformed_and_still_answers_a_gif(tracker: Tracker) -> None:
    tracker.http.cookies.clear()
    response = tracker.http.get("/pixel.gif", params={"event": "lead"})
    assert response.status_code == 200
    assert response.content.startswith(GIF_MAGIC)
    assert response.headers["x-clicktrail-result"] == "malformed"


def test_the_js_pixel_answers_json_to_any_site_with_the_postback_decisions(tracker: Tracker) -> None:
    campaign = tracker.campaign(postback_token="s3cret-token")
    click_id = tracker.click(campaign["key"])

    refused = tracker.http.get("/pixel", params={"click_id": click_id, "event": "lead", "token": "wrong"})
    accepted = tracker.http.post(
        "/pixel", data={"click_id": click_id, "event": "lead", "token": "s3cret-token", "payout": "2.50"}
    )
    preflight = tracker.http.options("/pixel")

    assert refused.status_code == 403
    assert refused.json()["decision"] == "bad_token"
    assert accepted.status_code == 200
    assert accepted.json()["result"] == "accepted"
    assert accepted.headers["access-control-allow-origin"] == "*"
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    [conversion] = _conversions(tracker, click_id)
    assert (conversion["via"], conversion["revenue"]) == ("pixel", "2.50")


def test_a_postback_is_still_marked_as_a_postback(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    assert tracker.postback(click_id=click_id, event="sale", txid="S-1").status_code == 200
    assert [c["via"] for c in _conversions(tracker, click_id)] == ["postback"]


def test_direct_tracking_registers_an_enriched_click_with_one_request(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    phone = next(ua for ua, kind in corpora.real_browsers() if kind == "mobile")

    response = tracker.http.get(
        f"/d/{campaign['key']}",
        params={"sub1": "ad-7", "gclid": "Cj0KCQ-abc", "ref": "https://www.google.com/"},
        headers={"user-agent": phone, "origin": "https://merchant.example"},
    )

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    click_id = response.json()["click_id"]
    assert codec().verify(click_id) == click_id
    click = tracker.api("GET", f"/clicks/{click_id}").json()
    assert click["campaign_id"] == campaign["id"]
    assert (click["sub1"], click["external_id"], click["referrer"]) == (
        "ad-7",
        "Cj0KCQ-abc",
        "https://www.google.com/",
    )
    assert (click["device_type"], click["is_bot"], click["is_unique"]) == ("mobile", False, True)
    assert tracker.postback(click_id=click_id, event="lead").json()["result"] == "accepted"


def test_direct_tracking_of_an_unknown_campaign_is_a_json_404(tracker: Tracker) -> None:
    response = tracker.http.get("/d/no-such-key")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_the_tracking_link_leaves_the_trackers_cookie_for_pixels(tracker: Tracker) -> None:
    response = tracker.http.get(f"/c/{tracker.campaign()['key']}")
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["cid"][0]
    click_cookie, visitor_cookie = response.headers.get_list("set-cookie")
    assert click_cookie.startswith(f"ct_cid={click_id};")
    assert "HttpOnly" in click_cookie
    visitor_id = tracker.api("GET", f"/clicks/{click_id}").json()["visitor_id"]
    assert visitor_cookie.startswith(f"ct_vid={visitor_id};")
