"""The tracking core end to end, through a real server, on SQLite and on PostgreSQL:
click → click ID → redirect → postback → attributed conversion."""

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from tests.support import Tracker


def test_a_click_is_recorded_and_redirected_to_the_offer_with_a_fresh_click_id(tracker: Tracker) -> None:
    campaign = tracker.campaign(
        url="https://merchant.example/land?cid={click_id}&s1={sub1}&ext={external_id}"
    )

    response = tracker.http.get(f"/c/{campaign['key']}", params={"sub1": "banner-7", "external_id": "net-42"})

    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "merchant.example", "/land")
    query = parse_qs(location.query)
    assert query["s1"] == ["banner-7"]
    assert query["ext"] == ["net-42"]
    click = tracker.api("GET", f"/clicks/{query['cid'][0]}").json()
    assert click["campaign_id"] == campaign["id"]
    assert click["offer_id"] == campaign["offer_id"]
    assert click["source_id"] == campaign["source_id"]
    assert click["sub1"] == "banner-7"
    assert click["external_id"] == "net-42"
    assert click["ip"] == "127.0.0.1"
    assert click["created_at"].endswith("Z") or click["created_at"].endswith("+00:00")


def test_every_click_gets_its_own_click_id(tracker: Tracker) -> None:
    key = tracker.campaign()["key"]
    ids = [tracker.click(key) for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(len(click_id) == 32 and click_id.isalnum() for click_id in ids)


def test_all_click_macros_are_filled(tracker: Tracker) -> None:
    subs = "&".join(f"s{n}={{sub{n}}}" for n in range(1, 11))
    campaign = tracker.campaign(
        url="https://m.example/?cid={click_id}&c={campaign_id}&o={offer_id}&src={source_id}&e={external_id}&"
        + subs
    )
    params = {f"sub{n}": f"value-{n}" for n in range(1, 11)} | {"external_id": "x"}
    location = tracker.http.get(f"/c/{campaign['key']}", params=params).headers["location"]
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert query["c"] == [str(campaign["id"])]
    assert query["o"] == [str(campaign["offer_id"])]
    assert query["src"] == [str(campaign["source_id"])]
    assert query["e"] == ["x"]
    assert all(query[f"s{n}"] == [f"value-{n}"] for n in range(1, 11))


def test_missing_sub_ids_fill_as_empty(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    location = tracker.http.get(f"/c/{campaign['key']}").headers["location"]
    assert "&s1=" in location
    assert location.endswith("s1=")


def test_visitor_values_cannot_add_parameters_or_change_the_host(tracker: Tracker) -> None:
    campaign = tracker.campaign(url="https://merchant.example/land?s1={sub1}&cid={click_id}")
    hostile = "x&cid=forged#@evil.example/\r\nSet-Cookie: a=b"
    response = tracker.http.get(f"/c/{campaign['key']}", params={"sub1": hostile})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.netloc == "merchant.example"
    assert location.fragment == ""
    query = parse_qs(location.query)
    assert len(query["cid"]) == 1
    assert query["cid"][0] != "forged"
    # The only cookies are the tracker's own (last click, for pixels; visitor, for uniqueness).
    cookies = response.headers.get_list("set-cookie")
    assert [cookie.split("=", 1)[0] for cookie in cookies] == ["ct_cid", "ct_vid"]
    assert all("a=b" not in cookie for cookie in cookies)


def test_head_answers_like_get_and_records_the_click(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    response = tracker.http.head(f"/c/{campaign['key']}")
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["cid"][0]
    assert tracker.api("GET", f"/clicks/{click_id}").status_code == 200


def test_an_unknown_tracking_key_is_a_404_page_never_a_redirect(tracker: Tracker) -> None:
    for key in ("doesnotexist", "", "x" * 5000, "%00", "..%2Fapi%2Fv1%2Foffers"):
        response = tracker.http.get(f"/c/{key}")
        assert response.status_code == 404, key
        assert "location" not in response.headers
        assert "text/html" in response.headers["content-type"]


def test_oversized_and_malformed_click_values_still_redirect(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    params = {"sub1": "a" * 5000, "sub2": "\x00nul", "cost": "not-a-number", "sub3": "caf\u00e9 \u2603"}
    response = tracker.http.get(f"/c/{campaign['key']}", params=params)
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["cid"][0]
    click = tracker.api("GET", f"/clicks/{click_id}").json()
    assert click["sub1"] == "a" * 255
    assert click["sub2"] == "nul"
    assert click["sub3"] == "caf\u00e9 \u2603"
    assert click["cost"] is None
    broken = tracker.http.get(f"/c/{campaign['key']}?sub1=%ZZ%&sub2=%C3%28")
    assert broken.status_code == 302


def test_the_click_cost_is_stored_exactly(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    click_id = tracker.click(campaign["key"], cost="0.0125")
    assert tracker.api("GET", f"/clicks/{click_id}").json()["cost"] == "0.0125"


def test_a_postback_records_a_conversion_attributed_to_the_click(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    click_id = tracker.click(campaign["key"], sub1="placement-3", external_id="ext-9")

    response = tracker.postback(
        click_id=click_id, event="sale", payout="49.90", currency="eur", txid="order-1"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["result"] == "accepted"
    conversions = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert len(conversions) == 1
    conversion = conversions[0]
    assert conversion["conversion_id"] == body["conversion_id"]
    assert conversion["event"] == "sale"
    assert conversion["txid"] == "order-1"
    assert conversion["status"] == "approved"
    assert conversion["revenue"] == "49.90"
    assert conversion["currency"] == "EUR"
    assert conversion["payout"] == "4.00"  # the affiliate's payout comes from the offer
    assert conversion["campaign_id"] == campaign["id"]
    assert conversion["offer_id"] == campaign["offer_id"]
    assert conversion["source_id"] == campaign["source_id"]
    assert conversion["sub1"] == "placement-3"
    assert conversion["external_id"] == "ext-9"
    assert [h["new_status"] for h in conversion["history"]] == ["approved"]


def test_postback_defaults_come_from_the_offer(tracker: Tracker) -> None:
    campaign = tracker.campaign(revenue="12.5", currency="GBP")
    click_id = tracker.click(campaign["key"])
    assert tracker.postback(click_id=click_id).json()["result"] == "accepted"
    conversion = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"][0]
    assert conversion["event"] == "conversion"
    assert conversion["revenue"] == "12.50"
    assert conversion["currency"] == "GBP"
    assert conversion["txid"] == ""


def test_money_is_exact_end_to_end(tracker: Tracker) -> None:
    campaign = tracker.campaign(revenue="0.1", payout="0.2")
    click_id = tracker.click(campaign["key"])
    tracker.postback(click_id=click_id, payout="1234567.891234", txid="a")
    tracker.postback(click_id=click_id, payout="0.000001", txid="b")
    items = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    revenues = sorted(Decimal(item["revenue"]) for item in items)
    assert revenues == [Decimal("0.000001"), Decimal("1234567.891234")]
    assert tracker.api("GET", f"/offers/{campaign['offer_id']}").json()["payout"] == "0.20"


def test_the_same_click_event_and_txid_counts_once(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    first = tracker.postback(click_id=click_id, event="sale", txid="t-1", payout="5")
    again = tracker.postback(click_id=click_id, event="sale", txid="t-1", payout="5")
    assert first.json()["result"] == "accepted"
    assert again.status_code == 200
    assert again.json() == {"result": "duplicate", "conversion_id": first.json()["conversion_id"]}
    other_txid = tracker.postback(click_id=click_id, event="sale", txid="t-2", payout="5")
    other_event = tracker.postback(click_id=click_id, event="lead", txid="t-1")
    assert other_txid.json()["result"] == "accepted"
    assert other_event.json()["result"] == "accepted"
    items = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert len(items) == 3


def test_a_status_change_is_history_not_a_second_conversion(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    pending = tracker.postback(click_id=click_id, event="sale", txid="o-9", status="pending", payout="20")
    approved = tracker.postback(click_id=click_id, event="sale", txid="o-9", status="approved")
    chargeback = tracker.postback(click_id=click_id, event="sale", txid="o-9", status="chargeback")
    assert pending.json()["result"] == "accepted"
    assert approved.json() == {"result": "updated", "conversion_id": pending.json()["conversion_id"]}
    assert chargeback.json()["result"] == "updated"
    items = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert len(items) == 1
    assert items[0]["status"] == "chargeback"
    assert [(h["old_status"], h["new_status"]) for h in items[0]["history"]] == [
        (None, "pending"),
        ("pending", "approved"),
        ("approved", "chargeback"),
    ]


def test_a_forged_or_mangled_click_id_is_refused_before_any_lookup(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    flipped = click_id[:-1] + ("0" if click_id[-1] != "0" else "1")
    for bad in (flipped, click_id[:-1], click_id + "0", "not-a-click-id", "' OR 1=1 --"):
        response = tracker.postback(click_id=bad, txid="x")
        assert response.status_code == 400, bad
        assert response.json()["error"] in ("bad_click_id",)
    assert tracker.postback(txid="x").json()["error"] == "missing_click_id"


def test_an_uppercased_click_id_is_still_recognised(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    assert tracker.postback(click_id=click_id.upper()).json()["result"] == "accepted"


def test_bad_amount_status_or_currency_is_a_400_that_records_nothing(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    cases = [
        ({"payout": "abc"}, "bad_amount"),
        ({"payout": "-5"}, "bad_amount"),
        ({"payout": "NaN"}, "bad_amount"),
        ({"payout": "1.1234567"}, "bad_amount"),
        ({"payout": "1e30"}, "bad_amount"),
        ({"status": "maybe"}, "bad_status"),
        ({"currency": "EURO"}, "bad_currency"),
        ({"event": "<script>"}, "bad_event"),
        ({"txid": "t" * 300}, "bad_txid"),
    ]
    for params, error in cases:
        response = tracker.postback(click_id=click_id, **params)
        assert response.status_code == 400, params
        assert response.json()["error"] == error
        assert response.json()["detail"]
    assert tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"] == []


def test_an_unknown_click_is_a_404(tracker: Tracker) -> None:
    from clicktrail.types import utc_now
    from tests.support import codec

    never_clicked = codec().mint(utc_now())
    response = tracker.postback(click_id=never_clicked)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_click"


def test_a_wrong_token_is_a_403_when_the_offer_has_one(tracker: Tracker) -> None:
    campaign = tracker.campaign(postback_token="s3cret-token")
    click_id = tracker.click(campaign["key"])
    assert tracker.postback(click_id=click_id).status_code == 403
    wrong = tracker.postback(click_id=click_id, token="guess-guess")
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "bad_token"
    assert tracker.postback(click_id=click_id, token="s3cret-token").json()["result"] == "accepted"


def test_a_post_postback_with_a_form_or_json_body_works(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    form = tracker.http.post("/postback", data={"click_id": click_id, "event": "lead", "txid": "f"})
    as_json = tracker.http.post("/postback", json={"click_id": click_id, "event": "sale", "payout": 9.99})
    assert form.json()["result"] == "accepted"
    assert as_json.json()["result"] == "accepted"
    sale = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert {item["event"]: item["revenue"] for item in sale}["sale"] == "9.99"
    unreadable = tracker.http.post("/postback", content=b"[1,2", headers={"content-type": "application/json"})
    assert unreadable.status_code == 400
    assert unreadable.json()["error"] == "bad_body"


def test_an_oversized_postback_body_is_a_413(tracker: Tracker) -> None:
    response = tracker.http.post("/postback", content=b"click_id=" + b"a" * 100_000)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert tracker.http.get("/health").status_code == 200


def test_every_postback_is_logged_with_its_decision(tracker: Tracker) -> None:
    campaign = tracker.campaign(postback_token="log-test-token")
    click_id = tracker.click(campaign["key"])
    tracker.postback(click_id=click_id, txid="L1", token="log-test-token")
    tracker.postback(click_id=click_id, txid="L1", token="log-test-token")
    tracker.postback(click_id=click_id, txid="L1", token="log-test-token", status="rejected")
    tracker.postback(click_id=click_id, txid="L2", token="nope-nope")
    tracker.postback(click_id=click_id, txid="L3", token="log-test-token", payout="x")

    entries = tracker.api("GET", "/postbacks", params={"click_id": click_id}).json()["items"]

    assert [entry["decision"] for entry in entries] == [
        "malformed",
        "bad_token",
        "updated",
        "duplicate",
        "accepted",
    ]
    assert entries[0]["error"] == "bad_amount"
    assert all("log-test-token" not in entry["query"] for entry in entries)
    assert entries[-1]["conversion_id"] == entries[-2]["conversion_id"] is not None
    only_dupes = tracker.api(
        "GET", "/postbacks", params={"click_id": click_id, "decision": "duplicate"}
    ).json()
    assert [entry["txid"] for entry in only_dupes["items"]] == ["L1"]


def test_the_postback_log_pages_newest_first(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    for n in range(5):
        tracker.postback(click_id=click_id, txid=f"p{n}")
    first = tracker.api("GET", "/postbacks", params={"click_id": click_id, "limit": 2}).json()
    second = tracker.api(
        "GET", "/postbacks", params={"click_id": click_id, "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [e["txid"] for e in first["items"] + second["items"]] == ["p4", "p3", "p2", "p1"]


def test_conversions_filter_by_campaign_and_time_and_page(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    other = tracker.campaign()
    for n in range(3):
        tracker.postback(click_id=tracker.click(campaign["key"]), txid=f"c{n}")
    tracker.postback(click_id=tracker.click(other["key"]), txid="other")

    page = tracker.api("GET", "/conversions", params={"campaign_id": campaign["id"], "limit": 2}).json()
    rest = tracker.api(
        "GET", "/conversions", params={"campaign_id": campaign["id"], "cursor": page["next_cursor"]}
    ).json()
    assert [c["txid"] for c in page["items"] + rest["items"]] == ["c2", "c1", "c0"]
    assert rest["next_cursor"] is None
    future = tracker.api("GET", "/conversions", params={"campaign_id": campaign["id"], "from": "2999-01-01"})
    assert future.json()["items"] == []
    today = tracker.api("GET", "/conversions", params={"campaign_id": campaign["id"], "to": "2999-01-01"})
    assert len(today.json()["items"]) == 3
    bad = tracker.api("GET", "/conversions", params={"from": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"] == "validation_error"
