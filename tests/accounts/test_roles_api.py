"""Roles through the real API: what each role may read and write, and what a scoped role never sees."""

import time
from typing import Any

import pytest

from tests.accounts.support import account, make_key, make_user
from tests.support import Tracker


def _two_sources_with_traffic(tracker: Tracker) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """Two campaigns on two sources, a click and an approved sale on each."""
    mine = tracker.campaign(revenue="30.00", payout="12.00")
    theirs = tracker.campaign(revenue="50.00", payout="20.00")
    my_click = tracker.click(mine["key"], sub1="mine")
    their_click = tracker.click(theirs["key"], sub1="theirs")
    assert tracker.postback(click_id=my_click, event="sale", txid="m1").status_code == 200
    assert tracker.postback(click_id=their_click, event="sale", txid="t1").status_code == 200
    return mine, theirs, my_click, their_click


def test_an_affiliate_sees_only_its_source_and_never_revenue(tracker: Tracker) -> None:
    mine, theirs, my_click, their_click = _two_sources_with_traffic(tracker)
    affiliate = account(tracker, "affiliate", source_id=mine["source"]["id"])

    clicks = affiliate.api("GET", "/clicks", params={"limit": 1000}).json()["items"]
    assert {c["click_id"] for c in clicks} == {my_click}
    assert all("cost" not in c for c in clicks)
    # Asking for the other source by name changes nothing: the scope is added, never replaced.
    other = affiliate.api("GET", "/clicks", params={"source_id": theirs["source"]["id"]}).json()["items"]
    assert other == []
    assert affiliate.api("GET", f"/clicks/{their_click}").status_code == 404
    assert affiliate.api("GET", f"/clicks/{my_click}").json()["click_id"] == my_click

    conversions = affiliate.api("GET", "/conversions", params={"limit": 1000}).json()["items"]
    assert [c["click_id"] for c in conversions] == [my_click]
    assert conversions[0]["payout"] == "12.00"
    assert "revenue" not in conversions[0]
    assert "cost" not in conversions[0]
    assert all("revenue" not in change for change in conversions[0]["history"])

    campaigns = affiliate.api("GET", "/campaigns", params={"limit": 1000}).json()["items"]
    assert [c["id"] for c in campaigns] == [mine["id"]]
    assert campaigns[0]["tracking_url"].endswith(f"/c/{mine['key']}")
    assert "cost_value" not in campaigns[0]
    assert affiliate.api("GET", f"/campaigns/{theirs['id']}").status_code == 404
    sources = affiliate.api("GET", "/sources").json()["items"]
    assert [s["id"] for s in sources] == [mine["source"]["id"]]

    # Offers (revenue), the postback log (the merchant's amounts) and deliveries are not an affiliate's.
    for path in (
        "/offers",
        f"/offers/{mine['offer']['id']}",
        "/postbacks",
        "/deliveries",
        "/audit",
        "/users",
    ):
        response = affiliate.api("GET", path)
        assert response.status_code == 403, path
        assert response.json()["error"] == "forbidden"


def test_an_affiliate_report_covers_its_source_without_the_owners_money(tracker: Tracker) -> None:
    mine, _theirs, _, _ = _two_sources_with_traffic(tracker)
    affiliate = account(tracker, "affiliate", source_id=mine["source"]["id"])
    deadline = time.monotonic() + 15
    while True:
        body = affiliate.api("GET", "/reports", params={"group_by": "campaign"}).json()
        if body["totals"].get("conversions") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [row["campaign"] for row in body["rows"]] == [mine["id"]]
    assert body["totals"]["payout"] == "12.00"
    for hidden in ("revenue", "cost", "profit", "roi", "epc", "cpc"):
        assert hidden not in body["columns"]
        assert hidden not in body["totals"]
        assert all(hidden not in row for row in body["rows"])
    csv_text = affiliate.api("GET", "/reports", params={"group_by": "campaign", "format": "csv"}).text
    assert "revenue" not in csv_text.splitlines()[0]
    assert "30.00" not in csv_text
    refused = affiliate.api("GET", "/reports", params={"group_by": "campaign", "sort": "-profit"})
    assert refused.status_code == 403


def test_an_advertiser_sees_only_its_offers_conversions(tracker: Tracker) -> None:
    mine, theirs, my_click, _their_click = _two_sources_with_traffic(tracker)
    advertiser = account(tracker, "advertiser", offer_ids=[mine["offer"]["id"]])
    conversions = advertiser.api("GET", "/conversions", params={"limit": 1000}).json()["items"]
    assert [c["click_id"] for c in conversions] == [my_click]
    assert conversions[0]["revenue"] == "30.00"
    for hidden in ("payout", "cost", "source_id"):
        assert hidden not in conversions[0]
    postbacks = advertiser.api("GET", "/postbacks", params={"limit": 1000}).json()["items"]
    assert {p["click_id"] for p in postbacks} == {my_click}
    offers = advertiser.api("GET", "/offers").json()["items"]
    assert [o["id"] for o in offers] == [mine["offer"]["id"]]
    assert "payout" not in offers[0]
    assert advertiser.api("GET", f"/offers/{theirs['offer']['id']}").status_code == 404
    for path in ("/clicks", "/campaigns", "/sources", f"/clicks/{my_click}"):
        assert advertiser.api("GET", path).status_code == 403, path
    by_source = advertiser.api("GET", "/reports", params={"group_by": "source"})
    assert by_source.status_code == 403


def test_an_analyst_reads_everything_and_changes_nothing(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    analyst = account(tracker, "analyst")
    assert analyst.api("GET", f"/offers/{campaign['offer']['id']}").json()["revenue"] == "10.00"
    assert analyst.api("GET", "/clicks").status_code == 200
    writes = [
        ("POST", "/offers", {"name": "x", "url": "https://m.example/"}),
        ("PATCH", f"/offers/{campaign['offer']['id']}", {"name": "renamed"}),
        ("POST", "/sources", {"name": "x"}),
        ("PATCH", f"/campaigns/{campaign['id']}", {"name": "renamed"}),
        ("POST", f"/campaigns/{campaign['id']}/cost",
         {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z", "amount": "1"}),
        ("POST", f"/sources/{campaign['source']['id']}/resume", None),
    ]  # fmt: skip
    for method, path, body in writes:
        response = analyst.api(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"] == "forbidden"
    assert tracker.api("GET", f"/offers/{campaign['offer']['id']}").json()["name"] == "Offer"


def test_a_manager_configures_but_cannot_manage_users_or_keys(tracker: Tracker) -> None:
    manager = account(tracker, "manager")
    offer = manager.api("POST", "/offers", json={"name": "By manager", "url": "https://m.example/"})
    assert offer.status_code == 201
    assert manager.api("GET", "/audit", params={"object_type": "offer"}).status_code == 200
    someone = make_user(tracker, "analyst")
    refused = [
        manager.api("GET", "/users"),
        manager.api(
            "POST", "/users", json={"username": "x@example.com", "password": "p" * 12, "role": "admin"}
        ),
        manager.api("PATCH", f"/users/{someone['id']}", json={"role": "admin"}),
        manager.api("GET", "/keys"),
        manager.api("POST", "/keys", json={"user_id": manager.user["id"], "name": "more"}),
        manager.api("DELETE", "/keys/1"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert tracker.api("GET", f"/users/{someone['id']}").json()["role"] == "analyst"


@pytest.mark.parametrize("how", ["disabled user", "revoked key", "expired key", "unknown key"])
def test_a_key_stops_working_when_revoked_expired_or_its_user_disabled(tracker: Tracker, how: str) -> None:
    analyst = account(tracker, "analyst")
    assert analyst.api("GET", "/me").json()["role"] == "analyst"
    if how == "disabled user":
        response = tracker.api("PATCH", f"/users/{analyst.user['id']}", json={"disabled": True})
        assert response.json()["disabled"] is True
    elif how == "revoked key":
        key_id = analyst.api("GET", "/me").json()["key_id"]
        assert tracker.api("DELETE", f"/keys/{key_id}").json()["revoked_at"] is not None
    elif how == "expired key":
        expiry = time.time() + 6  # room for a slow machine to use the key once before it expires
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        analyst.key = make_key(tracker, analyst.user["id"], expires_at=soon)
        assert analyst.api("GET", "/me").status_code == 200
        time.sleep(max(0.0, expiry + 1.5 - time.time()))
    else:
        analyst.key = analyst.key[:-4] + "AAAA"
    response = analyst.api("GET", "/me")
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"


def test_a_key_is_shown_once_stored_hashed_and_records_its_last_use(tracker: Tracker) -> None:
    user = make_user(tracker, "analyst")
    created = tracker.api("POST", "/keys", json={"user_id": user["id"], "name": "ci"}).json()
    assert created["secret"].startswith("ctk_")
    assert created["last_used_at"] is None
    listed = tracker.api("GET", "/keys", params={"user_id": user["id"]}).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert created["secret"].startswith(listed[0]["prefix"])
    headers = {"Authorization": f"Bearer {created['secret']}"}
    for _ in range(3):
        assert tracker.http.get("/api/v1/me", headers=headers).status_code == 200
    used = tracker.api("GET", "/keys", params={"user_id": user["id"]}).json()["items"][0]
    assert used["last_used_at"] is not None


def test_users_are_validated_and_their_bindings_checked(tracker: Tracker) -> None:
    cases = [
        ({"username": "a@example.com", "password": "short", "role": "analyst"}, "password"),
        ({"username": "has space", "password": "p" * 12, "role": "analyst"}, "username"),
        ({"username": "b@example.com", "password": "p" * 12, "role": "owner"}, "role"),
        ({"username": "c@example.com", "password": "p" * 12, "role": "affiliate"}, "source_id"),
        ({"username": "d@example.com", "password": "p" * 12, "role": "affiliate", "source_id": 999999},
         "source_id"),
        ({"username": "e@example.com", "password": "p" * 12, "role": "advertiser"}, "offer_ids"),
        ({"username": "f@example.com", "password": "p" * 12, "role": "analyst", "source_id": 1}, "source_id"),
    ]  # fmt: skip
    for body, field in cases:
        response = tracker.api("POST", "/users", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["fields"], response.json()
    user = make_user(tracker, "analyst")
    twin = tracker.api(
        "POST", "/users", json={"username": user["username"].upper(), "password": "p" * 12, "role": "analyst"}
    )
    assert twin.status_code == 409
    assert "password" not in user
    assert "password_hash" not in user


def test_the_admin_token_still_works_as_the_admin(tracker: Tracker) -> None:
    me = tracker.api("GET", "/me").json()
    assert me == {
        "role": "admin", "name": "admin token", "user_id": None, "key_id": None, "source_id": None,
        "offer_ids": [], "hidden_fields": [],
    }  # fmt: skip
    assert tracker.api("GET", "/users").status_code == 200


def test_every_route_states_its_required_role(tracker: Tracker) -> None:
    spec = tracker.http.get("/api/openapi.json").json()
    roles = {"admin", "manager", "analyst", "affiliate", "advertiser"}
    operations = [
        (path, method, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 30
    for path, method, operation in operations:
        assert operation.get("x-required-role") in {"admin", "manager", "analyst"}, (path, method)
        assert set(operation["x-allowed-roles"]) <= roles
        assert operation["x-required-role"] in operation["x-allowed-roles"]
        assert operation["description"].startswith("**Required role:**"), (path, method)
    users = spec["paths"]["/api/v1/users"]["post"]
    assert users["x-allowed-roles"] == ["admin"]
    assert set(spec["paths"]["/api/v1/conversions"]["get"]["x-allowed-roles"]) == roles - set()


def test_odd_key_and_list_inputs_are_refused_not_crashed(tracker: Tracker) -> None:
    user = make_user(tracker, "analyst")
    cases = [
        {"user_id": user["id"], "name": "k", "expires_at": "9999-12-31T23:00:00-05:00"},
        {"user_id": user["id"], "name": "k", "expires_at": "2020-01-01T00:00:00Z"},
        {"user_id": user["id"], "name": "k", "expires_at": "2999-01-01T00:00:00"},
        {"user_id": 2_000_000_000, "name": "k"},
        {"user_id": user["id"], "name": ""},
    ]
    for body in cases:
        response = tracker.api("POST", "/keys", json=body)
        assert response.status_code == 422, (body, response.text)
    assert tracker.api("GET", "/users", params={"cursor": "9999999999"}).status_code == 422
    assert tracker.api("GET", "/keys", params={"cursor": "9999999999"}).status_code == 422
